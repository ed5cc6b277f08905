"""Helpers shared by the model stages: local model directories, audio inputs, devices."""

from __future__ import annotations

import logging
from pathlib import Path

from fusionaudio.pipeline.stages.base import Item, StageError

log = logging.getLogger("fusionaudio.pipeline")
AUDIO_INPUTS = ("mix", "speech", "background")


def model_dir(value, kind: str, context: dict) -> Path:
    """A local model directory; ``tiny`` means the tiny random model of ``kind`` (built offline on first use)."""
    if value in (None, ""):
        raise StageError(f"no model directory configured for the {kind} model")
    if value == "tiny":
        from fusionaudio.pipeline.tiny_models import ensure_tiny_model

        path = ensure_tiny_model(kind, context["tiny_models_dir"])
        log.warning("using a TINY RANDOM %s model (%s): its outputs are meaningless, for testing the pipeline only",
                    kind, path)
        return path
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"{kind} model directory not found: {path} (only local directories are loaded)")
    return path


def audio_input(item: Item, which: str) -> str:
    """The WAV to feed a model: the mix, or a separated stem when separation ran for this clip."""
    if which not in AUDIO_INPUTS:
        raise StageError(f"audio input must be one of {AUDIO_INPUTS}, not {which!r}")
    mix = item.ok("prepare")["audio"]
    if which == "mix":
        return mix
    stems = item.ok("separation")
    return stems[which] if stems else mix


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def tag_hit(item: Item, labels: list[str], min_score: float) -> dict | None:
    """The best tagging label among ``labels`` (case-insensitive) scoring >= ``min_score``."""
    tags = item.ok("tagging")
    if not tags:
        return None
    wanted = {lab.lower() for lab in labels}
    hits = [t for t in tags["labels"] if t["label"].lower() in wanted and t["score"] >= min_score]
    return max(hits, key=lambda t: t["score"]) if hits else None
