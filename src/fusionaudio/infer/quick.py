"""``quick_inference.py`` / ``fusionaudio quick``: answer a question about audio files, printed or as JSON.

Inputs are checked by their headers before the model loads; clips are decoded by loader processes while
the previous batch generates, through :mod:`fusionaudio.infer.answerers` and each family's one generation
core. The exit code follows :mod:`fusionaudio.commands` (1 when any input failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fusionaudio.commands import HelpFormatter, run_command
from fusionaudio.loading.quantize import QUANTIZE_CHOICES, QUANTIZE_HELP


def quick_inference_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quick_inference.py", formatter_class=HelpFormatter,
        description="Caption audio or answer questions about it with a FusionAudio/GAMA (or AudSemThinker) model. "
                    "FUSIONAUDIO_DEBUG=1 shows tracebacks.",
    )
    p.add_argument("--base_model", help="base model directory (reference Llama-2-7b-chat-hf-qformer layout, or "
                   "one written by `fusionaudio convert`/training); default: the bundled demo model")
    p.add_argument("--model_path", help="fine-tuned checkpoint (.pth/.bin/.safetensors or a directory)")
    p.add_argument("--audio", nargs="+", help="audio file(s) or folder(s); omit for a text-only question")
    p.add_argument("--recursive", action="store_true", help="folders: also take the audio in their subfolders")
    p.add_argument("--question", default="Please describe this audio in detail.", help="the question asked of every clip")
    p.add_argument("--device", default="cuda:0", help="cuda:N or cpu (falls back to cpu without CUDA)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--arch", default="auto", choices=["auto", "gama", "audsemthinker"],
                   help="model family; auto: from the base model's config")
    p.add_argument("--quantize", default="none", choices=QUANTIZE_CHOICES, help=QUANTIZE_HELP)
    p.add_argument("--no_check_values", action="store_true",
                   help="skip the check that every loaded weight is finite and floating point (GAMA; for users who "
                        "know their checkpoint holds such values on purpose)")
    p.add_argument("--resampler", default="sinc", choices=["sinc", "soxr", "librosa"],
                   help="sinc: the reference's / torchaudio's Resample (default); librosa: AudSemThinker's "
                        "upstream evaluation scripts")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature; 0 means greedy (default: the family's, GAMA 0.1, AudSemThinker greedy)")
    p.add_argument("--top_p", type=float, default=None, help="nucleus sampling (default: the family's, GAMA 0.95)")
    p.add_argument("--top_k", type=int, default=None, help="top-k sampling (default: the family's, GAMA 300)")
    p.add_argument("--max_tokens", type=int, default=None,
                   help="maximum new tokens (default: the family's, GAMA 1024, AudSemThinker 512)")
    p.add_argument("--repetition_penalty", type=float, default=None, help="(default none; GAMA's CompA-R uses 1.1)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of the reference's sampling")
    p.add_argument("--num_beams", type=int, default=None, help="beam search width (default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--batch_size", type=int, default=8, help="clips decoded and answered together (streamed)")
    p.add_argument("--loader_workers", type=int, default=None,
                   help="audio decoding processes prefetching the next batch (default: half the cores, max 4)")
    p.add_argument("--structured", action="store_true",
                   help="parse the answer's <think>/<semantic_elements>/<answer> sections (the prompt is unchanged)")
    p.add_argument("--structured_prompt", action="store_true",
                   help="GAMA: append the instruction asking for those sections to the question (the JSON's "
                        "`question` is then the text sent); AudSemThinker always asks for them")
    p.add_argument("--json", action="store_true", help="print a JSON list of results (one per input, with `error`)")
    return p


def _plan(args) -> tuple[list[str | None], list[str | None]]:
    """(audio paths, header problem per path). Every input failing raises before the model loads."""
    from fusionaudio.audio.decode import expand_audio_args, header_problem

    skipped: list[str] = []
    audio_paths = expand_audio_args(args.audio, getattr(args, "recursive", False), skipped)
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        print(f"note: skipped {len(skipped)} non-audio entr{'y' if len(skipped) == 1 else 'ies'} in folder(s): "
              f"{shown}{'' if getattr(args, 'recursive', False) else ' (--recursive takes subfolders)'}",
              file=sys.stderr)
    problems = [None if p is None else header_problem(p) for p in audio_paths]
    if all(problems):
        from fusionaudio.audio import AudioError

        raise AudioError(problems[0] if len(problems) == 1 else
                         f"none of the {len(problems)} inputs is usable audio: " + "; ".join(problems[:5]))
    return audio_paths, problems


def run_quick_inference(args) -> list[dict]:
    """One result per input, in order: ``response`` (or None and ``error`` for an input that failed)."""
    from fusionaudio.infer import loader
    from fusionaudio.infer.answerers import AudSemAnswerer, GamaAnswerer, error_result, generation_options
    from fusionaudio.infer.records import Item
    from fusionaudio.inference import create_inference
    from fusionaudio.loading.device import resolve_device

    audio_paths, problems = _plan(args)
    device, note = resolve_device(args.device)
    if note:
        print(note, file=sys.stderr)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    resampler = getattr(args, "resampler", "sinc")
    engine = create_inference(args.arch, args.base_model, args.model_path, device=device, dtype=dtype,
                              resampler=resampler, check_values=not getattr(args, "no_check_values", False),
                              quantize=getattr(args, "quantize", None))
    if getattr(engine, "model_label", None):
        print(f"Model: {engine.model_label}", file=sys.stderr)
    gen = generation_options(engine.arch, args)
    question = args.question
    if getattr(args, "structured_prompt", False) and engine.arch == "gama":
        from fusionaudio.structured import structured_instruction

        question = structured_instruction(question)  # AudSemThinker adds its own instruction
    Answerer = GamaAnswerer if engine.arch == "gama" else AudSemAnswerer
    backend = Answerer(engine, gen, None, ignore_input=True)
    items = [Item(i, str(i), {"audio_id": p, "instruction": question}, None if p is None else Path(p))
             for i, p in enumerate(audio_paths) if problems[i] is None]
    prepare = loader.preparer(engine.arch, resampler)
    if engine.arch != "gama":
        prepare.keywords["sampling_rate"] = engine.processor.sampling_rate
    workers = loader.default_loader_workers() if args.loader_workers is None else args.loader_workers
    batch_size = max(1, args.batch_size)
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    by_index = {i: error_result(problem) for i, problem in enumerate(problems) if problem}
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    for batch, prepared in loader.iterate(batches, prepare, workers if len(batches) > 1 else 0):
        for item, result in zip(batch, backend.answer(batch, prepared)):
            by_index[item.index] = result
    return [_result_item(args, question, path, by_index[i]) for i, path in enumerate(audio_paths)]


def _result_item(args, question: str, path, result: dict) -> dict:
    """``question``: the text sent to the model (``--structured_prompt`` extends the asked one)."""
    item = {"audio": path, "question": question, "response": result["prediction"],
            "audio_info": result["audio_info"], "error": result["error"]}
    if args.structured:
        from fusionaudio.structured import answer_text, parse_structured

        answer = result["prediction"]
        item["structured"] = None if answer is None else parse_structured(answer)
        item["answer"] = None if answer is None else answer_text(answer)
    return item


def print_results(results: list[dict], as_json: bool) -> int:
    """Print every result (or its error); return 1 when any input failed, else 0."""
    failed = [r for r in results if r.get("error")]
    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for r in results:
            print("=" * 50)
            print("Question:", r["question"])
            if r["audio"]:
                info = r["audio_info"]
                print("Audio:", r["audio"], f"({info['summary']})" if info and "summary" in info else "")
            if r.get("error"):
                print("Error:", r["error"])
                continue
            print("Response:", r["response"])
            if r.get("structured"):
                parsed = r["structured"]
                for key in ("think", "semantic_elements"):
                    print(f"  {key}: {parsed.get(key)}")
                print(f"  answer: {r['answer']}  (format {'complete' if parsed['complete'] else 'incomplete'})")
        print("=" * 50)
    if failed:
        print(f"error: {len(failed)} of {len(results)} inputs failed, e.g. {failed[0]['error']}", file=sys.stderr)
    return 1 if failed else 0


def quick_inference_main(argv=None) -> int:
    args = quick_inference_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: print_results(run_quick_inference(args), args.json))
