"""The WavCaps / HTS-AT audio front end: loading, log-mel (torchlibrosa's conv-DFT layout), long clips.

Facts (docs/retrieval.md): ``librosa.load(path, sr=32000, mono=True)`` with the ``kaiser_best``
(resampy) resampler of librosa 0.9.2, channels averaged before resampling; a periodic-Hann DFT as two
``Conv1d`` kernels (513 bins, n_fft 1024, hop 320, center with reflect padding of 512), power 2, slaney
mel filters (64 bins, 50-14000 Hz) as a matrix ``melW``, then ``10*log10(max(x, 1e-10))`` (ref 1, no
top_db). The kernels and ``melW`` are stored in the released checkpoint and used as stored.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 32000
N_FFT = 1024
HOP_LENGTH = 320
N_MELS = 64
F_MIN, F_MAX = 50.0, 14000.0
AMIN = 1e-10


def load_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 waveform as the original loader gives it: ``librosa.load(sr, mono=True)``, kaiser_best."""
    import librosa

    try:
        wave, _ = librosa.load(str(path), sr=sample_rate, mono=True, res_type="kaiser_best")
    except Exception as e:  # unreadable / missing file, or resampy absent
        raise RuntimeError(f"cannot load audio file {path}: {type(e).__name__}: {e}") from None
    return np.asarray(wave, dtype=np.float32)


def dft_kernels(n_fft: int = N_FFT) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real, imag)`` Conv1d weights ``[n_fft//2+1, 1, n_fft]``: periodic Hann times the DFT rows."""
    from scipy.signal import get_window

    window = get_window("hann", n_fft, fftbins=True)
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    angle = 2 * np.pi * ((k * n) % n_fft) / n_fft
    real = (np.cos(angle) * window)[:, None, :]
    imag = (-np.sin(angle) * window)[:, None, :]
    return torch.tensor(real, dtype=torch.float32), torch.tensor(imag, dtype=torch.float32)


def mel_matrix(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
               f_min: float = F_MIN, f_max: float = F_MAX) -> torch.Tensor:
    """``melW`` ``[n_fft//2+1, n_mels]``: librosa's slaney mel filters, transposed."""
    import librosa

    return torch.tensor(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max).T,
                        dtype=torch.float32)


class LogMel(nn.Module):
    """Waveforms ``[B, L]`` -> log-mel ``[B, 1, T, n_mels]``, ``T = 1 + L // hop``."""

    def __init__(self, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, n_mels: int = N_MELS):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        bins = n_fft // 2 + 1
        self.register_buffer("conv_real", torch.zeros(bins, 1, n_fft))
        self.register_buffer("conv_imag", torch.zeros(bins, 1, n_fft))
        self.register_buffer("melW", torch.zeros(bins, n_mels))

    def reset_default_kernels(self, sample_rate: int = SAMPLE_RATE, f_min: float = F_MIN, f_max: float = F_MAX):
        """Fill the kernels as torchlibrosa builds them (for a model made without a checkpoint)."""
        real, imag = dft_kernels(self.n_fft)
        self.conv_real.copy_(real)
        self.conv_imag.copy_(imag)
        self.melW.copy_(mel_matrix(sample_rate, self.n_fft, self.melW.shape[1], f_min, f_max))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() != 2:
            raise ValueError(f"waveforms must be [batch, samples]; got shape {tuple(waves.shape)}")
        pad = self.n_fft // 2
        if waves.shape[1] <= pad:
            raise ValueError(f"clips must be longer than {pad} samples (reflect padding); got {waves.shape[1]}")
        x = nn.functional.pad(waves[:, None, :], (pad, pad), mode="reflect")
        real = nn.functional.conv1d(x, self.conv_real, stride=self.hop_length)
        imag = nn.functional.conv1d(x, self.conv_imag, stride=self.hop_length)
        power = (real**2 + imag**2).transpose(1, 2)[:, None]  # [B, 1, T, bins]
        mel = torch.matmul(power, self.melW)
        return 10.0 * torch.log10(torch.clamp(mel, min=AMIN))


def max_samples(frames: int = 1024, hop_length: int = HOP_LENGTH) -> int:
    """The longest waveform whose log-mel has at most ``frames`` frames (327,679 at 32 kHz / hop 320)."""
    return frames * hop_length - 1


def crop_samples(seconds: float = 10.0, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples kept by ``long_clips='crop'`` (WavCaps' ``max_length: 10`` length, from the start)."""
    return int(math.floor(seconds * sample_rate))
