"""``fusionaudio <command>``: one command table, one ``main()`` per command.

Every command takes ``--help`` (every flag with its default, no pager) and follows one exit-code rule
(:mod:`fusionaudio.commands`: 0 done, 1 a run that failed, 2 bad input; ``FUSIONAUDIO_DEBUG=1`` shows
tracebacks). ``python -m fusionaudio.<package>`` runs the same ``main()`` as its command here.
"""

from __future__ import annotations

import importlib
import logging
import sys

#: command -> (module whose ``main(argv)`` runs it, one line of help). Modules are imported on use only.
COMMANDS: dict[str, tuple[str, str]] = {
    "quick": ("fusionaudio.infer.quick:quick_inference_main", "answer a question about audio files (= quick_inference.py)"),
    "infer": ("fusionaudio.infer.cli:main", "batch inference over a records file: sharded, resumable"),
    "train": ("fusionaudio.train.cli:main", "fine-tune GAMA / FusionAudio (LoRA, GAMA's stages, accelerate)"),
    "audsem-train": ("fusionaudio.audsem.train:main", "AudSemThinker LoRA SFT"),
    "serve": ("fusionaudio.serve.cli:serve_main", "OpenAI-compatible HTTP API"),
    "demo": ("fusionaudio.serve.cli:demo_main", "Gradio web demo"),
    "convert": ("fusionaudio.cli:convert_main", "rewrite a reference GAMA checkpoint into this project's layout"),
    "export": ("fusionaudio.cli:export_main", "--merge: fold LoRA into the weights (both families)"),
    "evaluate": ("fusionaudio.evaluate.cli:main", "benchmarks: classification, captioning, qa, mmau, report"),
    "retrieval": ("fusionaudio.retrieval.cli:main", "audio-text retrieval: evaluate (WavCaps ASE / CLAP), train"),
    "pipeline": ("fusionaudio.pipeline.__main__:main", "the caption pipeline (Ray or local)"),
    "benchmarks": ("fusionaudio.benchmarks.__main__:main", "build benchmark record files from their sources"),
}


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return (f"usage: fusionaudio <command> [--help] [options]\n\ncommands:\n{rows}\n\n"
            "Exit status: 0 done, 1 a run that failed, 2 bad input. FUSIONAUDIO_DEBUG=1 shows tracebacks.")


def _export_parser(merge_flag: bool):
    import argparse

    from fusionaudio.commands import HelpFormatter

    name = "export" if merge_flag else "convert"
    p = argparse.ArgumentParser(prog=f"fusionaudio {name}", formatter_class=HelpFormatter,
                                description=COMMANDS[name][1])
    p.add_argument("--base_model", required=True, help="base model directory (GAMA or AudSemThinker)")
    p.add_argument("--model_path", default=None, help="fine-tuned checkpoint or adapter directory")
    p.add_argument("--output", required=True, help="output directory")
    if merge_flag:
        p.add_argument("--merge", action="store_true", help="fold LoRA into the weights (reference layout); "
                       "without it, the same as convert")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32)")
    return p


def convert_main(argv=None) -> int:
    from fusionaudio.commands import run_command

    args = _export_parser(merge_flag=False).parse_args(argv)

    def run():
        from fusionaudio.gama.loading import convert

        print(f"wrote {convert(args.base_model, args.output, args.model_path, args.dtype or 'float32')}")

    return run_command(run)


def export_main(argv=None) -> int:
    from fusionaudio.commands import run_command

    args = _export_parser(merge_flag=True).parse_args(argv)

    def run():
        from fusionaudio.inference import export_model

        print(f"wrote {export_model(args.base_model, args.output, args.model_path, args.merge, args.dtype)}")

    return run_command(run)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if command in ("convert", "export"):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    code = _load(COMMANDS[command][0])(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
