"""``separation``: Demucs (HTDemucs by default) splits the clip into a speech stem (``vocals``) and a
background stem (the sum of the other sources), written as 16 kHz mono WAVs.

``demucs`` 4.1.0 installs beside torch 2.13 CPU without pulling another torch (checked with
``pip install --dry-run demucs==4.1.0``: it adds einops, julius, lameenc, sphn only). The model
directory holds ``demucs_config.json`` (``{"class": "HTDemucs", "kwargs": {...}}``) and
``model.safetensors``: Demucs' own release files are pickles, which this project does not load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from fusionaudio.pipeline import media
from fusionaudio.pipeline.stages.base import Item, Stage, StageError
from fusionaudio.pipeline.stages.common import model_dir

DEMUCS_CLASSES = ("HTDemucs", "HDemucs", "Demucs")


def load_demucs(path: Path):
    """A Demucs model from ``demucs_config.json`` + ``model.safetensors`` (strict)."""
    try:
        import demucs.demucs
        import demucs.hdemucs
        import demucs.htdemucs
    except ImportError:
        raise StageError("the separation stage needs the demucs package (pip install demucs==4.1.0)") from None
    from safetensors.torch import load_file

    cfg_path = Path(path) / "demucs_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found (a Demucs model directory holds demucs_config.json "
                                "and model.safetensors)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("class") not in DEMUCS_CLASSES:
        raise ValueError(f"{cfg_path}: class must be one of {DEMUCS_CLASSES}, not {cfg.get('class')!r}")
    module = {"HTDemucs": demucs.htdemucs, "HDemucs": demucs.hdemucs, "Demucs": demucs.demucs}[cfg["class"]]
    model = getattr(module, cfg["class"])(**cfg["kwargs"])
    model.load_state_dict(load_file(str(Path(path) / "model.safetensors")), strict=True)
    return model.eval()


def _resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    if sr_from == sr_to:
        return x
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr_from, sr_to)
    return resample_poly(x, sr_to // g, sr_from // g, axis=-1).astype(np.float32)


class SeparationStage(Stage):
    name = "separation"
    reads = ("prepare",)
    requires = ("prepare",)
    PATH_KEYS = ("model",)
    DEFAULTS = {"model": "tiny", "speech_sources": ["vocals"], "shifts": 0, "overlap": 0.25, "split": True}

    def load(self) -> None:
        import torch

        self.torch = torch
        self.model = load_demucs(model_dir(self.cfg["model"], "demucs", self.context)).to(self.cfg["device"])
        unknown = set(self.cfg["speech_sources"]) - set(self.model.sources)
        if unknown:
            raise ValueError(f"stages.separation.speech_sources {sorted(unknown)} are not sources of the model "
                             f"({self.model.sources})")

    def unload(self) -> None:
        self.model = None

    def process(self, items: list[Item]) -> list:
        return [self._one(it) for it in items]

    def _one(self, item: Item) -> dict:
        from demucs.apply import apply_model

        torch, model = self.torch, self.model
        src = item.ok("prepare")["audio"]
        x = media.read_mono(src)
        sr_in = sf.info(src).samplerate
        wave = torch.from_numpy(_resample(x, sr_in, model.samplerate))[None].repeat(model.audio_channels, 1)
        ref = wave.mean(0)
        wave = (wave - ref.mean()) / (ref.std() + 1e-8)
        with torch.no_grad():
            out = apply_model(model, wave[None], shifts=self.cfg["shifts"], split=self.cfg["split"],
                              overlap=self.cfg["overlap"], progress=False, device=self.cfg["device"])[0]
        out = out * (ref.std() + 1e-8) + ref.mean()
        stems = {name: out[i].mean(0).cpu().numpy() for i, name in enumerate(model.sources)}
        speech = sum(stems[s] for s in self.cfg["speech_sources"])
        background = sum(v for k, v in stems.items() if k not in self.cfg["speech_sources"])
        result = {}
        for key, wav in (("speech", speech), ("background", background)):
            path = item.media_dir / f"{key}.wav"
            tmp = path.with_name(f".{key}.tmp.wav")
            sf.write(str(tmp), _resample(np.asarray(wav, np.float32), model.samplerate, sr_in), sr_in, subtype="PCM_16")
            tmp.replace(path)
            result[key] = str(path)
        result["sources"] = list(model.sources)
        return result
