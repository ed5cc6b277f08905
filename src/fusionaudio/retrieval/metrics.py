"""Retrieval metrics, two conventions.

``retrieval_metrics`` (our default for dual encoders): R@1/5/10 and mAP@10 as fractions, DCASE task 6b
mAP (sum of precision@r over relevant items ranked r <= 10, divided by min(#relevant, 10)), ties broken
pessimistically (relevant items rank after equally scored others), any number of captions per clip.

``wavcaps_metrics`` (WavCaps ``tools/utils.t2a`` / ``a2t``, which FusionAudio reports): percentages and
ranks exactly as the original computes them, quirks included (docs/retrieval.md):

* 5 captions per clip, rows clip-major; only audio row ``5*i`` is clip ``i``'s embedding;
* similarities are ``sentence_transformers.util.cos_sim`` in float32 (rows re-normalised), computed per
  clip block as the original does (5 caption queries at a time for t2a, one audio at a time for a2t);
* rank = position in ``np.argsort(d)[::-1]`` (numpy's default unstable sort, reversed: ties go to the
  *higher* index);
* t2a "mAP@10" is the mean of ``1/(rank+1)`` over captions ranked in the top 10 (MRR@10);
* a2t rank is the best of the clip's 5 captions; its AP@10 sums ``j / pos_j`` over the captions found in
  the top 10 and always divides by 5;
* medR = floor(median(rank)) + 1, meanR = mean(rank) + 1; order (r1, r5, r10, r50, medr, meanr, mAP10).
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)
CAPTIONS_PER_CLIP = 5
WAVCAPS_NAMES = ("r1", "r5", "r10", "r50", "medr", "meanr", "mAP10")


# ------------------------------------------------------------------ DCASE convention (fractions)
def ranked_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Relevance flags in ranked order (descending score; ties put relevant items last)."""
    order = np.lexsort((relevant.astype(int), -scores))
    return relevant[order]


def query_metrics(rel_ranked: np.ndarray, ks=KS, map_k: int = 10) -> dict:
    """R@k (hit within top k) and AP@map_k for one query's ranked relevance flags."""
    out = {f"R@{k}": float(rel_ranked[:k].any()) for k in ks}
    top = rel_ranked[:map_k]
    hits = np.cumsum(top)
    precisions = hits[top] / (np.flatnonzero(top) + 1)
    n_rel = int(rel_ranked.sum())
    out[f"mAP@{map_k}"] = float(precisions.sum() / min(n_rel, map_k)) if n_rel else 0.0
    return out


def retrieval_metrics(sim: np.ndarray, text_to_audio, ks=KS, map_k: int = 10) -> dict:
    """Metrics from a similarity matrix ``sim`` (n_texts, n_audios) and each text's audio index."""
    sim = np.asarray(sim, dtype=float)
    t2a = np.asarray(text_to_audio, dtype=int)
    n_text, n_audio = sim.shape
    if t2a.shape != (n_text,) or t2a.min() < 0 or t2a.max() >= n_audio:
        raise ValueError("text_to_audio must give one valid audio index per text row")
    out = {}
    for direction, queries in (("t2a", range(n_text)), ("a2t", range(n_audio))):
        rows = []
        for q in queries:
            if direction == "t2a":
                rel = np.arange(n_audio) == t2a[q]
                rows.append(query_metrics(ranked_relevance(sim[q], rel), ks, map_k))
            else:
                rel = t2a == q
                if rel.any():
                    rows.append(query_metrics(ranked_relevance(sim[:, q], rel), ks, map_k))
        for name in rows[0]:
            out[f"{direction}_{name}"] = float(np.mean([r[name] for r in rows]))
    return out


# ------------------------------------------------------------------ WavCaps convention (percent)
def _cos_sim(a, b) -> np.ndarray:
    """``sentence_transformers.util.cos_sim`` on float32 tensors, as a numpy array."""
    import torch

    a = torch.nn.functional.normalize(torch.as_tensor(np.asarray(a, np.float32)), p=2, dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(np.asarray(b, np.float32)), p=2, dim=1)
    return torch.mm(a, b.transpose(0, 1)).numpy()


def _summary(ranks: np.ndarray, map10: float) -> list[float]:
    n = len(ranks)
    recalls = [100.0 * np.count_nonzero(ranks < k) / n for k in (1, 5, 10, 50)]
    return [float(r) for r in recalls] + [float(np.floor(np.median(ranks)) + 1), float(ranks.mean() + 1), float(map10)]


def wavcaps_t2a(audio_rows, caption_embeds) -> list[float]:
    """Text-to-audio as WavCaps ``t2a``: [r1, r5, r10, r50, medr, meanr, mAP10] (MRR@10 as "mAP10")."""
    audio_rows, caption_embeds = _check(audio_rows, caption_embeds)
    n_clips = audio_rows.shape[0] // CAPTIONS_PER_CLIP
    clips = audio_rows[::CAPTIONS_PER_CLIP]
    ranks = np.zeros(CAPTIONS_PER_CLIP * n_clips)
    for index in range(n_clips):
        block = slice(CAPTIONS_PER_CLIP * index, CAPTIONS_PER_CLIP * (index + 1))
        d = _cos_sim(caption_embeds[block], clips)
        for i in range(d.shape[0]):
            order = np.argsort(d[i])[::-1]
            ranks[CAPTIONS_PER_CLIP * index + i] = np.flatnonzero(order == index)[0]
    mrr10 = 100.0 * np.sum(1.0 / (ranks[ranks < 10] + 1)) / len(ranks)
    return _summary(ranks, mrr10)


def wavcaps_a2t(audio_rows, caption_embeds) -> list[float]:
    """Audio-to-text as WavCaps ``a2t``: [r1, r5, r10, r50, medr, meanr, mAP10] (AP@10 always / 5)."""
    audio_rows, caption_embeds = _check(audio_rows, caption_embeds)
    n_clips = audio_rows.shape[0] // CAPTIONS_PER_CLIP
    ranks, ap10 = np.zeros(n_clips), np.zeros(n_clips)
    for index in range(n_clips):
        d = _cos_sim(audio_rows[CAPTIONS_PER_CLIP * index][None], caption_embeds)[0]
        order = np.argsort(d)[::-1]
        positions = np.array([np.flatnonzero(order == i)[0]
                              for i in range(CAPTIONS_PER_CLIP * index, CAPTIONS_PER_CLIP * (index + 1))])
        ranks[index] = positions.min()
        found = np.sort(positions[positions < 10] + 1)
        ap10[index] = np.sum(np.arange(1, len(found) + 1) / found) / CAPTIONS_PER_CLIP if len(found) else 0.0
    return _summary(ranks, 100.0 * np.sum(ap10) / n_clips)


def wavcaps_metrics(audio_rows, caption_embeds) -> dict:
    """``{"t2a": [...], "a2t": [...]}`` as WavCaps ``validate()`` returns them, from one audio row per caption
    (``[N, D]``, clip ``i`` = row ``5*i``) and the ``[N, D]`` caption embeddings, ``N = 5 * n_clips``."""
    return {"t2a": wavcaps_t2a(audio_rows, caption_embeds), "a2t": wavcaps_a2t(audio_rows, caption_embeds)}


def _check(audio_rows, caption_embeds):
    a = np.asarray(audio_rows, dtype=np.float32)
    c = np.asarray(caption_embeds, dtype=np.float32)
    if a.ndim != 2 or c.ndim != 2 or a.shape != c.shape:
        raise ValueError(f"wavcaps metrics need audio_rows and caption_embeds of the same [N, D] shape "
                         f"(one audio row per caption); got {a.shape} and {c.shape}")
    if a.shape[0] == 0 or a.shape[0] % CAPTIONS_PER_CLIP:
        raise ValueError(f"the WavCaps protocol needs {CAPTIONS_PER_CLIP} captions per clip (N a positive "
                         f"multiple of {CAPTIONS_PER_CLIP}); got N = {a.shape[0]}")
    return a, c
