"""Stage 1 of training: the data. Validated records become tokenised examples (a seeded
train / validation split), every clip is checked up front with the same front end the
batches use, and :class:`AudioBatcher` turns a micro-batch into fbanks.

A clip is decoded and turned into an fbank at most once for its check; with
``cache_fbank`` that fbank is kept and the batches reuse it, otherwise only the verdict
is kept and the batcher recomputes the fbank when the clip is drawn. Any failure while
preparing a clip (not only :class:`~fusionaudio.audio.AudioError`: a ``RuntimeError``
or ``MemoryError`` from the resampler too) is that clip's error: it stops the run with a
one-line message naming the record, or with ``skip_bad_records`` the records using it are
dropped and listed in ``skipped_audio.txt``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fusionaudio.errors import UsageError

from fusionaudio.audio import AudioError, load_fbank_batch
from fusionaudio.gama.collate import IGNORE_INDEX, Example, make_examples

log = logging.getLogger("fusionaudio.train")
SKIPPED_NAME = "skipped_audio.txt"
_CHECK_CHUNK = 16  # clips per batched front-end pass in the up-front check


def split_examples(tok, records, data_path, cutoff_len, train_on_inputs, template, val_set_size: int,
                   seed: int) -> tuple[list[Example], list[Example]]:
    """Tokenise the records and split off ``val_set_size`` of them (seeded) for evaluation;
    records left with no target token after truncation are dropped with a warning."""
    examples = make_examples(tok, records, data_path, cutoff_len, train_on_inputs, template)
    targets = [e for e in examples if any(x != IGNORE_INDEX for x in e.labels[1:])]
    if len(targets) < len(examples):
        log.warning("%d record(s) have no target tokens after truncation to cutoff_len=%d; left out",
                    len(examples) - len(targets), cutoff_len)
    if val_set_size >= len(targets):
        raise UsageError(f"val_set_size={val_set_size} leaves no training data: {data_path} has {len(targets)} usable "
                         f"records; pass --val_set_size {len(targets) // 10} (a tenth of them) or --val_set_size 0 "
                         "(no validation loss)")
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed)).tolist()
    return [targets[i] for i in perm[val_set_size:]], [targets[i] for i in perm[:val_set_size]]


def describe(examples: list[Example], records: list[dict], limit: int = 8) -> str:
    """``record 12 (audio/x.wav), record 40 (text-only)``: the data-file positions
    (``_index``) and audio_ids of ``examples``."""
    parts = []
    for e in examples[:limit]:
        rec = records[e.index]
        aid = rec.get("audio_id")
        parts.append(f"record {rec.get('_index', e.index)} ({aid if aid not in (None, '', 'empty') else 'text-only'})")
    more = f" and {len(examples) - limit} more" if len(examples) > limit else ""
    return ", ".join(parts) + more


def _prepare(paths: list[Path], device) -> tuple[dict[Path, torch.Tensor], dict[Path, str]]:
    """fbanks of ``paths`` in one batched pass; a failure of the pass itself (an allocation
    error, a bug) falls back to one clip at a time so it lands on the clip that caused it."""
    try:
        fbanks, infos, failures = load_fbank_batch(paths, device=device, errors="collect")
        good = [p for i, p in enumerate(paths) if i not in failures]
        bad = {paths[i]: str(err) for i, err in failures.items()}
        ok = dict(zip(good, fbanks))
    except Exception:  # noqa: BLE001 - attributed per clip below
        if len(paths) == 1:
            raise
        ok, bad = {}, {}
        for p in paths:
            one_ok, one_bad = _prepare_one(p, device)
            ok.update(one_ok)
            bad.update(one_bad)
        return ok, bad
    for p, f in list(ok.items()):
        if not torch.isfinite(f).all():
            bad[p] = f"{p}: the fbank has non-finite values"
            del ok[p]
    return ok, bad


def _prepare_one(path: Path, device) -> tuple[dict, dict]:
    try:
        return _prepare([path], device)
    except Exception as exc:  # noqa: BLE001 - any failure is this clip's error
        return {}, {path: f"{path}: {type(exc).__name__}: {exc}"}


class AudioBatcher:
    """fbanks for a micro-batch, computed in one batched pass on the training device.

    ``check(clips)`` runs the front end on every clip up front; ``__call__`` prepares a
    micro-batch. Bad clips raise :class:`AudioError` naming the records; with ``skip_bad``
    their examples are dropped and appended to ``skipped_log``. ``cache`` keeps each
    clip's fbank in CPU memory (worth it for small data sets and several epochs)."""

    def __init__(self, device, skip_bad: bool = False, cache: bool = False, skipped_log: Path | None = None,
                 records: list[dict] | None = None):
        self.device, self.skip_bad, self.skipped_log = torch.device(device), skip_bad, skipped_log
        self.cache: dict[Path, torch.Tensor] | None = {} if cache else None
        self.bad: dict[Path, str] = {}   # verdicts: known-bad clips and why
        self.checked: set[Path] = set()  # clips known good
        self.records = records or []

    def check(self, clips: list[Path]) -> dict[Path, str]:
        """Run the batch-time front end once on each clip; returns the bad ones."""
        todo = [p for p in dict.fromkeys(clips) if p not in self.checked and p not in self.bad]
        for s in range(0, len(todo), _CHECK_CHUNK):
            chunk = todo[s:s + _CHECK_CHUNK]
            ok, bad = _prepare(chunk, torch.device("cpu"))
            self.bad.update(bad)
            self.checked.update(ok)
            if self.cache is not None:
                self.cache.update({p: f.cpu() for p, f in ok.items()})
        return {p: self.bad[p] for p in dict.fromkeys(clips) if p in self.bad}

    def report(self, bad: dict[Path, str], examples: list[Example]) -> None:
        """Stop (a one-line error naming the records) or log and list the skipped ones."""
        hit = [e for e in examples if e.audio in bad]
        if not self.skip_bad:
            raise AudioError(f"{len(bad)} audio file(s) failed to load, used by {describe(hit, self.records)} "
                             f"(pass --skip_bad_records to drop them): " + "; ".join(bad.values()))
        log.warning("dropping %d example(s) whose audio failed to load: %s", len(hit), describe(hit, self.records))
        if self.skipped_log is not None:
            with open(self.skipped_log, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.writelines(f"{p}\t{e}\n" for p, e in bad.items())

    def __call__(self, examples: list[Example]) -> tuple[torch.Tensor | None, torch.Tensor | None, list[Example]]:
        """``(fbanks [U, 1024, 128] of the U distinct clips, index of each kept example's clip,
        kept examples)``; ``(None, None, examples)`` for text-only examples."""
        if not examples or not examples[0].has_audio:
            return None, None, examples
        clips = list(dict.fromkeys(e.audio for e in examples))
        cached = self.cache or {}
        todo = [p for p in clips if p not in cached and p not in self.bad]
        fresh, bad = _prepare(todo, self.device) if todo else ({}, {})
        if self.cache is not None:
            self.cache.update({p: f.cpu() for p, f in fresh.items()})
        self.bad.update(bad)
        known_bad = {p: self.bad[p] for p in clips if p in self.bad}
        if bad:  # new failures at batch time: reported once, here
            self.report(bad, examples)
        kept = [e for e in examples if e.audio not in known_bad]
        if not kept:
            return None, None, []
        clips = [p for p in clips if p not in known_bad]
        rows = [fresh[p] if p in fresh else cached[p] for p in clips]
        index = torch.tensor([clips.index(e.audio) for e in kept], device=self.device)
        return torch.stack([r.to(self.device) for r in rows]), index, kept
