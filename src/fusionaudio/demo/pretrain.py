"""Supervised pre-training of a fresh audio encoder on the synthetic scenes (the demo recipe's
stand-in for the AudioSet pre-training that GAMA's CAV-MAE encoder brings).

GAMA never trains its audio encoder from random weights through the language model: it
starts from a pre-trained CAV-MAE and a pre-trained Llama. The demo model starts from random
weights on both sides, and learning pitch and loudness only through the captions' few
attribute words is slow (the encoder must learn features that the LLM does not yet read, and
the other way round). This stage gives the encoder what a pre-trained one has: features that
state, per time column, what is sounding. Each of the encoder's time columns (16 fbank frames,
0.16 s; the tokens the aggregator passes to the LLM) gets labels read off ``scenes.jsonl``:

* ``kind``     - silence / tone / chirp / noise / clicks (the event covering most of the column)
* ``pitch``    - low / mid / high (tones and chirps)
* ``loudness`` - quiet / loud (any event)
* ``variant``  - rising / falling / white / muffled (chirps and noise bursts)
* ``length``   - short / long (tones, chirps, noise bursts)
* ``onset``    - whether an event starts in the column (event boundaries, for counting)
* ``clicks``   - click onsets in the column, 0-3 (click trains)
* ``sweep``    - steady / rising / falling (tones and chirps): tone against chirp on its own.
  ``kind`` alone does not teach it: most columns are silence, and a linear probe of an encoder
  pre-trained without ``sweep`` took about half of the held-out high tones' columns for a chirp.

Linear heads read the encoder's final features after the mean over mel rows (``pool()``
without the divisor, which only scales them) and a cross-entropy per label trains every
encoder parameter. Only the encoder is kept; the heads are dropped.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fusionaudio.audio import load_fbank_batch
from fusionaudio.demo.scenes import CHIRP_DIRECTIONS, EVENT_TYPES, NOISE_COLOURS, load_scenes

log = logging.getLogger("fusionaudio.demo.pretrain")

COLUMN_S = 0.16  # 16 frames at a 10 ms shift
_FRAME_CENTRE_S = 0.0125  # centre of frame 0 (25 ms window)
IGNORE = -100
#: label name -> classes
LABELS = {
    "kind": ("silence",) + EVENT_TYPES,
    "pitch": ("low", "mid", "high"),
    "loudness": ("quiet", "loud"),
    "variant": CHIRP_DIRECTIONS + NOISE_COLOURS,
    "length": ("short", "long"),
    "onset": ("no", "yes"),
    "clicks": ("0", "1", "2", "3"),
    "sweep": ("steady",) + CHIRP_DIRECTIONS,
}
_LOAD_CHUNK = 256  # clips per front-end pass when loading a split
_MIN_OVERLAP_S = 0.02  # less of an event than this in a column: the column is silence


def column_labels(scene: dict, num_columns: int = 64) -> dict[str, torch.Tensor]:
    """Per-column labels ``{name: LongTensor [num_columns]}`` (``IGNORE`` where a label does
    not apply) for one scene."""
    out = {name: torch.full((num_columns,), IGNORE, dtype=torch.long) for name in LABELS}
    out["kind"].fill_(0)
    out["onset"].fill_(0)
    for c in range(num_columns):
        lo = c * COLUMN_S + _FRAME_CENTRE_S - 0.005
        hi = lo + COLUMN_S + 0.01
        if lo >= scene["duration"]:
            break  # padding frames: silence, no onset
        best, best_overlap = None, _MIN_OVERLAP_S
        for ev in scene["events"]:
            overlap = min(hi, ev["start"] + ev["duration"]) - max(lo, ev["start"])
            if ev["type"] == "clicks":  # a click train is sparse: a column holding a click is its
                overlap = COLUMN_S if any(lo <= t < hi for t in _click_times(ev)) else 0.0
            if overlap >= best_overlap:
                best, best_overlap = ev, overlap
            if lo <= ev["start"] < hi:
                out["onset"][c] = 1
        if best is None:
            continue
        _set_event_labels(out, c, best, lo, hi)
    return out


def _click_times(ev: dict) -> list[float]:
    return [ev["start"] + j * ev["click_interval"] for j in range(ev["n_clicks"])]


def _set_event_labels(out: dict, c: int, ev: dict, lo: float, hi: float) -> None:
    out["kind"][c] = LABELS["kind"].index(ev["type"])
    out["loudness"][c] = LABELS["loudness"].index(ev["loudness"])
    for name in ("pitch", "variant", "length"):
        value = ev.get(name)
        if value is not None:
            out[name][c] = LABELS[name].index(value)
    if ev["type"] == "clicks":
        out["clicks"][c] = min(3, sum(lo <= t < hi for t in _click_times(ev)))
    if ev["type"] in ("tone", "chirp"):
        out["sweep"][c] = LABELS["sweep"].index(ev["variant"] or "steady")


class ColumnHeads(nn.Module):
    """One linear classifier per label over the pooled encoder features."""

    def __init__(self, dim: int, names=tuple(LABELS)):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(dim, len(LABELS[name])) for name in names})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(pooled) for name, head in self.heads.items()}


def _pooled(encoder, fbank: torch.Tensor) -> torch.Tensor:
    final, _, _ = encoder(fbank)
    return encoder.pool(final) * encoder.cfg.pool_divisor  # the mean over mel rows


def _loss_and_hits(encoder, heads, fbank, labels) -> tuple[torch.Tensor, dict[str, tuple[int, int]]]:
    logits = heads(_pooled(encoder, fbank))
    loss, hits = 0.0, {}
    for name, lg in logits.items():
        y, flat = labels[name].reshape(-1), lg.reshape(-1, lg.shape[-1])
        keep = y != IGNORE
        if keep.any():
            loss = loss + F.cross_entropy(flat, y, ignore_index=IGNORE)
        hits[name] = (int((flat.argmax(-1)[keep] == y[keep]).sum()), int(keep.sum()))
    return loss, hits


def load_split(data_dir: str | Path, split: str, limit: int | None = None):
    """``(fbanks [N, 1024, 128], {label: [N, columns]})`` for the clips of ``split``."""
    data = Path(data_dir)
    scenes = [s for s in load_scenes(data / "scenes.jsonl").values() if s["split"] == split][:limit]
    paths = [data / s["clip"] for s in scenes]
    fbanks = None
    for start in range(0, len(paths), _LOAD_CHUNK):  # bounded memory: 8,000 clips in one pass need > 20 GB
        chunk, _ = load_fbank_batch(paths[start:start + _LOAD_CHUNK])
        if fbanks is None:
            fbanks = chunk.new_empty((len(paths), *chunk.shape[1:]))
        fbanks[start:start + len(chunk)] = chunk
    per_clip = [column_labels(s) for s in scenes]
    return fbanks, {name: torch.stack([p[name] for p in per_clip]) for name in LABELS}


def accuracy(encoder, heads, fbanks, labels, batch: int = 64) -> dict[str, float]:
    """Per-label column accuracy (over the columns where the label applies)."""
    totals = {name: [0, 0] for name in heads.heads}
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        for s in range(0, len(fbanks), batch):
            _, hits = _loss_and_hits(encoder, heads, fbanks[s:s + batch], {k: v[s:s + batch] for k, v in labels.items()})
            for name, (h, n) in hits.items():
                totals[name][0] += h
                totals[name][1] += n
    encoder.train(was)
    return {name: h / n if n else float("nan") for name, (h, n) in totals.items()}


def pretrain_encoder(encoder, data_dir: str | Path, steps: int = 600, batch: int = 32, lr: float = 2e-3,
                     seed: int = 0, log_every: int = 100, limit: int | None = None, labels=None) -> dict:
    """Train ``encoder`` (in place) on the column labels of ``data_dir``'s train clips; returns
    the held-out (test split) column accuracies before and after, and the last loss.
    ``labels``: the names of :data:`LABELS` to train on (default all)."""
    torch.manual_seed(seed)
    fb, lab = load_split(data_dir, "train", limit)
    test_fb, test_lab = load_split(data_dir, "test")
    names = tuple(LABELS) if labels is None else tuple(labels)
    unknown = [n for n in names if n not in LABELS]
    if unknown or not names:
        raise ValueError(f"unknown column labels {unknown} (known: {', '.join(LABELS)})" if unknown else "no labels")
    heads = ColumnHeads(encoder.cfg.embed_dim, names)
    params = list(encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    before = accuracy(encoder, heads, test_fb, test_lab)
    gen = torch.Generator().manual_seed(seed)
    encoder.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        idx = torch.randint(len(fb), (batch,), generator=gen)
        loss, _ = _loss_and_hits(encoder, heads, fb[idx], {k: v[idx] for k, v in lab.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            log.info("encoder pre-training step %d/%d: loss %.4f", step + 1, steps, loss.item())
    encoder.eval()
    return {"steps": steps, "labels": list(names), "last_loss": float(loss.detach()), "test_before": before,
            "test_after": accuracy(encoder, heads, test_fb, test_lab)}


__all__ = ["LABELS", "column_labels", "pretrain_encoder", "accuracy", "load_split"]
