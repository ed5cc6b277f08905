"""Audio front end: decode, resample to 16 kHz, kaldi log-mel filterbank, pad, normalise.

This reproduces the reference (GAMA / FusionAudio) pipeline, which was written with torchaudio:

1. decode to float32 ``[channels, samples]`` in [-1, 1];
2. if the rate is not 16 kHz, resample every channel with torchaudio 0.13's Hann-windowed sinc
   (lowpass filter width 6, rolloff 0.99), the kernel built in float32;
3. subtract the mean over all channels and samples, keep channel 0;
4. kaldi fbank (``torchaudio.compliance.kaldi.fbank`` with ``htk_compat=True, use_energy=False,
   window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10``);
5. zero-pad or truncate to 1024 frames (10.24 s) and normalise with ``(fbank + 5.081) / 4.4849``.

Everything is plain torch (torchaudio is not needed) and follows torchaudio's order of operations,
so on CPU the result matches the reference bit for bit (the kaldi fbank lives in :mod:`fusionaudio.audio.kaldi`,
the sinc resampler in :mod:`fusionaudio.audio.sinc`).
:func:`fbank_batch` / :func:`load_fbank_batch` compute many clips in one pass on any device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from fusionaudio.audio.kaldi import (  # noqa: F401 - the constants are part of this module's interface
    FFT_SIZE, FRAME_LENGTH, FRAME_SHIFT, MEL_LOW_HZ, NUM_MEL_BINS, PREEMPHASIS, TARGET_SAMPLE_RATE,
    _frames, _log_mel,
)
from fusionaudio.audio.decode import AudioError, PathLike, read_audio
from fusionaudio.audio.resample import RESAMPLERS, check_rate, resample

logger = logging.getLogger(__name__)

TARGET_FRAMES = 1024  # 10.24 s at a 10 ms shift
# The reference normalises with (fbank + 5.081) / 4.4849, i.e. (fbank - mean) / std with:
FBANK_NORM_MEAN = -5.081
FBANK_NORM_STD = 4.4849

CHANNEL_MODES = ("reference", "downmix")

# rows of frames per fbank block on CPU (fbank_batch); larger blocks fall out of cache
_CPU_BLOCK_ROWS = 1024
# Below this peak the float32 power spectrum cannot overflow (|X| <= 1600 * peak over a 400-sample
# frame; 257 bins); above it, the clip's fbank is computed and checked before it is accepted.
_SAFE_PEAK = 1e14


@dataclass
class AudioInfo:
    """What the front end saw of one clip.

    ``duration_s``, ``channels`` and ``sample_rate`` describe the input as decoded; ``num_frames``
    is the number of real fbank frames before padding or truncation; ``truncated`` says whether
    frames beyond the target length were dropped.
    """

    path: str | None
    duration_s: float
    channels: int
    sample_rate: int
    num_frames: int
    truncated: bool
    target_frames: int = TARGET_FRAMES

    def to_dict(self) -> dict:
        """What infer and quick_inference record per clip (JSON), with the one-line summary."""
        from dataclasses import asdict

        return {**asdict(self), "summary": self.summary()}

    def api_dict(self) -> dict:
        """What the API returns per clip: duration (rounded to ms), channels, rate, truncation, summary."""
        return {"duration_s": round(self.duration_s, 3), "channels": self.channels, "sample_rate": self.sample_rate,
                "truncated": self.truncated, "summary": self.summary()}

    def summary(self) -> str:
        """One line, e.g. ``"12.00 s, 2 ch, 44100 Hz, truncated to 10.24 s"``."""
        text = f"{self.duration_s:.2f} s, {self.channels} ch, {self.sample_rate} Hz"
        if self.truncated:
            text += f", truncated to {self.target_frames * FRAME_SHIFT / TARGET_SAMPLE_RATE:.2f} s"
        return text


# --------------------------------------------------------------------------- kaldi fbank


def kaldi_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """Raw kaldi log-mel filterbank of a 1-D 16 kHz float waveform on any device.

    Equals ``torchaudio.compliance.kaldi.fbank(w[None], htk_compat=True, use_energy=False,
    window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)``: 25 ms frames every
    10 ms (snip_edges), per-frame DC removal, pre-emphasis 0.97, symmetric Hann window, 512-point
    power spectrum, 128 mel bins from 20 Hz to 8 kHz, log floored at float32 eps. No padding, no
    normalisation: returns ``[1 + (N - 400) // 160, 128]``. The caller removes the clip's mean.
    """
    if waveform.dim() != 1 or waveform.shape[0] < FRAME_LENGTH:
        raise AudioError(
            f"kaldi_fbank needs a 1-D waveform of at least {FRAME_LENGTH} samples, "
            f"got shape {tuple(waveform.shape)}"
        )
    return _log_mel(_frames(waveform))


def _pad_and_normalize(fbank: torch.Tensor, target_frames: int, normalize: bool) -> torch.Tensor:
    """Zero-pad or truncate the time axis (dim -2) to ``target_frames``, then normalise."""
    missing = target_frames - fbank.shape[-2]
    fbank = F.pad(fbank, (0, 0, 0, missing)) if missing > 0 else fbank[..., :target_frames, :]
    return (fbank - FBANK_NORM_MEAN) / FBANK_NORM_STD if normalize else fbank


def _num_frames(num_samples: int) -> int:
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


# --------------------------------------------------------------------------- waveform -> fbank


def _check_options(resampler: str, channel_mode: str) -> None:
    if resampler not in RESAMPLERS:
        raise AudioError(f"unknown resampler {resampler!r}; choose one of {', '.join(RESAMPLERS)}")
    if channel_mode not in CHANNEL_MODES:
        raise AudioError(f"unknown channel_mode {channel_mode!r}; choose one of {', '.join(CHANNEL_MODES)}")


def _check_features_finite(mono: torch.Tensor, path: str | None) -> None:
    """Refuse a clip whose fbank would not be finite (samples so large that the float32 power
    spectrum overflows: a float file at amplitude ~1e19 gives thousands of inf features)."""
    head = mono[: (TARGET_FRAMES - 1) * FRAME_SHIFT + FRAME_LENGTH]  # what the kept frames see
    peak = float(head.abs().max())
    if peak <= _SAFE_PEAK:
        return
    bad = int((~torch.isfinite(kaldi_fbank(head))).sum())
    if bad:
        raise AudioError(f"features are not finite: {bad} inf/NaN fbank values (samples reach "
                         f"{peak:.3g}; expected floats in [-1, 1])", path)


def _prepare(
    waveform, sample_rate, resampler: str, channel_mode: str, path: str | None,
    device=None, target_frames: int = TARGET_FRAMES,
) -> tuple[torch.Tensor, AudioInfo]:
    """Validate, resample, reduce channels and remove the mean: the 16 kHz mono signal the kaldi
    fbank sees, plus the clip's :class:`AudioInfo`. Logs (INFO) when the clip will be truncated."""
    _check_options(resampler, channel_mode)
    wave = torch.as_tensor(waveform)
    if not wave.is_floating_point():
        raise AudioError(f"expected a float waveform in [-1, 1], got dtype {wave.dtype}", path)
    if wave.dim() == 1:
        wave = wave[None]
    if wave.dim() != 2:
        raise AudioError(
            f"expected a waveform of shape [samples] or [channels, samples], got {tuple(wave.shape)}", path
        )
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate!r}", path)
    sample_rate = int(sample_rate)
    check_rate(sample_rate, path)
    channels, length = wave.shape
    if length == 0 or channels == 0:
        raise AudioError("audio is empty (no samples)", path)
    if not torch.isfinite(wave).all():
        raise AudioError("audio contains non-finite samples (NaN or inf)", path)

    wave = wave.to(device=device, dtype=torch.float32)
    wave = resample(wave, sample_rate, TARGET_SAMPLE_RATE, method=resampler)
    if wave.shape[1] < FRAME_LENGTH:
        raise AudioError(
            f"audio too short: {length} samples at {sample_rate} Hz give {wave.shape[1]} samples at "
            f"16 kHz, fewer than one {FRAME_LENGTH}-sample (25 ms) frame",
            path,
        )
    if channel_mode == "reference":  # one mean over every channel and sample, then channel 0
        mono = wave[0] - wave.mean()
    else:
        mixed = wave.mean(dim=0)
        mono = mixed - mixed.mean()
    _check_features_finite(mono, path)

    num_frames = _num_frames(mono.shape[0])
    info = AudioInfo(
        path=path,
        duration_s=length / sample_rate,
        channels=channels,
        sample_rate=sample_rate,
        num_frames=num_frames,
        truncated=num_frames > target_frames,
        target_frames=target_frames,
    )
    if info.truncated:
        logger.info("%s: %s (%d frames, kept %d)", path or "waveform", info.summary(),
                    num_frames, target_frames)
    return mono, info


def waveform_to_fbank(
    waveform,
    sample_rate: int,
    *,
    resampler: str = "sinc",
    channel_mode: str = "reference",
    target_frames: int = TARGET_FRAMES,
    normalize: bool = True,
    return_info: bool = False,
):
    """Reference front end for an in-memory waveform.

    ``waveform``: float samples in [-1, 1], shape ``[samples]`` or ``[channels, samples]``, numpy
    or torch (any device; the result stays there). ``channel_mode="reference"`` subtracts one mean
    over all channels and keeps channel 0 (what the reference does); ``"downmix"`` averages the
    channels first. ``resampler``: see :func:`resample`.

    Returns the fbank ``[target_frames, 128]`` float32 (normalised unless ``normalize=False``),
    or ``(fbank, AudioInfo)`` with ``return_info=True``. Raises :class:`AudioError`.
    """
    return _waveform_to_fbank(waveform, sample_rate, resampler, channel_mode, target_frames,
                              normalize, return_info, path=None)


def _waveform_to_fbank(waveform, sample_rate, resampler, channel_mode, target_frames, normalize,
                       return_info, path):
    mono, info = _prepare(waveform, sample_rate, resampler, channel_mode, path,
                          target_frames=target_frames)
    fbank = _pad_and_normalize(kaldi_fbank(mono), target_frames, normalize)
    return (fbank, info) if return_info else fbank


def load_fbank(
    path: PathLike, *, resampler: str = "sinc", channel_mode: str = "reference", return_info: bool = False
):
    """Decode ``path`` and run the reference front end: ``[1024, 128]`` float32 normalised fbank
    (or ``(fbank, AudioInfo)``). Raises :class:`AudioError` naming the file on any problem."""
    waveform, sample_rate = read_audio(path)
    return _waveform_to_fbank(waveform, sample_rate, resampler, channel_mode, TARGET_FRAMES,
                              True, return_info, path=str(path))


def prepare_waveform(path: PathLike, *, resampler: str = "sinc", channel_mode: str = "reference"):
    """Decode ``path`` and run the front end up to the fbank: ``(mono, AudioInfo)`` where ``mono``
    is the 16 kHz, channel-reduced, mean-removed 1-D signal that :func:`fbank_batch` takes (checked:
    its features are finite). Raises :class:`AudioError` naming the file."""
    waveform, sample_rate = read_audio(path)
    return _prepare(waveform, sample_rate, resampler, channel_mode, str(path))


# --------------------------------------------------------------------------- batched


def fbank_batch(waveforms: Sequence[torch.Tensor], device=None) -> torch.Tensor:
    """Normalised fbanks ``[B, 1024, 128]`` for B prepared clips, computed together.

    Each waveform is 1-D, 16 kHz, already channel-reduced and mean-subtracted (what
    :func:`waveform_to_fbank` feeds :func:`kaldi_fbank`), at least 400 samples. Every clip's first
    1024 frames are stacked into one frame matrix; on an accelerator one rfft and one matmul
    serve them all, on CPU the matrix is processed in cache-sized blocks of rows (one giant pass
    is several times slower there). ``device`` defaults to the first waveform's. Rows are
    computed independently, so on CPU the result equals the per-clip path exactly.
    """
    device = torch.device(device) if device is not None else (
        waveforms[0].device if len(waveforms) else torch.device("cpu"))
    frames = []
    for i, wave in enumerate(waveforms):
        if wave.dim() != 1 or wave.shape[0] < FRAME_LENGTH:
            raise AudioError(f"clip {i}: need a 1-D waveform of at least {FRAME_LENGTH} samples, "
                             f"got shape {tuple(wave.shape)}")
        frames.append(_frames(wave.to(device, torch.float32))[:TARGET_FRAMES])
    out = torch.zeros(len(frames), TARGET_FRAMES, NUM_MEL_BINS, device=device)
    if frames:
        stacked = torch.cat(frames)
        block = _CPU_BLOCK_ROWS if device.type == "cpu" else stacked.shape[0]
        log_mel = torch.cat([_log_mel(rows) for rows in stacked.split(block)])
        for row, clip in zip(out, log_mel.split([f.shape[0] for f in frames])):
            row[: clip.shape[0]] = clip
        finite = torch.isfinite(out).flatten(1).all(dim=1)
        if not bool(finite.all()):  # unreachable for clips prepared by this module (_prepare checks)
            bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
            raise AudioError(f"clip(s) {bad}: features are not finite (inf/NaN fbank values)")
    return _pad_and_normalize(out, TARGET_FRAMES, normalize=True)


def load_fbank_batch(
    paths: Sequence[PathLike],
    *,
    device=None,
    resampler: str = "sinc",
    channel_mode: str = "reference",
    errors: str = "raise",
):
    """Decode, resample and fbank many files; the fbank runs as one batched pass on ``device``.

    Decoding runs on CPU; resampling and the fbank run on ``device`` (default CPU). Bad options
    (``resampler``, ``channel_mode``, ``errors``) always raise.

    - ``errors="raise"`` (default): returns ``(fbanks [B, 1024, 128], infos)``, one row and one
      :class:`AudioInfo` per path, in order; the first bad file raises its :class:`AudioError`.
    - ``errors="collect"``: returns ``(fbanks [G, 1024, 128], infos, failures)`` where the G rows and
      infos are the good files in input order (``info.path`` names each) and ``failures`` maps the
      index in ``paths`` of each bad file to its :class:`AudioError`. Nothing is raised for bad
      audio, so a batch job can record them and keep the rest.
    """
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    _check_options(resampler, channel_mode)  # a wrong option is not bad audio: always raised
    monos, infos, failures = [], [], {}
    for index, path in enumerate(paths):
        try:
            waveform, sample_rate = read_audio(path)
            mono, info = _prepare(waveform, sample_rate, resampler, channel_mode, str(path), device)
        except AudioError as exc:
            if errors == "raise":
                raise
            failures[index] = exc
            continue
        monos.append(mono)
        infos.append(info)
    fbanks = fbank_batch(monos, device=device)
    return (fbanks, infos) if errors == "raise" else (fbanks, infos, failures)
