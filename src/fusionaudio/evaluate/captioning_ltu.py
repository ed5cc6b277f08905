"""Captioning as LTU reports it (``eval_audiocaps.py`` / ``eval_clotho.py`` of YuanGongND/ltu).

LTU's eval files hold one record per reference caption, each with its own generated answer (so a clip
with 5 references was answered 5 times). LTU then

* cleans every answer and every reference the same way: keeps the text after the last ``":"`` (the
  answer's leading ``"Audio caption:"``-style prefix goes), drops the first character of that rest
  (the space after the colon), removes ASCII punctuation (``string.punctuation``) and lower-cases;
* groups the records by the file name of ``audio_id`` (its last path part);
* runs 5 trials: trial ``t`` scores, for every clip, its ``t``-th answer against all of the clip's
  references (the DCASE caption-evaluation-tools, i.e. the COCO toolkit: PTB tokenizer, CIDEr-D, SPICE);
* reports the mean and the (population) standard deviation of CIDEr and SPICE over the trials.

Deviation: LTU's ``[1:]`` also drops the first character of a text that holds no colon at all (the first
letter of a plain caption); here that happens only with ``strict_first_char=True``. A clip with fewer
records than trials makes LTU fail; here it is an error naming the clip. SPICE is reported only when its
Java models are present, else as unavailable (``None`` with the reason), never as 0.
"""

from __future__ import annotations

import string

import numpy as np

from fusionaudio.evaluate.caption_metrics import caption_scores
from fusionaudio.evaluate.records import EvalInputError, count_null, get_field, get_prediction, get_text_list, load_predictions
from fusionaudio.evaluate.report import default_output, make_result, write_report

_PUNCT = str.maketrans("", "", string.punctuation)


def ltu_clean(text: str, strict_first_char: bool = False) -> str:
    """LTU's cleaning of an answer or a reference (see the module docstring)."""
    if ":" in text or strict_first_char:
        text = text.split(":")[-1][1:]
    return text.translate(_PUNCT).lower()


def ltu_groups(records, path, pred_key, ref_key, strict_first_char=False):
    """``{clip file name: ([answers...], [references...])}`` in record order, cleaned as LTU does."""
    groups: dict[str, tuple[list, list]] = {}
    for i, rec in enumerate(records):
        clip = str(get_field(rec, "audio_id", path, i, types=())).split("/")[-1]
        refs = get_text_list(rec, ref_key, path, i)
        if len(refs) != 1:
            raise EvalInputError(f"{path}: record {i}: the ltu protocol needs one reference per record "
                                 f"(field {ref_key!r} holds {len(refs)})")
        answers, truths = groups.setdefault(clip, ([], []))
        answers.append(ltu_clean(get_prediction(rec, pred_key, path, i), strict_first_char))
        truths.append(ltu_clean(refs[0], strict_first_char))
    return groups


def evaluate_ltu(input: str, output: str | None = None, pred_key: str = "prediction", ref_key: str = "output",
                 trials: int = 5, tokenizer: str = "ptb", strict_first_char: bool = False,
                 structured: bool = False) -> dict:
    """CIDEr and SPICE per trial, their mean and std, as LTU reports captioning."""
    records, structured_metrics = load_predictions(input, pred_key, structured)
    groups = ltu_groups(records, input, pred_key, ref_key, strict_first_char)
    short = [c for c, (answers, _) in groups.items() if len(answers) < trials]
    if short:
        raise EvalInputError(f"{input}: clip {short[0]!r} has {len(groups[short[0]][0])} records, fewer than the "
                             f"{trials} trials (one answer per trial); {len(short)} such clip(s)")
    ciders, spices, unavailable = [], [], {}
    for t in range(trials):
        preds = {c: answers[t] for c, (answers, _) in groups.items()}
        refs = {c: truths for c, (_, truths) in groups.items()}
        scores, missing, _ = caption_scores(preds, refs, ["cider", "spice"], tokenizer)
        ciders.append(scores["CIDEr"])
        spices.append(scores["SPICE"])
        unavailable.update({k: v for k, v in missing.items() if k == "SPICE"})
    metrics = {"CIDEr_mean": float(np.mean(ciders)), "CIDEr_std": float(np.std(ciders))}
    if any(s is None for s in spices):
        metrics.update(SPICE_mean=None, SPICE_std=None)
        unavailable = {"SPICE_mean": unavailable.get("SPICE", "SPICE failed"), "SPICE_std": "needs SPICE"}
    else:
        metrics.update(SPICE_mean=float(np.mean(spices)), SPICE_std=float(np.std(spices)))
        unavailable = {}
    metrics.update(structured_metrics)
    meta = {"input": str(input), "protocol": "ltu", "n_records": len(records), "n_clips": len(groups),
            "trials": trials, "tokenizer": tokenizer, "strict_first_char": strict_first_char,
            "n_null_predictions": count_null(records, pred_key), "pred_key": pred_key, "ref_key": ref_key,
            "cider_variant": "CIDEr-D (pycocoevalcap)"}
    details = [{"trial": t, "CIDEr": ciders[t], "SPICE": spices[t]} for t in range(trials)]
    result = make_result("captioning_ltu", metrics, meta, unavailable, details)
    write_report(result, output or default_output(input, ".ltu.json"))
    return result
