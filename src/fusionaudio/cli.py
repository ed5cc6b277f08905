"""Command lines: ``quick_inference.py`` and the ``fusionaudio`` command (``convert``, ...)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}


class UsageError(ValueError):
    pass


def expand_audio_args(items: list[str] | None) -> list[str | None]:
    """Files as given; a folder expands to its audio files (sorted). None -> text only."""
    if not items:
        return [None]
    out: list[str | None] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise UsageError(f"{p}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            out += found
        else:
            out.append(item)
    return out


def audio_info_dict(info) -> dict:
    """The reference's audio info (length, channels, rate) plus truncation, as JSON."""
    from dataclasses import asdict

    return {**asdict(info), "summary": info.summary()}


def quick_inference_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="quick_inference.py",
        description="Caption audio or answer questions about it with a FusionAudio/GAMA (or AudSemThinker) model.",
    )
    p.add_argument("--base_model", help="base model directory (reference Llama-2-7b-chat-hf-qformer layout, or "
                   "one written by `fusionaudio convert`/training); default: the bundled demo model")
    p.add_argument("--model_path", help="fine-tuned checkpoint (.pth/.bin/.safetensors or a directory)")
    p.add_argument("--audio", nargs="+", help="audio file(s) or folder(s); omit for a text-only question")
    p.add_argument("--question", default="Please describe this audio in detail.")
    p.add_argument("--device", default="cuda:0", help="cuda:N or cpu (falls back to cpu without CUDA)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--arch", default="auto", choices=["auto", "gama", "audsemthinker"])
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=300)
    p.add_argument("--max_tokens", type=int, default=1024, help="maximum new tokens")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of the reference's sampling")
    p.add_argument("--num_beams", type=int, default=1)
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--structured", action="store_true", help="parse <think>/<semantic_elements>/<answer> sections")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def run_quick_inference(args) -> list[dict]:
    from .inference import create_inference, resolve_device

    audio_paths = expand_audio_args(args.audio)
    device, note = resolve_device(args.device)
    if note:
        print(note, file=sys.stderr)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    # Load every clip first: a bad file fails fast, before the model is loaded.
    from .inference import FusionAudioInference

    loaded = [FusionAudioInference.load_audio(p) for p in audio_paths]
    engine = create_inference(args.arch, args.base_model, args.model_path, device=device, dtype=dtype)
    if getattr(engine, "model_label", None):
        print(f"Model: {engine.model_label}", file=sys.stderr)
    gen = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_tokens,
               do_sample=not args.greedy, num_beams=args.num_beams)
    question = args.question
    if args.structured and engine.arch == "gama":
        from .structured import structured_instruction

        question = structured_instruction(question)  # AudSemThinker adds its own instruction
    if engine.arch == "gama":
        from .inference import Request

        requests = [Request(question, fbank) for fbank, _ in loaded]
        answers = engine.generate(requests, batch_size=args.batch_size, seed=args.seed, **gen)
    else:
        answers = engine.predict_batch(audio_paths, question, batch_size=args.batch_size, seed=args.seed, **gen)
    results = []
    for path, (_, info), answer in zip(audio_paths, loaded, answers):
        item = {"audio": path, "question": args.question, "response": answer,
                "audio_info": None if info is None else audio_info_dict(info)}
        if args.structured:
            from .structured import answer_text, parse_structured

            item["structured"] = parse_structured(answer)
            item["answer"] = answer_text(answer)
        results.append(item)
    return results


def print_results(results: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for r in results:
        print("=" * 50)
        print("Question:", r["question"])
        if r["audio"]:
            info = r["audio_info"]
            print("Audio:", r["audio"], f"({info['summary']})" if info else "")
        print("Response:", r["response"])
        if "structured" in r:
            parsed = r["structured"]
            for key in ("think", "semantic_elements"):
                print(f"  {key}: {parsed.get(key)}")
            print(f"  answer: {r['answer']}  (format {'complete' if parsed['complete'] else 'incomplete'})")
    print("=" * 50)


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
    return _run_guarded(lambda: print_results(run_quick_inference(args), args.json), args.debug)


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
