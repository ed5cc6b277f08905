"""Resampling to the front end's rate: the reference's sinc resampler by default, others by name."""

from __future__ import annotations

import math

import numpy as np
import torch

from fusionaudio.audio.decode import AudioError
from fusionaudio.audio.kaldi import TARGET_SAMPLE_RATE
from fusionaudio.audio.sinc import resample_sinc

RESAMPLERS = ("sinc", "soxr", "librosa", "polyphase")
# Sample rates the front end accepts (a header outside this range is refused, not resampled).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000


def check_rate(sample_rate: int, path: str | None = None) -> None:
    """Refuse rates outside :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE` (a lying header must not
    make the resampler allocate without bound)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {sample_rate} Hz is outside the supported range "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", path)


def resample(
    waveform: torch.Tensor, orig_sr: int, new_sr: int = TARGET_SAMPLE_RATE, method: str = "sinc"
) -> torch.Tensor:
    """Resample a float32 ``[channels, samples]`` tensor from ``orig_sr`` to ``new_sr``.

    ``method``:

    - ``"sinc"`` (default): the reference's resampler (torchaudio 0.13 ``sinc_interp_hann``,
      lowpass width 6, rolloff 0.99). Runs on the waveform's device.
    - ``"soxr"``: soxr HQ. ``"librosa"``: ``librosa.resample`` with its default ``res_type``.
      ``"polyphase"``: ``scipy.signal.resample_poly``. These are good resamplers but shift the
      fbank by 0.2-3.6 against the reference; they run on CPU and return a tensor on the input's
      device.
    """
    if method not in RESAMPLERS:
        raise AudioError(f"unknown resampler {method!r}; choose one of {', '.join(RESAMPLERS)}")
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr == new_sr:
        return waveform
    check_rate(orig_sr)
    check_rate(new_sr)
    if method == "sinc":
        return resample_sinc(waveform, orig_sr, new_sr)
    x = waveform.detach().cpu().numpy()
    if method == "soxr":
        import soxr

        y = soxr.resample(x.T, orig_sr, new_sr, quality="HQ").T
    elif method == "librosa":
        import librosa

        y = librosa.resample(x, orig_sr=orig_sr, target_sr=new_sr, axis=-1)
    else:
        from scipy.signal import resample_poly

        g = math.gcd(orig_sr, new_sr)
        y = resample_poly(x, new_sr // g, orig_sr // g, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(waveform.device)
