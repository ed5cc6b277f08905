"""Captioning metrics via pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr.

Records are grouped by ``group_key`` (``audio_id``): all ground-truth captions of a clip
(``output`` as a string or a list, over every record of the clip) are its references; the
clip's hypothesis is the ``prediction`` of its first record (the number of clips whose
records disagree is reported). Texts go through the Stanford PTB tokenizer (needs Java),
as in the COCO caption toolkit; ``tokenizer="simple"`` is a Java-free approximation.

``CIDEr`` is pycocoevalcap's ``Cider`` scorer, which is CIDEr-D (Gaussian length penalty,
clipped counts, x10), with document frequencies from the evaluated references.
SPICE needs the Stanford CoreNLP 3.6.0 jars inside pycocoevalcap; when they (or Java) are
missing, SPICE and SPIDEr are reported as ``None`` with the reason -- never as zero.

CLI::

    python -m fusionaudio.evaluate.captioning --input preds.json --output results/audiocaps.cap.json
"""

from __future__ import annotations

from fusionaudio.commands import function_main, print_result


from fusionaudio.evaluate.records import (
    DEFAULT_PRED_KEY,
    DEFAULT_REF_KEY,
    EvalInputError,
    count_null,
    get_field,
    get_prediction,
    get_text_list,
    load_predictions,
)
from fusionaudio.evaluate.caption_metrics import ALL_METRICS, caption_scores
from fusionaudio.evaluate.captioning_ltu import evaluate_ltu
from fusionaudio.evaluate.report import default_output, make_result, write_report

def collect_clips(records: list[dict], path, pred_key: str, ref_key: str, group_key: str):
    """Group records into ``(predictions, references, n_conflicting)`` keyed by ``group_key``."""
    preds: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    conflicts = set()
    for i, rec in enumerate(records):
        key = str(get_field(rec, group_key, path, i, types=()))
        pred = get_prediction(rec, pred_key, path, i)
        ref = [r for r in get_text_list(rec, ref_key, path, i) if r.strip()]
        if not ref:
            raise EvalInputError(f"{path}: record {i}: empty reference caption in field {ref_key!r}")
        if key in preds:
            if pred.strip() != preds[key].strip():
                conflicts.add(key)
        else:
            preds[key] = pred
        refs.setdefault(key, []).extend(ref)
    return preds, refs, len(conflicts)


def evaluate_captioning(
    input: str,
    output: str | None = None,
    pred_key: str = DEFAULT_PRED_KEY,
    ref_key: str = DEFAULT_REF_KEY,
    group_key: str = "audio_id",
    metrics: str = ",".join(ALL_METRICS),
    tokenizer: str = "ptb",
    structured: bool = False,
    protocol: str = "coco",
    trials: int = 5,
    strict_first_char: bool = False,
) -> dict:
    """Score a prediction file; writes ``output`` (JSON, default ``<input>.cap.json``) and ``.md``.

    ``metrics``: comma-separated subset of bleu,meteor,rouge,cider,spice. ``structured``: score
    the ``<answer>`` section of structured outputs and report their format compliance.
    ``protocol="ltu"``: CIDEr/SPICE mean and std over ``trials`` trials, as LTU reports captioning
    (see :mod:`.captioning_ltu`; ``metrics`` and ``group_key`` do not apply there).
    """
    if protocol == "ltu":
        return evaluate_ltu(input, output, pred_key, ref_key, trials, tokenizer, strict_first_char, structured)
    if protocol != "coco":
        raise ValueError(f"protocol must be 'coco' or 'ltu', not {protocol!r}")
    records, structured_metrics = load_predictions(input, pred_key, structured)
    preds, refs, n_conflicts = collect_clips(records, input, pred_key, ref_key, group_key)
    scores, unavailable, per_clip = caption_scores(preds, refs, metrics, tokenizer)
    meta = {"input": str(input), "n_records": len(records), "n_clips": len(preds),
            "n_references": sum(len(r) for r in refs.values()),
            "n_null_predictions": count_null(records, pred_key), "n_clips_with_conflicting_predictions": n_conflicts,
            "tokenizer": tokenizer, "pred_key": pred_key, "ref_key": ref_key, "group_key": group_key,
            "cider_variant": "CIDEr-D (pycocoevalcap)"}
    details = [{"clip": k, "prediction": preds[k], "n_refs": len(refs[k]), **per_clip[k]} for k in preds]
    scores.update(structured_metrics)
    result = make_result("captioning", scores, meta, unavailable, details)
    write_report(result, output or default_output(input, ".cap.json"))
    return result


def main(argv=None) -> int:
    return function_main(evaluate_captioning, "python -m fusionaudio.evaluate.captioning", argv,
                         show=lambda r: print_result(r["metrics"] if isinstance(r, dict) else r))

if __name__ == "__main__":
    raise SystemExit(main())
