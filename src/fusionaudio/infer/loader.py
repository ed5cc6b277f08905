"""The input pipeline: a ``torch.utils.data.DataLoader`` whose worker processes read, decode and
resample the audio of the next batches while the current one generates.

Workers return, per record, the prepared 16 kHz mono signal (GAMA; the fbank itself is computed in
one :func:`fusionaudio.audio.fbank_batch` call on the model's device) or the decoded waveform
(AudSemThinker), or that record's error. Any exception while preparing one record's audio is that
record's error (never a dropped, substituted or reordered record); batches come back in the order
they were planned.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

from fusionaudio.infer.records import Item

log = logging.getLogger("fusionaudio.infer")

#: Samples of a 16 kHz signal that the first 1024 fbank frames use (400 + 1023 * 160).
FBANK_SAMPLES = 400 + 1023 * 160
#: AudSemThinker's clips are cut to 30 s (``fusionaudio.audsem.inference.load_audio``'s default).
AUDSEM_MAX_SECONDS = 30.0


@dataclass
class Prepared:
    """One record's prepared input: ``audio`` (a tensor / array, None for text only), ``info`` (the
    output's ``audio_info``), or ``error`` (a message naming the file and the problem)."""

    audio: object = None
    info: dict | None = None
    error: str | None = None


def describe_failure(exc: BaseException, path) -> str:
    """One line for a record's failure: AudioErrors as they are (they name the file), anything else
    with its type and the file."""
    from fusionaudio.audio import AudioError

    if isinstance(exc, AudioError):
        return str(exc)
    text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return f"{path}: {type(exc).__name__} while preparing the audio" + (f": {text}" if text else "")


def prepare_gama(path, resampler: str = "sinc") -> Prepared:
    """Decode + resample + channel-reduce + mean-remove one file (the reference front end up to the
    fbank), the signal cut to what the first 1024 frames use."""
    from fusionaudio import audio as A

    mono, info = A.prepare_waveform(path, resampler=resampler)
    return Prepared(mono[:FBANK_SAMPLES].contiguous(), info.to_dict())


def prepare_audsem(path, resampler: str = "sinc", sampling_rate: int = 16000) -> Prepared:
    """Decode + check + resample one file for AudSemThinker (what its processor is fed)."""
    from fusionaudio.audio import read_audio
    from fusionaudio.audsem.processor import waveform_to_mono

    wave, sr = read_audio(path)  # decoded once: its info and the processor's input
    duration, channels = wave.shape[-1] / sr, int(wave.shape[0])
    mono = waveform_to_mono(wave, sr, sampling_rate, resampler=resampler, path=path)
    info = {"path": str(path), "duration_s": duration, "channels": channels, "sample_rate": sr,
            "truncated": duration > AUDSEM_MAX_SECONDS,
            "summary": f"{duration:.2f} s, {channels} ch, {sr} Hz" + (
                f", truncated to {AUDSEM_MAX_SECONDS:.0f} s" if duration > AUDSEM_MAX_SECONDS else "")}
    return Prepared(mono, info)


def prepare_item(item: Item, prepare: Callable) -> Prepared:
    if item.audio_path is None:
        return Prepared()
    try:
        return prepare(item.audio_path)
    except Exception as exc:  # noqa: BLE001 - any failure of one record is that record's error
        return Prepared(error=describe_failure(exc, item.audio_path))


class BatchDataset:
    """Map-style dataset over planned batches: sample ``b`` is the list of :class:`Prepared` of batch ``b``."""

    def __init__(self, batches: list[list[Item]], prepare: Callable):
        self.batches, self.prepare = batches, prepare

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> list[Prepared]:
        return [prepare_item(item, self.prepare) for item in self.batches[b]]


def die_with_parent(parent_pid: int) -> None:
    """Make this forked helper end when ``parent_pid`` does (a kill -9 of the run leaves no orphan decoding
    on): the kernel's parent-death signal on Linux, else a thread watching the parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:  # pragma: no cover - other systems
        import threading
        import time

        def watch():
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _worker_init(_worker_id: int, parent_pid: int | None = None) -> None:
    import torch

    from fusionaudio.infer.journal import close_inherited_locks

    if parent_pid is not None:
        die_with_parent(parent_pid)
    close_inherited_locks()  # the run's locks belong to the main process, not to its forked helpers
    torch.set_num_threads(1)  # one core per worker: the main process keeps the rest for generation


def _identity(x):
    return x


def _in_process(batches, prepare):
    for batch in batches:
        yield batch, [prepare_item(item, prepare) for item in batch]


def iterate(batches: list[list[Item]], prepare: Callable, workers: int, prefetch: int = 2
            ) -> Iterator[tuple[list[Item], list[Prepared]]]:
    """``(batch, prepared)`` for every planned batch, in order; ``workers`` 0 prepares in this process.
    With workers they start at once (so they decode the first batches while the model loads)."""
    if workers <= 0 or not batches:
        return _in_process(batches, prepare)
    from torch.utils.data import DataLoader

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are forked
    loader = DataLoader(BatchDataset(batches, prepare), batch_size=None, shuffle=False,
                        num_workers=min(workers, len(batches)), collate_fn=_identity, prefetch_factor=prefetch,
                        worker_init_fn=partial(_worker_init, parent_pid=os.getpid()), persistent_workers=False)
    return zip(batches, iter(loader))


def default_loader_workers() -> int:
    """Default ``--loader_workers``: half the cores (at least 1, at most 4)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def preparer(arch: str, resampler: str) -> Callable:
    return partial(prepare_audsem if arch == "audsemthinker" else prepare_gama, resampler=resampler)


# --------------------------------------------------------------------------- fbank on the device


def fbanks_for(prepared: list[Prepared], paths: list, device) -> list:
    """The normalised fbank of every prepared GAMA signal, computed together on ``device``
    (:func:`fusionaudio.audio.fbank_batch`); a clip whose features are not finite (or whose fbank
    fails) gets an error on its :class:`Prepared` instead, and its slot is None."""
    import torch

    from fusionaudio.audio import fbank_batch

    monos = [p.audio for p in prepared]
    try:
        rows = list(fbank_batch(monos, device=device)) if monos else []
    except Exception:  # noqa: BLE001 - find the clip(s) at fault one by one
        rows = []
        for p, mono, path in zip(prepared, monos, paths):
            try:
                rows.append(fbank_batch([mono], device=device)[0])
            except Exception as exc:  # noqa: BLE001
                p.error = describe_failure(exc, path)
                rows.append(None)
    out = []
    for p, row, path in zip(prepared, rows, paths):
        if row is not None and not bool(torch.isfinite(row).all()):
            p.error = f"{path}: the fbank has non-finite values (NaN or inf); the audio is unusable (amplitude?)"
            row = None
        out.append(row)
    return out
