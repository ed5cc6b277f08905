"""Audio sent by clients: base64 bytes -> waveform. Never a file path; everything stays in memory."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from fusionaudio.serve.errors import bad_request

#: libsndfile's container name for each accepted ``input_audio.format``.
_CONTAINERS = {"wav": {"WAV", "WAVEX", "RF64"}, "mp3": {"MP3"}, "flac": {"FLAC"}, "ogg": {"OGG"}}


@dataclass
class DecodedAudio:
    waveform: torch.Tensor  # float32 [channels, samples] in [-1, 1]
    sample_rate: int
    format: str
    sha256: str
    num_bytes: int

    @property
    def duration_s(self) -> float:
        return self.waveform.shape[1] / self.sample_rate


def decode_base64(data: str, param: str) -> bytes:
    """Strict base64 (a ``data:...;base64,`` prefix is accepted); a 400 naming ``param`` otherwise."""
    if data.startswith("data:") and ";base64," in data[:100]:
        data = data.split(";base64,", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"{param}: not valid base64 ({exc})", param=param, code="invalid_base64") from exc
    if not raw:
        raise bad_request(f"{param}: empty audio data", param=param, code="invalid_audio")
    return raw


def decode_audio(raw: bytes, fmt: str | None, param: str, max_seconds: float) -> DecodedAudio:
    """Decode encoded audio bytes with soundfile; 400 for undecodable, mislabelled, empty or too long audio.

    ``fmt`` is the format the client declared (checked against the data), or None to accept any."""
    try:
        with sf.SoundFile(io.BytesIO(raw)) as f:
            container, rate, frames = f.format, f.samplerate, f.frames
            if fmt is not None and container not in _CONTAINERS[fmt]:
                raise bad_request(f"{param}: format is {fmt!r} but the data is {container}", param=param,
                                  code="invalid_audio")
            if rate <= 0:
                raise bad_request(f"{param}: invalid sample rate {rate}", param=param, code="invalid_audio")
            if frames > max_seconds * rate:
                raise bad_request(f"{param}: audio is {frames / rate:.1f} s long, over the server's limit of "
                                  f"{max_seconds:g} s", param=param, code="audio_too_long")
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise bad_request(f"{param}: cannot decode the audio{f' as {fmt}' if fmt else ''} ({exc})", param=param,
                          code="invalid_audio") from exc
    if data.shape[0] == 0:
        raise bad_request(f"{param}: audio is empty (no samples)", param=param, code="invalid_audio")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    return DecodedAudio(wave, int(rate), fmt or container.lower(), hashlib.sha256(raw).hexdigest(), len(raw))
