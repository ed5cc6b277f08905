"""Tests for the audio front end (fusionaudio.audio).

The reference fixtures (audio + the reference front end's fbank for it) live in tests/data/reference
(or $FUSIONAUDIO_REFERENCE_DIR): conftest.reference_dir().
"""

import hashlib
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fusionaudio import audio
from fusionaudio.audio import AudioError

from conftest import reference_dir

PAD_VALUE = (0.0 + 5.081) / 4.4849


REF = reference_dir()
needs_reference = pytest.mark.skipif(
    not (REF / "fbank_wave_16k.npy").is_file(),
    reason="reference fixtures not found (set FUSIONAUDIO_REFERENCE_DIR or restore tests/data/reference)",
)


def _resampled_cases():
    if not (REF / "resampled_cases.json").is_file():
        return []
    return json.loads((REF / "resampled_cases.json").read_text())["cases"]


def _diff(ours: torch.Tensor, reference: np.ndarray) -> tuple[float, float]:
    d = np.abs(ours.numpy().astype(np.float64) - reference.astype(np.float64))
    return float(d.max()), float(d.mean())


def _write(path: Path, samples: np.ndarray, rate: int, **kwargs) -> Path:
    sf.write(str(path), samples, rate, **kwargs)
    return path


def _tone(seconds: float, rate: int, freq: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


# --------------------------------------------------------------------------- reference parity


@needs_reference
def test_16k_fixture_matches_reference():
    fbank, info = audio.load_fbank(REF / "wave_16k.wav", return_info=True)
    reference = np.load(REF / "fbank_wave_16k.npy")
    assert fbank.shape == (1024, 128) and fbank.dtype == torch.float32
    max_diff, mean_diff = _diff(fbank, reference)
    # 0.0 where the reference was computed; MKL's FFT takes other code paths on other CPUs: on an AVX-512
    # Xeon (torch 2.13.0+cpu) 747 of 131,072 values differ by > 1e-5, at most 2.5e-4 (a near-silent bin),
    # mean 6.1e-7. A wrong window, mel matrix or normalisation moves the mean by > 1e-3.
    assert max_diff <= 1e-3 and mean_diff <= 1e-6, (max_diff, mean_diff)
    assert (info.sample_rate, info.channels, info.num_frames, info.truncated) == (16000, 1, 998, False)
    assert info.duration_s == pytest.approx(10.0)


@needs_reference
@pytest.mark.parametrize("case", _resampled_cases(), ids=lambda c: c["file"])
def test_resampled_fixtures_match_reference(case):
    waveform, rate = audio.read_audio(REF / case["file"])
    # a decoder difference must be told apart from a front-end difference
    digest = hashlib.sha256(waveform.numpy().tobytes(order="C")).hexdigest()
    assert digest == case["decoded_float32_sha256"], "soundfile decodes this file differently"
    assert waveform.shape == (case["channels"], case["samples"]) and rate == case["sample_rate"]

    fbank, info = audio.load_fbank(REF / case["file"], return_info=True)
    max_diff, mean_diff = _diff(fbank, np.load(REF / case["fbank"]))
    assert max_diff <= 2e-3 and mean_diff <= 1e-5, (max_diff, mean_diff)
    assert info.num_frames == case["real_frames"]
    assert (info.channels, info.sample_rate) == (case["channels"], case["sample_rate"])


@needs_reference
def test_padding_rows_are_normalised_zeros():
    fbank = audio.load_fbank(REF / "wave_16k.wav")
    reference = np.load(REF / "fbank_wave_16k.npy")
    assert torch.all(fbank[998:] == torch.from_numpy(reference[998:]))
    assert torch.allclose(fbank[998:], torch.full((26, 128), PAD_VALUE), atol=1e-6, rtol=0)
    assert not torch.allclose(fbank[997], torch.full((128,), PAD_VALUE), atol=1e-3)
    raw = audio.waveform_to_fbank(audio.read_audio(REF / "wave_16k.wav")[0], 16000, normalize=False)
    assert torch.all(raw[998:] == 0) and torch.all(raw[:998] != 0)


@needs_reference
def test_downmix_differs_from_reference_mode_on_stereo():
    path = REF / "speech_44k_stereo.flac"
    reference_mode = audio.load_fbank(path)
    downmix = audio.load_fbank(path, channel_mode="downmix")
    assert (downmix - reference_mode).abs().max() > 0.5
    # the downmix is the average of the resampled channels
    waveform, rate = audio.read_audio(path)
    mixed = audio.waveform_to_fbank(audio.resample(waveform, rate).mean(dim=0), 16000)
    assert torch.equal(downmix, mixed)


def test_reference_mode_is_channel0_minus_global_mean():
    x = torch.from_numpy(_tone(1.0, 16000, channels=2).T).float()
    x[1] += 0.3  # a DC offset on channel 1 only moves the global mean
    fbank = audio.waveform_to_fbank(x, 16000, normalize=False)
    expected = audio.kaldi_fbank(x[0] - x.mean())
    assert torch.equal(fbank[: expected.shape[0]], expected)
    assert not torch.equal(fbank[: expected.shape[0]], audio.kaldi_fbank(x[0] - x[0].mean()))


@needs_reference
@pytest.mark.parametrize("method", ["soxr", "polyphase"])
def test_alternative_resamplers_run_and_differ(method):
    path = REF / "speech_22k.wav"
    sinc = audio.load_fbank(path)
    other = audio.load_fbank(path, resampler=method)
    diff = (other - sinc).abs()
    assert diff.max() > 0.05  # a genuinely different resampler ...
    assert diff.mean() < 0.05  # ... of the same audio


@pytest.mark.slow  # librosa's first import in a fresh venv compiles numba caches (~30 s)
def test_librosa_resampler_option():
    x = torch.from_numpy(_tone(0.5, 22050)).float()[None]
    y = audio.resample(x, 22050, 16000, method="librosa")
    assert y.shape == (1, 8000) and y.dtype == torch.float32
    # librosa's default res_type is soxr_hq
    assert torch.allclose(y, audio.resample(x, 22050, 16000, method="soxr"), atol=1e-6)


# --------------------------------------------------------------------------- batching


@needs_reference
def test_load_fbank_batch_equals_per_file(tmp_path):
    short = _write(tmp_path / "short.wav", _tone(0.03, 16000), 16000)  # 480 samples: one frame
    long = _write(tmp_path / "long.wav", _tone(11.0, 22050, channels=2), 22050)
    paths = [REF / "wave_16k.wav", REF / "speech_22k.wav", short, REF / "speech_44k_stereo.flac", long]
    batch, infos = audio.load_fbank_batch(paths)
    assert batch.shape == (5, 1024, 128)
    for row, info, path in zip(batch, infos, paths):
        single, single_info = audio.load_fbank(path, return_info=True)
        assert torch.equal(row, single), path
        assert info == single_info
    assert [i.num_frames for i in infos][2] == 1 and infos[4].truncated


def test_fbank_batch_equals_kaldi_fbank_per_clip():
    gen = torch.Generator().manual_seed(0)
    clips = [torch.rand(n, generator=gen) - 0.5 for n in (400, 559, 1000, 48_000, 200_000)]
    batch = audio.fbank_batch(clips)
    assert batch.shape == (5, 1024, 128)
    for row, clip in zip(batch, clips):
        raw = audio.kaldi_fbank(clip)
        assert raw.shape == (1 + (clip.numel() - 400) // 160, 128)
        padded = torch.nn.functional.pad(raw, (0, 0, 0, max(0, 1024 - raw.shape[0])))[:1024]
        expected = (padded + 5.081) / 4.4849
        assert torch.equal(row, expected)
    assert audio.fbank_batch([]).shape == (0, 1024, 128)
    with pytest.raises(AudioError, match="clip 1"):
        audio.fbank_batch([clips[0], torch.zeros(399)])


def test_load_fbank_batch_collects_errors(tmp_path):
    good = _write(tmp_path / "good.wav", _tone(1.0, 16000), 16000)
    tiny = _write(tmp_path / "tiny.wav", np.zeros(300), 16000)
    missing = tmp_path / "missing.wav"
    paths = [missing, good, tiny, good]
    fbanks, infos, failures = audio.load_fbank_batch(paths, errors="collect")
    assert fbanks.shape == (2, 1024, 128)
    assert [i.path for i in infos] == [str(good), str(good)]
    assert sorted(failures) == [0, 2]
    assert failures[0].path == str(missing) and failures[2].path == str(tiny)
    assert torch.equal(fbanks[0], audio.load_fbank(good))
    with pytest.raises(AudioError, match="missing.wav"):
        audio.load_fbank_batch(paths)
    with pytest.raises(ValueError, match="errors"):
        audio.load_fbank_batch(paths, errors="ignore")
    with pytest.raises(AudioError, match="resampler"):  # a wrong option is not collected
        audio.load_fbank_batch(paths, errors="collect", resampler="magic")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fbank_batch_on_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    clips = [torch.rand(n, generator=gen) - 0.5 for n in (16_000, 160_000)]
    cpu = audio.fbank_batch(clips)
    gpu = audio.fbank_batch(clips, device="cuda")
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- shapes and options


def test_truncation_of_a_long_clip(caplog):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 12 * 16000).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="fusionaudio.audio"):
        fbank, info = audio.waveform_to_fbank(x, 16000, return_info=True)
    assert fbank.shape == (1024, 128)
    assert info.truncated and info.num_frames == 1 + (12 * 16000 - 400) // 160 and info.path is None
    assert info.summary() == "12.00 s, 1 ch, 16000 Hz, truncated to 10.24 s"
    assert any("truncated" in r.getMessage() for r in caplog.records)
    raw = audio.kaldi_fbank(torch.from_numpy(x) - torch.from_numpy(x).mean())
    assert torch.equal(fbank, (raw[:1024] + 5.081) / 4.4849)


def test_short_clip_is_not_truncated_and_summary():
    fbank, info = audio.waveform_to_fbank(_tone(3.2, 44100, channels=2).T, 44100, return_info=True)
    assert fbank.shape == (1024, 128) and not info.truncated
    assert info.summary() == "3.20 s, 2 ch, 44100 Hz"


def test_8khz_input_is_resampled():
    x = _tone(2.0, 8000)
    fbank, info = audio.waveform_to_fbank(x, 8000, return_info=True)
    assert fbank.shape == (1024, 128) and torch.isfinite(fbank).all()
    assert info.num_frames == 1 + (32000 - 400) // 160 and info.sample_rate == 8000
    # the sinc resampler reproduces the tone at 16 kHz (away from the edges)
    y = audio.resample(torch.from_numpy(x).float()[None], 8000)
    assert y.shape == (1, 32000)
    expected = torch.from_numpy(_tone(2.0, 16000)).float()
    assert (y[0, 200:-200] - expected[200:-200]).abs().max() < 1e-3


def test_numpy_and_torch_inputs_agree():
    x = _tone(1.0, 22050, channels=2).T  # float64 numpy [2, N]
    from_numpy = audio.waveform_to_fbank(x, 22050)
    from_torch = audio.waveform_to_fbank(torch.from_numpy(x).float(), 22050)
    assert torch.equal(from_numpy, from_torch)


def test_resample_is_identity_at_16k():
    x = torch.randn(2, 1000)
    assert audio.resample(x, 16000) is x


def test_target_frames_option():
    fbank = audio.waveform_to_fbank(_tone(1.0, 16000), 16000, target_frames=50)
    assert fbank.shape == (50, 128)


@pytest.mark.parametrize("fmt,subtype", [("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS")])
def test_compressed_formats_round_trip(tmp_path, fmt, subtype):
    x = _tone(2.0, 16000, freq=1000.0)
    wav = _write(tmp_path / "tone.wav", x, 16000)
    compressed = _write(tmp_path / f"tone.{fmt.lower()}", x, 16000, format=fmt, subtype=subtype)
    ours, info = audio.load_fbank(compressed, return_info=True)
    lossless = audio.load_fbank(wav)
    assert ours.shape == (1024, 128) and info.sample_rate == 16000
    assert abs(info.duration_s - 2.0) < 0.1
    # the tone lands in the same mel bin
    frames = slice(20, 150)
    assert ours[frames].mean(0).argmax() == lossless[frames].mean(0).argmax()


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav.*not found"):
        audio.load_fbank(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="corrupt.wav.*cannot decode"):
        audio.load_fbank(path)


def test_empty_wav(tmp_path):
    path = _write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        audio.load_fbank(path)


def test_wav_shorter_than_one_frame(tmp_path):
    path = _write(tmp_path / "short.wav", np.full(300, 0.1), 16000)
    with pytest.raises(AudioError, match="short.wav.*too short"):
        audio.load_fbank(path)
    # also after resampling: 250 samples at 8 kHz become 500 >= 400 at 16 kHz, 150 do not
    audio.waveform_to_fbank(np.full(250, 0.1), 8000)
    with pytest.raises(AudioError, match="too short"):
        audio.waveform_to_fbank(np.full(150, 0.1), 8000)


def test_nan_samples_in_waveform():
    x = _tone(1.0, 16000)
    x[100] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        audio.waveform_to_fbank(x, 16000)


def test_float_wav_with_inf(tmp_path):
    x = _tone(1.0, 16000).astype(np.float32)
    x[5000] = np.inf
    path = _write(tmp_path / "inf.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="inf.wav.*non-finite"):
        audio.load_fbank(path)


def test_unsupported_options_and_inputs():
    x = _tone(1.0, 16000)
    with pytest.raises(AudioError, match="sinc, soxr, librosa"):
        audio.waveform_to_fbank(x, 22050, resampler="magic")
    with pytest.raises(AudioError, match="reference, downmix"):
        audio.waveform_to_fbank(x, 16000, channel_mode="left")
    with pytest.raises(AudioError, match="float"):
        audio.waveform_to_fbank((x * 32767).astype(np.int16), 16000)
    with pytest.raises(AudioError, match="shape"):
        audio.waveform_to_fbank(np.zeros((1, 2, 16000)), 16000)
    with pytest.raises(AudioError, match="sample rate"):
        audio.waveform_to_fbank(x, 0)
    with pytest.raises(AudioError, match="at least 400"):
        audio.kaldi_fbank(torch.zeros(399))


def test_audio_error_keeps_path_through_pickle():
    err = AudioError("audio is empty (no samples)", "/data/a.wav")
    assert str(err) == "/data/a.wav: audio is empty (no samples)" and isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.path == "/data/a.wav" and str(again) == str(err)


@pytest.mark.parametrize("amplitude", [1e19, 3e38])
def test_huge_float_samples_are_an_error_not_inf_features(tmp_path, amplitude):
    # finite samples whose power spectrum overflows float32: the reference gives inf features
    x = (amplitude * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    path = _write(tmp_path / "loud.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="features are not finite") as err:
        audio.load_fbank(path)
    assert err.value.path == str(path)
    fbanks, infos, failures = audio.load_fbank_batch([path, path], errors="collect")
    assert fbanks.shape[0] == 0 and sorted(failures) == [0, 1]


def test_loud_but_representable_samples_still_work():
    x = torch.from_numpy((1e12 * np.sin(np.arange(16000) / 5.0)).astype(np.float32))
    fb = audio.waveform_to_fbank(x, 16000)
    assert torch.isfinite(fb).all()


def test_fbank_batch_refuses_non_finite_features():
    with pytest.raises(AudioError, match=r"clip\(s\) \[1\]: features are not finite"):
        audio.fbank_batch([torch.zeros(16000), torch.full((16000,), 1e19) * torch.randn(16000).sign()])


def test_prepare_waveform_then_fbank_batch_equals_load_fbank(tmp_path):
    path = _write(tmp_path / "t.wav", _tone(1.5, 22050), 22050)
    mono, info = audio.prepare_waveform(path)
    assert mono.dim() == 1 and info.sample_rate == 22050 and info.path == str(path)
    assert torch.equal(audio.fbank_batch([mono])[0], audio.load_fbank(path))
