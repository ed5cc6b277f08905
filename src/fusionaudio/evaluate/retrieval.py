"""Audio-text retrieval metrics: text-to-audio and audio-to-text R@1/5/10 and mAP@10.

Convention (AudioCaps / Clotho, several captions per clip): captions are the text items; in
**t2a** each caption query has exactly one relevant audio (its clip); in **a2t** each audio
query has all of its captions relevant. R@k is the fraction of queries with at least one
relevant item in the top k. mAP@10 follows the DCASE task 6b definition -- per query, the sum
of precision@r over the relevant items ranked r <= 10, divided by min(#relevant, 10) (for a
single relevant item: 1/rank if rank <= 10, else 0) -- averaged over queries. Ties in the
similarity are broken pessimistically (relevant items rank after equally scored others), so a
constant scorer cannot look good. Values are fractions in [0, 1].

CLI (captions are the ground-truth field ``output`` of records grouped by ``audio_id``; relative
audio ids resolve against ``--audio_root``, default the folder of the input file)::

    python -m fusionaudio.evaluate.retrieval --input test.json --model_dir CLAP_DIR \
        --audio_root DATA_ROOT --output results/clotho.ret.json
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .records import DEFAULT_REF_KEY, EvalInputError, get_field, get_text_list, load_records, run_cli
from .report import default_output, make_result, write_report

KS = (1, 5, 10)


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


def collect_pairs(records: list[dict], path, ref_key: str = DEFAULT_REF_KEY, group_key: str = "audio_id"):
    """``(audio_ids, captions, text_to_audio)`` from records (captions = ``ref_key``, str or list)."""
    audio_index: dict[str, int] = {}
    captions, t2a = [], []
    for i, rec in enumerate(records):
        aid = str(get_field(rec, group_key, path, i, types=()))
        j = audio_index.setdefault(aid, len(audio_index))
        for cap in get_text_list(rec, ref_key, path, i):
            if not cap.strip():
                raise EvalInputError(f"{path}: record {i}: empty caption in field {ref_key!r}")
            captions.append(cap)
            t2a.append(j)
    return list(audio_index), captions, t2a


def resolve_audio_paths(audio_ids: list[str], audio_root: str, path) -> list[str]:
    """Resolve relative ids against ``audio_root`` (default: the folder of the records file ``path``,
    as ``fusionaudio.infer`` does) and check that every file exists."""
    root = Path(audio_root) if audio_root else Path(str(path)).resolve().parent
    out = []
    for aid in audio_ids:
        p = Path(aid)
        if not p.is_absolute():
            p = root / p
        if not p.is_file():
            raise EvalInputError(f"{path}: audio file for audio_id {aid!r} not found at {p}")
        out.append(str(p))
    return out


def evaluate_retrieval(
    input: str,
    model_dir: str | None = None,
    output: str | None = None,
    ref_key: str = DEFAULT_REF_KEY,
    group_key: str = "audio_id",
    audio_root: str = "",
    batch_size: int = 16,
    device: str = "cpu",
    encoder=None,
) -> dict:
    """Encode captions and clips with a dual encoder (CLAP from ``model_dir`` by default) and score.

    Writes ``output`` (JSON, default ``<input>.ret.json``) and ``.md``.
    """
    records = load_records(input)
    audio_ids, captions, t2a = collect_pairs(records, input, ref_key, group_key)
    paths = resolve_audio_paths(audio_ids, audio_root, input)
    if encoder is None:
        if not model_dir:
            raise ValueError("evaluate_retrieval needs --model_dir (a local CLAP directory) or an encoder")
        from fusionaudio.retrieval_model import ClapDualEncoder

        encoder = ClapDualEncoder(model_dir, device=device, batch_size=batch_size)
    text_emb = np.asarray(encoder.encode_text(captions))
    audio_emb = np.asarray(encoder.encode_audio(paths))
    metrics = retrieval_metrics(text_emb @ audio_emb.T, t2a)
    meta = {"input": str(input), "n_records": len(records), "n_audios": len(audio_ids), "n_captions": len(captions),
            "model": str(model_dir or type(encoder).__name__), "ref_key": ref_key, "group_key": group_key}
    result = make_result("retrieval", metrics, meta)
    write_report(result, output or default_output(input, ".ret.json"))
    return result


def main():
    import fire

    run_cli(lambda: fire.Fire(evaluate_retrieval, serialize=lambda r: r["metrics"] if isinstance(r, dict) else r))


if __name__ == "__main__":
    main()
