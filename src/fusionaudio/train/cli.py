"""``python -m fusionaudio.train``: the reference trainer's options, plus presets."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from fusionaudio.commands import dataclass_parser, run_command
from fusionaudio.train.args import TrainArgs

log = logging.getLogger("fusionaudio.train")
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"


def load_preset(preset: str) -> dict:
    """A preset's options: a name in ``configs/train/`` (``gama_stage1``) or a JSON file.
    Keys starting with ``_`` are notes (where the values come from)."""
    path = Path(preset)
    if not path.is_file():
        path = PRESET_DIR / f"{preset}.json"
    if not path.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
        raise ValueError(f"unknown training preset {preset!r}: not a file, nor one of {names}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a preset is a JSON object of train options")
    known = TrainArgs.names() - {"preset"}
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown train option(s) {unknown}")
    return values


def train(args: TrainArgs | None = None, **options) -> dict:
    """Fine-tune a GAMA / FusionAudio model; returns a summary (final step, last losses, paths).

    ``args`` is a :class:`~fusionaudio.train.args.TrainArgs` (or give its fields as keyword arguments);
    a ``preset`` replaces the options left at their defaults.
    """
    if args is None:
        unknown = sorted(set(options) - TrainArgs.names())
        if unknown:
            raise TypeError(f"unknown train option(s): {', '.join(unknown)}")
        args = TrainArgs(**options)
    elif options:
        args = dataclasses.replace(args, **options)
    options = args.to_dict()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # accelerate narrates every checkpoint it writes ("Saving current state to .../.checkpoint-N.tmp"): our own
    # line says where each checkpoint went; its warnings still show
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    if args.preset:
        defaults = TrainArgs.defaults()
        for key, value in load_preset(args.preset).items():
            if options[key] == defaults[key]:
                options[key] = value
    o = TrainArgs(**options)
    if not (o.base_model and o.data_path and o.output_dir):
        raise ValueError("--base_model, --data_path and --output_dir are required")
    from fusionaudio.train.loop import run_loop
    from fusionaudio.train.run import finish, open_log, prepare

    run = run_log = None
    try:
        run = prepare(o, options)
        run_log = open_log(run, o)
        step, seen, elapsed = run_loop(run, run_log)
        run_log.close()
        return finish(run, step, seen, elapsed)
    finally:
        if run_log is not None:
            run_log.close()
        if run is not None:
            run.accelerator.end_training()
        _reset_engine()


def _reset_engine() -> None:
    """Forget accelerate's process-wide state, so a later run in this process (tests, a
    notebook) sets up its own engine."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def main(argv=None) -> int:
    """``python -m fusionaudio.train --help``: one flag per :class:`TrainArgs` field; the one error guard
    (bad input or bad records exit 2, a non-finite loss 1; ``FUSIONAUDIO_DEBUG=1`` shows the traceback)."""
    parser = dataclass_parser(TrainArgs, prog="python -m fusionaudio.train",
                              description="Fine-tune a GAMA / FusionAudio model (the reference trainer's options, "
                                          "plus presets; docs/training.md).")
    parsed = parser.parse_args(argv)
    return run_command(lambda: train(TrainArgs(**vars(parsed))) and None)
