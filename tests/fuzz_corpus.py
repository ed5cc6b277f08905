"""A compact corpus of hostile inputs, generated on the fly (no binary fixtures).

``make_corpus(folder)`` writes ~60 audio files and returns ``[(path, expected)]`` where ``expected`` is
``"ok"`` (the front end must give finite features) or a regex that the :class:`AudioError` must
match. ``mutants(folder, n)`` adds seeded byte-level mutations of valid files, whose outcome is
"ok or an AudioError naming the file", never another exception.

Model directories (``tests/test_fuzz_model_dirs.py``): ``HOSTILE_NAMES`` are file names a directory may
give (a shard index, a tokenizer config) that lead out of it, each refused by name; ``HUGE_SIZES`` are
config sizes no weights hold. Requests (``tests/serve/test_fuzz_serve.py``): ``nested_json``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import soundfile as sf


def _tone(seconds: float, rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(max(1, int(seconds * rate))) / rate
    x = amplitude * np.sin(2 * np.pi * 440.0 * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


def _patch_rate(path: Path, rate: int) -> None:
    with open(path, "r+b") as f:  # WAV fmt chunk: sample rate at byte 24, byte rate at 28
        f.seek(24)
        f.write(rate.to_bytes(4, "little"))


def _valid(folder: Path) -> list[tuple[Path, str]]:
    out = []
    for rate in (8000, 11025, 16000, 22050, 44100, 44101, 11127, 48000, 96000, 192000):
        out.append((folder / f"tone_{rate}.wav", _tone(1.0, rate), rate, "PCM_16"))
    for ch in (2, 6, 32):
        out.append((folder / f"ch{ch}.wav", _tone(0.5, 16000, ch), 16000, "PCM_16"))
    out.append((folder / "long_12s.flac", _tone(12.0, 16000), 16000, "PCM_16"))
    out.append((folder / "float_loud_1e6.wav", _tone(0.5, 16000, amplitude=1e6), 16000, "FLOAT"))
    out.append((folder / "silence.wav", np.zeros((16000, 1), np.float32), 16000, "PCM_16"))
    out.append((folder / "name with spaces é.ogg", _tone(0.5, 16000), 16000, "VORBIS"))
    out.append((folder / "pcm24.wav", _tone(0.5, 16000), 16000, "PCM_24"))
    for path, data, rate, subtype in out:
        sf.write(str(path), data, rate, subtype=subtype)
    return [(p, "ok") for p, *_ in out]


def _bad_content(folder: Path) -> list[tuple[Path, str]]:
    cases = []
    for amp in (1e19, 1e30, 3e38):
        p = folder / f"float_{amp:g}.wav"
        sf.write(str(p), _tone(0.5, 16000, amplitude=amp), 16000, subtype="FLOAT")
        cases.append((p, "features are not finite"))
    for value, name in ((np.nan, "nan"), (np.inf, "inf")):
        data = _tone(0.5, 16000)
        data[100] = value
        p = folder / f"float_{name}.wav"
        sf.write(str(p), data, 16000, subtype="FLOAT")
        cases.append((p, "non-finite samples"))
    p = folder / "empty.wav"
    sf.write(str(p), np.zeros((0, 1), np.float32), 16000)
    cases.append((p, "empty"))
    p = folder / "short.wav"
    sf.write(str(p), _tone(0.01, 16000), 16000)
    cases.append((p, "too short"))
    p = folder / "short_8k.wav"
    sf.write(str(p), _tone(0.02, 8000), 8000)
    cases.append((p, "too short"))
    for rate in (2_147_483_647, 900, 1_000_000):
        p = folder / f"lying_rate_{rate}.wav"
        sf.write(str(p), _tone(0.5, 16000), 16000, subtype="PCM_16")
        _patch_rate(p, rate)
        cases.append((p, "outside the supported range"))
    return cases


def _bad_files(folder: Path) -> list[tuple[Path, str]]:
    cases = []
    good = folder / "tone_16000.wav"
    raw = good.read_bytes()
    for n in (0, 4, 20, 44):
        p = folder / f"truncated_{n}.wav"
        p.write_bytes(raw[:n])
        cases.append((p, "cannot decode" if n < 44 else "empty"))  # 44 bytes: a header, no samples
    rng = random.Random(0)
    for ext in (".wav", ".flac", ".mp3", ".ogg"):
        p = folder / f"noise{ext}"
        p.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
        cases.append((p, "cannot decode"))
    p = folder / "text.wav"
    p.write_text("this is not audio\n")
    cases.append((p, "cannot decode"))
    d = folder / "dir.wav"
    d.mkdir()
    cases.append((d, "directory"))
    cases.append((folder / "missing.wav", "file not found"))
    loop = folder / "loop.wav"
    os.symlink(loop, loop)
    cases.append((loop, "symlink loop"))
    dangling = folder / "dangling.wav"
    os.symlink(folder / "nowhere.wav", dangling)
    cases.append((dangling, "broken symlink"))
    fifo = folder / "fifo.wav"
    os.mkfifo(fifo)
    cases.append((fifo, "not a regular file"))
    return cases


def make_corpus(folder: Path) -> list[tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    return _valid(folder) + _bad_content(folder) + _bad_files(folder)


def mutants(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` seeded mutations (byte flips, truncations, header overwrites) of valid files."""
    rng = random.Random(seed)
    sources = sorted(p for p in folder.iterdir() if p.name.startswith("tone_") or p.suffix == ".flac")
    out = []
    for i in range(n):
        raw = bytearray(rng.choice(sources).read_bytes())
        kind = i % 3
        if kind == 0:  # flip bytes in the first 64 (the header)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(min(64, len(raw)))] = rng.randrange(256)
        elif kind == 1:  # cut anywhere
            raw = raw[: rng.randrange(len(raw))]
        else:  # overwrite a run in the body
            at = rng.randrange(len(raw))
            raw[at: at + 64] = bytes(rng.randrange(256) for _ in range(64))
        p = folder / f"mutant_{i}{'.flac' if raw[:4] == b'fLaC' else '.wav'}"
        p.write_bytes(bytes(raw))
        out.append(p)
    return out


# ------------------------------------------------------------------------------ model directories
#: File names that lead out of a model directory (``..``, absolute, devices, /proc, NUL, Windows forms).
HOSTILE_NAMES = ["../elsewhere/x.safetensors", "../../etc/passwd", "/etc/shadow", "/proc/self/environ", "/dev/zero",
                 "sub/../../x.bin", "..", "C:\\Windows\\x.bin", "\\\\server\\share\\x.bin", "a\x00b.bin", ""]
#: Sizes a config may claim that no weights hold (depth: minutes of building modules; width: terabytes).
HUGE_SIZES = (1_000_000, 10**12)


def nested_json(depth: int) -> bytes:
    """``{"model": "m", "messages": [[[...]]]}`` nested ``depth`` deep (exhausts a recursive parser)."""
    return b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"
