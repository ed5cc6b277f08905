"""Helpers shared by the QA evaluators (:mod:`.qa`, :mod:`.qa_judged`)."""

from __future__ import annotations

from collections import defaultdict

from fusionaudio.evaluate.records import count_null, get_field, get_prediction, get_text_list
from fusionaudio.evaluate.report import default_output, make_result, write_report


def mean(values) -> float | None:
    values = list(values)
    return float(sum(values) / len(values)) if values else None


def breakdown(items, field) -> dict:
    groups = defaultdict(list)
    for it in items:
        if it.get(field) is not None:
            groups[str(it[field])].append(it["correct"])
    return {k: {"accuracy": mean(v), "n": len(v)} for k, v in groups.items()}


def meta(input, records, pred_key, ref_key, client, prompt=None) -> dict:
    out = {"input": str(input), "n_records": len(records), "n_null_predictions": count_null(records, pred_key),
           "pred_key": pred_key, "ref_key": ref_key}
    if client is not None:
        out.update(judge_model=client.model, judge_base_url=client.base_url)
        if prompt is not None:
            out.update(prompt.meta())
    return out


def finish(task, metrics, meta_, details, input, output, suffix) -> dict:
    result = make_result(task, metrics, meta_, details=details)
    write_report(result, output or default_output(input, suffix))
    return result


def question_groups(records, input, pred_key, ref_key):
    """Group by (audio_id, instruction): first prediction, every reference in order (duplicates kept,
    as the original scripts group them), first record."""
    groups: dict[tuple, dict] = {}
    for i, rec in enumerate(records):
        key = (str(get_field(rec, "audio_id", input, i, types=())), get_field(rec, "instruction", input, i))
        refs = get_text_list(rec, ref_key, input, i)
        g = groups.setdefault(key, {"index": i, "audio_id": key[0], "question": key[1],
                                    "prediction": get_prediction(rec, pred_key, input, i), "references": [],
                                    "record": rec})
        g["references"] += refs
    return list(groups.values())
