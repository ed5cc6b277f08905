"""Kaldi's log-mel filterbank in plain torch, as ``torchaudio.compliance.kaldi.fbank`` computes it with
the reference's settings (``htk_compat=True, use_energy=False, window_type='hanning',
num_mel_bins=128, dither=0.0, frame_shift=10``), row by row so that batching never changes a row.
:func:`fusionaudio.audio.kaldi_fbank` is the checked entry point.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

TARGET_SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms at 16 kHz
FFT_SIZE = 512  # FRAME_LENGTH rounded up to a power of two
PREEMPHASIS = 0.97
MEL_LOW_HZ = 20.0
# fewest rows handed to one fbank matmul (see _log_mel)
_MIN_MM_ROWS = 64


def _mel_banks() -> torch.Tensor:
    """Kaldi's triangular mel filters, ``[128, 257]`` float32, as torchaudio's ``get_mel_banks``
    computes them (mel = 1127 ln(1 + f/700), 20 Hz to Nyquist), plus a zero column for Nyquist."""
    mel_low = 1127.0 * math.log(1.0 + MEL_LOW_HZ / 700.0)
    mel_high = 1127.0 * math.log(1.0 + (TARGET_SAMPLE_RATE / 2) / 700.0)
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    index = torch.arange(NUM_MEL_BINS, dtype=torch.float32).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    freqs = (TARGET_SAMPLE_RATE / FFT_SIZE) * torch.arange(FFT_SIZE // 2, dtype=torch.float32)
    mel = 1127.0 * (1.0 + freqs / 700.0).log()
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    banks = torch.minimum(rising, falling).clamp_min(0.0)
    return F.pad(banks, (0, 1))


@functools.lru_cache(maxsize=8)
def _fbank_constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(window ``[400]``, mel banks ``[128, 257]``), built on CPU and moved, cached per device."""
    window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float32)
    return window.to(device, dtype), _mel_banks().to(device, dtype)


def _frames(waveform: torch.Tensor) -> torch.Tensor:
    """Kaldi ``snip_edges`` framing of a 1-D waveform: ``[1 + (N - 400) // 160, 400]`` (a view)."""
    return waveform.unfold(0, FRAME_LENGTH, FRAME_SHIFT)


def _log_mel(frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[M, 400]`` -> log-mel ``[M, 128]``, each row independently, kaldi's operation order."""
    window, banks = _fbank_constants(frames.device, frames.dtype)
    frames = frames - frames.mean(dim=1, keepdim=True)  # per-frame DC removal
    previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)  # replicate-padded x[j-1]
    frames = (frames - PREEMPHASIS * previous) * window
    frames = F.pad(frames, (0, FFT_SIZE - FRAME_LENGTH))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    # MKL rounds a matmul of very few rows differently; padding to _MIN_MM_ROWS keeps every row's
    # result independent of how many clips share the call (fbank_batch == kaldi_fbank exactly).
    rows = power.shape[0]
    mel = torch.mm(F.pad(power, (0, 0, 0, max(0, _MIN_MM_ROWS - rows))), banks.T)[:rows]
    return mel.clamp_min(torch.finfo(frames.dtype).eps).log()
