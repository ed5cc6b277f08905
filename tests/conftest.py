"""Shared fixtures: tiny reference-format models built offline (session-scoped)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The reference data (manifests, fbank fixtures): $FUSIONAUDIO_REFERENCE_DIR if set, else the
    copy in tests/data/reference (so a fresh clone runs every test)."""
    return Path(os.environ.get("FUSIONAUDIO_REFERENCE_DIR", REPO / "tests" / "data" / "reference"))


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A tiny reference-format base directory (sharded .bin, random weights, trained tokenizer)."""
    from fusionaudio.gama.tiny import make_reference_base_dir

    return make_reference_base_dir(tmp_path_factory.mktemp("tiny_base"), "tiny", seed=0, llm_init_std=0.2)


@pytest.fixture(scope="session")
def tiny_model(tiny_base_dir):
    """(model, tokenizer) of the tiny base directory with random (non-zero) LoRA weights."""
    import torch

    from fusionaudio.gama.loading import load_model

    model, tok = load_model(tiny_base_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    return model, tok


def write_tone(path: Path, seconds: float = 2.0, freq: float = 440.0, sr: int = 16000, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    data = np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(str(path), data.astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("audio")
    return [write_tone(d / "a.wav", 2.0, 440.0), write_tone(d / "b.wav", 4.5, 2000.0, sr=22050),
            write_tone(d / "c.flac", 1.0, 150.0, sr=44100, channels=2)]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Generation with the tiny models is overhead-bound: one thread is as fast, and far faster
    when other processes (a test server, other jobs) share the cores. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
