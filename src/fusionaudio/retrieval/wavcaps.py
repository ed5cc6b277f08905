"""WavCaps' retrieval protocol (``pretrain.validate``) for the ASE model, as FusionAudio runs it.

One row per caption (5 per clip, clip-major); rows are batched ``batch_size`` (128) at a time in order,
each batch's waveforms right-padded with zeros to its longest one; clip ``i``'s embedding is row
``5*i`` *as padded in its batch* (quirk Q3). We encode each clip once, padded to the length its row
``5*i`` got in the original (identical up to float noise); rows ``5*i+1..5*i+4`` are copies (unused by
the metrics). Captions are tokenised per batch. Long clips (over ``max_samples``, 10.23 s), where the
original fails, follow ``long_clips``:

* ``error`` (default, the original's behaviour): stop, naming the clip;
* ``crop``: keep the first 10 s (what ``max_length: 10`` does, from the start instead of a random crop);
* ``windows``: mean of the embeddings of consecutive 10 s windows (each encoded alone), re-normalised;
  for its batch's padding the clip counts as 10 s.
(10 s, or the model's limit where that is shorter, as for tiny test geometries.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fusionaudio.evaluate.records import DEFAULT_REF_KEY, EvalInputError, load_records

from fusionaudio.retrieval.frontend import crop_samples
from fusionaudio.retrieval.metrics import CAPTIONS_PER_CLIP, WAVCAPS_NAMES, wavcaps_metrics
from fusionaudio.retrieval.pairs import collect_pairs, resolve_audio_paths

LONG_CLIPS = ("error", "crop", "windows")


def read_clips(input: str, audio_root: str = "", ref_key: str = DEFAULT_REF_KEY, group_key: str = "audio_id"):
    """``(audio_paths, captions)`` with 5 captions per clip, from our records or a WavCaps test json
    (``{"num_captions_per_audio": 5, "data": [{"audio", "caption_1".."caption_5"}]}``)."""
    raw = json.loads(Path(input).read_text(encoding="utf-8")) if str(input).endswith(".json") else None
    if isinstance(raw, dict) and "data" in raw:
        if raw.get("num_captions_per_audio") != CAPTIONS_PER_CLIP:
            raise EvalInputError(f"{input}: num_captions_per_audio must be {CAPTIONS_PER_CLIP} for the WavCaps protocol")
        ids, captions = [], []
        for i, item in enumerate(raw["data"]):
            missing = [k for k in ["audio"] + [f"caption_{j}" for j in range(1, 6)] if k not in item]
            if missing:
                raise EvalInputError(f"{input}: data[{i}] lacks {', '.join(missing)}")
            ids.append(str(item["audio"]))
            captions += [str(item[f"caption_{j}"]) for j in range(1, 6)]
    else:
        ids, captions, t2a = collect_pairs(load_records(input), input, ref_key, group_key)
        counts = np.bincount(t2a, minlength=len(ids))
        bad = [ids[j] for j in np.flatnonzero(counts != CAPTIONS_PER_CLIP)]
        if bad:
            raise EvalInputError(f"{input}: the WavCaps protocol needs exactly {CAPTIONS_PER_CLIP} captions per clip; "
                                 f"{len(bad)} clip(s) differ, e.g. {bad[0]!r} has {counts[ids.index(bad[0])]}")
        order = np.argsort(t2a, kind="stable")  # clip-major rows
        captions = [captions[k] for k in order]
    return resolve_audio_paths(ids, audio_root, input), captions


def apply_long_clips(waves: list[np.ndarray], names: list[str], max_samples: int, policy: str,
                     sample_rate: int) -> list[np.ndarray]:
    """Waveforms as they enter batching under ``policy`` (``windows`` keeps long clips whole)."""
    if policy not in LONG_CLIPS:
        raise ValueError(f"long_clips must be one of {LONG_CLIPS}; got {policy!r}")
    out = []
    for wave, name in zip(waves, names):
        if len(wave) > max_samples:
            if policy == "error":
                raise EvalInputError(f"{name}: {len(wave) / sample_rate:.2f} s is longer than the model's "
                                     f"{max_samples} samples; the original crashes here (AssertionError). Use "
                                     "--long_clips crop or --long_clips windows (docs/retrieval.md)")
            if policy == "crop":
                wave = wave[: min(crop_samples(10.0, sample_rate), max_samples)]
        out.append(wave)
    return out


def _pad(waves: list[np.ndarray], length: int) -> np.ndarray:
    batch = np.zeros((len(waves), length), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch


def encode_clips(model, waves: list[np.ndarray], batch_size: int = 128, chunk: int = 16,
                 window: int | None = None) -> np.ndarray:
    """``[5 * n_clips, D]`` audio rows as ``validate()`` builds them (row ``5*i`` = clip ``i``)."""
    window = window or min(crop_samples(10.0, model.config.sample_rate), model.config.max_samples)
    long = [len(w) > model.config.max_samples for w in waves]
    lengths = np.array([min(len(w), window) if lg else len(w) for w, lg in zip(waves, long)])
    row_clip = np.repeat(np.arange(len(waves)), CAPTIONS_PER_CLIP)
    pad_to = {}
    for start in range(0, len(row_clip), batch_size):
        in_batch = row_clip[start : start + batch_size]
        for clip in in_batch[in_batch * CAPTIONS_PER_CLIP >= start]:
            pad_to[int(clip)] = int(lengths[in_batch].max())
    emb = [None] * len(waves)
    for i in np.flatnonzero(long):
        parts = [waves[i][s : s + window] for s in range(0, len(waves[i]), window)]
        parts = [p for p in parts if len(p) > model.frontend.n_fft // 2] or parts[:1]
        e = torch.cat([model.encode_audio(_pad([p], len(p))) for p in parts]).mean(0, keepdim=True)
        emb[i] = torch.nn.functional.normalize(e, dim=-1)[0].cpu().numpy()
    by_length: dict[int, list[int]] = {}
    for i in np.flatnonzero(~np.array(long, bool)):
        by_length.setdefault(pad_to[int(i)], []).append(int(i))
    for length, clips in by_length.items():
        for s in range(0, len(clips), chunk):
            part = clips[s : s + chunk]
            out = model.encode_audio(_pad([waves[i] for i in part], length)).cpu().numpy()
            for i, e in zip(part, out):
                emb[i] = e
    return np.repeat(np.stack(emb), CAPTIONS_PER_CLIP, axis=0)


def encode_captions(model, captions: list[str], batch_size: int = 128) -> np.ndarray:
    """Caption embeddings, tokenised ``batch_size`` rows at a time as the original batches them."""
    out = [model.encode_captions(captions[s : s + batch_size]).cpu().numpy()
           for s in range(0, len(captions), batch_size)]
    return np.concatenate(out)


def format_metrics(metrics: dict, dataset: str = "") -> str:
    """The two lines WavCaps' ``log_results`` prints, then FusionAudio's ``Best Metrics`` line."""
    t2a, a2t = metrics["t2a"], metrics["a2t"]
    fmt = "r1: {:.2f}, r5: {:.2f}, r10: {:.2f}, r50: {:.2f}, medr: {:.2f}, meanr: {:.2f}, mAP10: {:.3f}"
    return (f"{dataset}: Caption to audio: " + fmt.format(*t2a) + "\n"
            f"{dataset}: Audio to caption: " + fmt.format(*a2t) + "\n"
            f"###### Best Metrics {{'t2a': {t2a}, 'a2t': {a2t}}} ######")


def flat_metrics(metrics: dict) -> dict:
    return {f"{d}_{n}": v for d in ("t2a", "a2t") for n, v in zip(WAVCAPS_NAMES, metrics[d])}


def evaluate_wavcaps(model, audio_paths: list[str], captions: list[str], batch_size: int = 128,
                     long_clips: str = "error") -> dict:
    """``{"t2a": [...], "a2t": [...]}`` (percent / ranks) for clips and their 5 captions each."""
    waves = [model.load_audio(p) for p in audio_paths]
    waves = apply_long_clips(waves, audio_paths, model.config.max_samples, long_clips, model.config.sample_rate)
    rows = encode_clips(model, waves, batch_size)
    return wavcaps_metrics(rows, encode_captions(model, captions, batch_size))
