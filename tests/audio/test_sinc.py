"""Tests for the bounded-memory sinc resampler (fusionaudio.audio.sinc) and the accepted rate range."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from fusionaudio import audio
from fusionaudio.audio import sinc
from fusionaudio.audio import AudioError


def _num_out(length: int, orig: int, new: int) -> int:
    return math.ceil(np.float32(new * length / orig))


@pytest.mark.parametrize("orig_sr,new_sr", [(22050, 16000), (44100, 16000), (8000, 16000), (4001, 3000),
                                            (1601, 1000), (192000, 16000)])
def test_banded_path_equals_the_reference_dense_conv(orig_sr, new_sr):
    torch.manual_seed(0)
    x = 0.3 * torch.randn(2, int(1.3 * orig_sr))
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    n = _num_out(x.shape[1], orig, new)
    dense = sinc._resample_dense(x, orig, new)[:, :n]
    banded = sinc._resample_banded(x, orig, new, n)
    assert banded.shape == dense.shape == (2, n)
    assert float((banded - dense).abs().max()) < 1e-6


def test_banded_kernel_holds_every_non_negligible_tap():
    # the dense kernel's taps outside the band are the clamped window's ~1e-22, nothing more
    orig, new = 1601, 1000
    dense, width = sinc._dense_kernel(orig, new)
    values, start, _ = sinc._banded_kernel(orig, new)
    dense = dense[:, 0].clone()
    for p in (0, 1, 499, 999):
        first = int(start[p]) + width
        band = dense[p, max(first, 0): first + values.shape[1]].clone()
        dense[p, max(first, 0): first + values.shape[1]] = 0
        assert torch.equal(band, values[p, max(0, -first): max(0, -first) + band.shape[0]])
    assert float(dense[[0, 1, 499, 999]].abs().max()) < 1e-20


def test_odd_rate_uses_the_band_and_small_memory(monkeypatch):
    # 44,101 Hz: the dense kernel would be 706 M floats; the band is 16000 x 36
    built = []
    real = sinc._dense_kernel
    monkeypatch.setattr(sinc, "_dense_kernel", lambda o, n: built.append((o, n)) or real(o, n))
    sinc._KERNELS.clear()
    x = 0.1 * torch.randn(1, 44101)
    y = audio.resample(x, 44101)
    assert y.shape == (1, 16000) and torch.isfinite(y).all()
    assert built == []  # the dense kernel was never built
    values, _, _ = sinc._KERNELS.get(("band", 44101, 16000), lambda: pytest.fail("not cached"))
    assert values.numel() <= 16000 * 40


def test_odd_rate_preserves_a_tone():
    rate = 44101
    t = np.arange(rate) / rate
    x = torch.from_numpy(np.sin(2 * np.pi * 1000 * t).astype(np.float32))[None]
    y = audio.resample(x, rate)[0].numpy()
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(y[200:-200] - expected[200:-200]).max() < 1e-3


def test_kernel_cache_is_bounded_in_bytes(monkeypatch):
    monkeypatch.setattr(sinc, "_KERNELS", sinc._KernelCache(max_bytes=300_000))
    for rate in (22050, 44100, 11025, 32000, 48000, 24000, 12000):
        audio.resample(0.1 * torch.randn(1, 4000), rate)
        assert sinc._KERNELS.bytes <= 300_000
    assert 0 < len(sinc._KERNELS._items) < 7  # older kernels were evicted


@pytest.mark.parametrize("rate", [999, 768_001, 2_147_483_647])
def test_rates_outside_the_range_are_refused_naming_the_file(tmp_path, rate):
    path = tmp_path / "lying.wav"
    sf.write(str(path), np.zeros(8192, np.float32), 16000, subtype="FLOAT")
    with open(path, "r+b") as f:  # the header lies about the rate
        f.seek(24)
        f.write(rate.to_bytes(4, "little"))
    with pytest.raises(AudioError, match="outside the supported range") as err:
        audio.load_fbank(path)
    assert err.value.path == str(path)
    with pytest.raises(AudioError, match="outside the supported range"):
        audio.resample(torch.zeros(1, 100), rate)


@pytest.mark.parametrize("rate", [audio.MIN_SAMPLE_RATE, audio.MAX_SAMPLE_RATE])
def test_the_range_limits_are_accepted(rate):
    fb = audio.waveform_to_fbank(0.1 * torch.randn(rate // 2), rate)
    assert fb.shape == (1024, 128) and torch.isfinite(fb).all()


def test_kernel_cache_accounting_holds_under_threads():
    from concurrent.futures import ThreadPoolExecutor

    cache = sinc._KernelCache(max_bytes=200_000)
    pairs = [(o, n) for o in (441, 147, 160, 3, 12) for n in (160, 320, 1, 2)]

    def use(i):
        o, n = pairs[i % len(pairs)]
        return cache.get(("band", o, n), lambda: sinc._banded_kernel(o, n))[0].shape

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(use, range(400)))
    assert cache.bytes == sum(cache._size(v) for v in cache._items.values()) <= 200_000
