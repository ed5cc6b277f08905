"""Caption records -> (clips, captions) pairs, and audio path resolution (shared by all retrieval models)."""

from __future__ import annotations

from pathlib import Path

from fusionaudio.evaluate.records import DEFAULT_REF_KEY, EvalInputError, get_field, get_text_list


def collect_pairs(records: list[dict], path, ref_key: str = DEFAULT_REF_KEY, group_key: str = "audio_id"):
    """``(audio_ids, captions, text_to_audio)`` from records (captions = ``ref_key``, str or list).

    Clips keep their first-appearance order; captions keep record order within a clip.
    """
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
