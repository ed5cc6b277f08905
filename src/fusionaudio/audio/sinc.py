"""The reference's resampler: torchaudio 0.13's ``sinc_interp_hann`` (lowpass width 6, rolloff
0.99, kernel built in float32), with memory bounded for any rate pair.

torchaudio builds one dense kernel ``[new, 2 * width + orig]`` for the reduced ratio ``orig/new``
and runs a strided conv1d. For common rates the kernel is small (44.1 kHz -> 16 kHz: 160 x 475) and
this module does exactly that (bit-identical). For a rate such as 44,101 Hz the reduced ratio is
44101/16000 and the dense kernel would hold 706 M floats (2.8 GB; 14 GB peak in the conv), though
each output uses only the ~2 * width + 1 taps inside the sinc's support; the other taps are the
clamped window's ~1e-22. Those rate pairs run the *banded* path: the same kernel values, computed in
the same float32 order, stored as a band per phase and applied to chunks of outputs. It equals the
dense result to float rounding (<= 2.4e-7 measured on seven rate pairs) and needs memory
proportional to ``new * width``, not ``new * orig``. Kernels are cached in a cache bounded in bytes.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

# torchaudio 0.13 resample defaults used by the reference
_SINC_LOWPASS_WIDTH = 6
_SINC_ROLLOFF = 0.99
# dense (exact conv1d) kernels up to this many floats, else the banded path
_DENSE_KERNEL_ELEMENTS = 1 << 22  # 16 MB
_KERNEL_CACHE_BYTES = 64 << 20
_BAND_CHUNK_ELEMENTS = 1 << 22  # gathered taps per chunk of the banded path


class _KernelCache:
    """Least-recently-used cache of resampling kernels, bounded in bytes (not in entries); safe to
    share between threads (the server prepares requests' audio concurrently)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(value) -> int:
        return sum(v.numel() * v.element_size() for v in value if isinstance(v, torch.Tensor))

    def get(self, key, build):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = build()  # outside the lock: two threads may build the same kernel once each
        size = self._size(value)
        with self._lock:
            if size <= self.max_bytes and key not in self._items:
                self._items[key] = value
                self.bytes += size
                while self.bytes > self.max_bytes:
                    self.bytes -= self._size(self._items.popitem(last=False)[1])
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


_KERNELS = _KernelCache(_KERNEL_CACHE_BYTES)


def _sinc_width(orig: int, new: int) -> tuple[float, int]:
    base = min(orig, new) * _SINC_ROLLOFF
    return base, math.ceil(_SINC_LOWPASS_WIDTH * orig / base)


def _sinc_values(phase: torch.Tensor, tap: torch.Tensor, orig: int, new: int, base: float) -> torch.Tensor:
    """torchaudio 0.13's Hann-windowed sinc at (output phase, input tap), float32, in the
    reference's order of operations (a float64 kernel moves the fbank by up to 9e-3).
    ``phase`` and ``tap`` are float32 tensors that broadcast; ``tap`` runs over -width..width+orig-1."""
    t = (-phase) / new + tap / orig
    t = (t * base).clamp(-_SINC_LOWPASS_WIDTH, _SINC_LOWPASS_WIDTH)
    hann = torch.cos(t * math.pi / _SINC_LOWPASS_WIDTH / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=t.dtype), t.sin() / t)
    return sinc * (hann * (base / orig))


def _dense_kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """The reference's whole kernel ``[new, 1, 2 * width + orig]`` (CPU) and ``width``."""
    base, width = _sinc_width(orig, new)
    taps = torch.arange(-width, width + orig, dtype=torch.float32)[None, None]
    phases = torch.arange(0, new, dtype=torch.float32)[:, None, None]
    return _sinc_values(phases, taps, orig, new, base), width


def _banded_kernel(orig: int, new: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The same kernel stored as a band: for each phase p only the taps within the sinc's support
    (``start[p] .. start[p] + 2 * width + 1``); every tap outside it is the clamped window's ~1e-22.
    Returns ``(values [new, 2 * width + 2], start [new] (int64), width)``."""
    base, width = _sinc_width(orig, new)
    phases = torch.arange(new, dtype=torch.int64)
    start = (phases * orig) // new - width
    taps = start[:, None] + torch.arange(2 * width + 2)
    values = _sinc_values(phases.to(torch.float32)[:, None], taps.to(torch.float32), orig, new, base)
    inside = (taps >= -width) & (taps < width + orig)  # the dense kernel's extent
    return torch.where(inside, values, torch.zeros((), dtype=values.dtype)), start, width


def _resample_dense(waveform: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    kernel, width = _KERNELS.get(("dense", orig, new), lambda: _dense_kernel(orig, new))
    channels = waveform.shape[0]
    padded = F.pad(waveform, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(waveform.device), stride=orig)
    return out.transpose(1, 2).reshape(channels, -1)


def _resample_banded(waveform: torch.Tensor, orig: int, new: int, num_out: int) -> torch.Tensor:
    values, start, width = _KERNELS.get(("band", orig, new), lambda: _banded_kernel(orig, new))
    values, start = values.to(waveform.device), start.to(waveform.device)
    padded = F.pad(waveform, (width, width + orig))
    taps = torch.arange(values.shape[1], device=waveform.device)
    out = waveform.new_empty(waveform.shape[0], num_out)
    step = max(1, _BAND_CHUNK_ELEMENTS // (values.shape[1] * waveform.shape[0]))
    for first in range(0, num_out, step):
        j = torch.arange(first, min(first + step, num_out), device=waveform.device)
        phase = j % new
        index = ((j // new) * orig + start[phase] + width)[:, None] + taps  # [J, taps]
        out[:, first: first + len(j)] = (padded[:, index] * values[phase]).sum(-1)
    return out


def resample_sinc(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """torchaudio 0.13's ``sinc_interp_hann`` resampling with bounded memory.

    When the reference's dense kernel (``new x (2 * width + orig)`` floats for the reduced ratio)
    is small, it runs exactly as the reference does (one strided conv1d: bit-identical). For rate
    pairs whose reduced ratio is large (44,101 -> 16,000 Hz needs a 2.8 GB dense kernel), the same
    kernel values are applied as a band around each output (``2 * width + 2`` taps), in chunks:
    equal to the dense result to float rounding, with memory independent of the ratio.
    """
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    length = waveform.shape[1]
    # the reference rounds the output length in float32
    num_out = math.ceil(np.float32(new * length / orig))
    _, width = _sinc_width(orig, new)
    if new * (2 * width + orig) <= _DENSE_KERNEL_ELEMENTS:
        return _resample_dense(waveform, orig, new)[:, :num_out]
    return _resample_banded(waveform, orig, new, num_out)
