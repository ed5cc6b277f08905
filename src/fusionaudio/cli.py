"""Command lines: ``quick_inference.py`` and the ``fusionaudio`` command (``convert``, ...)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

#: File suffixes a folder expands to (what libsndfile / soundfile decodes).
AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif", ".aifc", ".au", ".snd",
                  ".caf", ".w64", ".rf64"}
TEXT_ONLY_HINT = "for a text-only question leave out --audio"


class UsageError(ValueError):
    pass


def expand_audio_args(items: list[str] | None, recursive: bool = False, skipped: list[str] | None = None
                      ) -> list[str | None]:
    """Paths as given (an existing path is always audio, whatever its name); a folder expands to its
    audio files (sorted; with ``recursive`` its subfolders' too). No ``items`` -> ``[None]`` (text
    only); an empty argument is an error. What a folder held but was not taken (other files,
    subfolders without ``recursive``) is appended to ``skipped``."""
    if not items:
        return [None]
    out: list[str | None] = []
    for item in items:
        if not str(item).strip():
            raise UsageError(f"--audio got an empty argument ({TEXT_ONLY_HINT})")
        p = Path(item)
        if not p.is_dir():
            out.append(str(item))
            continue
        found, passed = [], []
        for f in sorted(p.rglob("*") if recursive else p.iterdir()):
            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES:
                found.append(str(f))
            elif not (recursive and f.is_dir()):
                passed.append(str(f) + ("/" if f.is_dir() else ""))
        if not found:
            raise UsageError(f"{p}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})"
                             + ("" if recursive else "; --recursive also searches its subfolders"))
        out += found
        if skipped is not None:
            skipped += passed
    return out


def audio_info_dict(info) -> dict:
    """The reference's audio info (length, channels, rate) plus truncation, as JSON."""
    from dataclasses import asdict

    return {**asdict(info), "summary": info.summary()}


def header_problem(path: str) -> str | None:
    """None if ``path`` looks like a readable audio file (header only), else the problem, naming it."""
    import os

    import soundfile as sf

    try:
        st = os.stat(path)
    except OSError as exc:
        hint = f" ({TEXT_ONLY_HINT})" if path in ("empty", "none", "None") else ""
        return f"{path}: {'file not found' if exc.errno == 2 else exc.strerror}{hint}"
    import stat

    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"
    try:
        info = sf.info(path)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types
        return f"{path}: cannot decode audio ({exc})"
    if info.frames <= 0:
        return f"{path}: audio is empty (no samples)"
    return None


def quick_inference_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quick_inference.py",
        description="Caption audio or answer questions about it with a FusionAudio/GAMA (or AudSemThinker) model.",
    )
    p.add_argument("--base_model", help="base model directory (reference Llama-2-7b-chat-hf-qformer layout, or "
                   "one written by `fusionaudio convert`/training); default: the bundled demo model")
    p.add_argument("--model_path", help="fine-tuned checkpoint (.pth/.bin/.safetensors or a directory)")
    p.add_argument("--audio", nargs="+", help="audio file(s) or folder(s); omit for a text-only question")
    p.add_argument("--recursive", action="store_true", help="folders: also take the audio in their subfolders")
    p.add_argument("--question", default="Please describe this audio in detail.")
    p.add_argument("--device", default="cuda:0", help="cuda:N or cpu (falls back to cpu without CUDA)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--arch", default="auto", choices=["auto", "gama", "audsemthinker"])
    p.add_argument("--no_check_values", action="store_true",
                   help="skip the check that every loaded weight is finite and floating point (GAMA; for users who "
                        "know their checkpoint holds such values on purpose)")
    p.add_argument("--resampler", default="sinc", choices=["sinc", "soxr", "librosa"],
                   help="sinc: the reference's / torchaudio's Resample (default); librosa: AudSemThinker's "
                        "upstream evaluation scripts")
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=300)
    p.add_argument("--max_tokens", type=int, default=1024, help="maximum new tokens")
    p.add_argument("--repetition_penalty", type=float, default=None, help="(default none; GAMA's CompA-R uses 1.1)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of the reference's sampling")
    p.add_argument("--num_beams", type=int, default=1)
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--batch_size", type=int, default=8, help="clips decoded and answered together (streamed)")
    p.add_argument("--loader_workers", type=int, default=None,
                   help="audio decoding processes prefetching the next batch (default: half the cores, max 4)")
    p.add_argument("--structured", action="store_true", help="parse <think>/<semantic_elements>/<answer> sections")
    p.add_argument("--json", action="store_true", help="print a JSON list of results (one per input, with `error`)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _plan(args) -> tuple[list[str | None], list[str | None]]:
    """(audio paths, header problem per path). Every input failing raises before the model loads."""
    skipped: list[str] = []
    audio_paths = expand_audio_args(args.audio, getattr(args, "recursive", False), skipped)
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        print(f"note: skipped {len(skipped)} non-audio entr{'y' if len(skipped) == 1 else 'ies'} in folder(s): "
              f"{shown}{'' if getattr(args, 'recursive', False) else ' (--recursive takes subfolders)'}",
              file=sys.stderr)
    problems = [None if p is None else header_problem(p) for p in audio_paths]
    if all(problems):
        from .audio import AudioError

        raise AudioError(problems[0] if len(problems) == 1 else
                         f"none of the {len(problems)} inputs is usable audio: " + "; ".join(problems[:5]))
    return audio_paths, problems


def run_quick_inference(args) -> list[dict]:
    """One result per input, in order: ``response`` (or None and ``error`` for an input that failed)."""
    from .infer import loader
    from .infer.backends import AudSemBackend, GamaBackend, error_result
    from .infer.records import Item
    from .inference import create_inference, resolve_device

    audio_paths, problems = _plan(args)
    device, note = resolve_device(args.device)
    if note:
        print(note, file=sys.stderr)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    resampler = getattr(args, "resampler", "sinc")
    engine = create_inference(args.arch, args.base_model, args.model_path, device=device, dtype=dtype,
                              resampler=resampler, check_values=not getattr(args, "no_check_values", False))
    if getattr(engine, "model_label", None):
        print(f"Model: {engine.model_label}", file=sys.stderr)
    gen = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_tokens,
               do_sample=not args.greedy, num_beams=args.num_beams,
               repetition_penalty=getattr(args, "repetition_penalty", None))
    question = args.question
    if args.structured and engine.arch == "gama":
        from .structured import structured_instruction

        question = structured_instruction(question)  # AudSemThinker adds its own instruction
    Backend = GamaBackend if engine.arch == "gama" else AudSemBackend
    backend = Backend(engine, gen, None, ignore_input=True)
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
    return [_result_item(args, path, by_index[i]) for i, path in enumerate(audio_paths)]


def _result_item(args, path, result: dict) -> dict:
    item = {"audio": path, "question": args.question, "response": result["prediction"],
            "audio_info": result["audio_info"], "error": result["error"]}
    if args.structured:
        from .structured import answer_text, parse_structured

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


def _run_guarded(fn, debug: bool) -> int:
    """Run ``fn``; on a user-facing error print one line (no traceback) and return 2."""
    try:
        fn()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc}".splitlines()[0][:2000], file=sys.stderr)
        return 2


def quick_inference_main(argv=None) -> int:
    args = quick_inference_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = []
    code = _run_guarded(lambda: status.append(print_results(run_quick_inference(args), args.json)), args.debug)
    return code or (status[0] if status else 0)


def main(argv=None) -> int:
    """``fusionaudio convert|quick|serve|demo ...``"""
    parser = argparse.ArgumentParser(prog="fusionaudio")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="rewrite a reference checkpoint into this project's safetensors layout")
    conv.add_argument("--base_model", required=True)
    conv.add_argument("--model_path", default=None)
    conv.add_argument("--output", required=True)
    conv.add_argument("--dtype", default="float32")
    conv.add_argument("--debug", action="store_true")
    exp = sub.add_parser("export", help="--merge: fold LoRA into the Llama weights and write a reference-format "
                         "base directory; without --merge the same as convert")
    exp.add_argument("--base_model", required=True)
    exp.add_argument("--model_path", default=None)
    exp.add_argument("--output", required=True)
    exp.add_argument("--merge", action="store_true")
    exp.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32)")
    exp.add_argument("--debug", action="store_true")
    sub.add_parser("quick", help="same as quick_inference.py", add_help=False)
    sub.add_parser("serve", help="OpenAI-compatible HTTP API (fusionaudio serve --help)", add_help=False)
    sub.add_parser("demo", help="Gradio web demo (fusionaudio demo --help)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["quick"]:
        return quick_inference_main(argv[1:])
    if argv[:1] in (["serve"], ["demo"]):
        from .serve import cli as serve_cli

        return (serve_cli.serve_main if argv[0] == "serve" else serve_cli.demo_main)(argv[1:])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "convert":
        from .model.loading import convert

        return _run_guarded(lambda: print(f"wrote {convert(args.base_model, args.output, args.model_path, args.dtype)}"),
                            args.debug)
    if args.command == "export":
        from .export import export

        return _run_guarded(lambda: print(f"wrote {export(args.base_model, args.output, args.model_path, args.merge, args.dtype)}"),
                            args.debug)
    return 2


if __name__ == "__main__":
    sys.exit(main())
