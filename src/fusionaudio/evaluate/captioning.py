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

import re
import shutil
from pathlib import Path

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
from fusionaudio.evaluate.report import default_output, make_result, write_report

ALL_METRICS = ("bleu", "meteor", "rouge", "cider", "spice")
# tokens the COCO toolkit drops after PTB tokenisation
_PUNCT = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}


def simple_tokenize(text: str) -> str:
    """Java-free approximation of the PTB tokenizer + punctuation removal (lower-cased)."""
    text = text.lower().replace("\n", " ")
    text = re.sub(r"(n't|'s|'re|'ve|'ll|'d|'m)\b", r" \1", text)
    tokens = re.findall(r"n't|'\w+|\w+(?:[-.]\w+)*|[^\w\s]", text)
    return " ".join(t for t in tokens if t not in _PUNCT and not re.fullmatch(r"[^\w\s]", t))


def tokenize(captions: dict[str, list[str]], tokenizer: str = "ptb") -> dict[str, list[str]]:
    """Tokenise ``{key: [caption, ...]}`` with the PTB tokenizer (``ptb``) or :func:`simple_tokenize`."""
    if tokenizer == "simple":
        return {k: [simple_tokenize(c) for c in caps] for k, caps in captions.items()}
    if tokenizer != "ptb":
        raise ValueError(f"tokenizer must be 'ptb' or 'simple', not {tokenizer!r}")
    if shutil.which("java") is None:
        raise RuntimeError("the PTB tokenizer needs Java on PATH (or pass tokenizer='simple')")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({k: [{"caption": c} for c in caps] for k, caps in captions.items()})
    for k, caps in captions.items():
        if len(out.get(k, [])) != len(caps):
            raise RuntimeError(f"PTB tokenizer lost captions for clip {k!r}")
    return out


def _spice_unavailable_reason() -> str | None:
    import pycocoevalcap

    lib = Path(list(pycocoevalcap.__path__)[0]) / "spice" / "lib"
    missing = [j for j in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar") if not (lib / j).is_file()]
    if missing:
        return (f"Stanford CoreNLP models not found in {lib} ({', '.join(missing)}); fetch them once with "
                "network access via pycocoevalcap.spice.get_stanford_models.get_stanford_models()")
    if shutil.which("java") is None:
        return "java not found on PATH"
    return None


def caption_scores(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    metrics=ALL_METRICS,
    tokenizer: str = "ptb",
) -> tuple[dict, dict, dict]:
    """Corpus scores for ``{clip: hypothesis}`` against ``{clip: [reference, ...]}``.

    Returns ``(scores, unavailable, per_clip)``: ``scores`` maps metric names to floats (or
    ``None`` with the reason in ``unavailable``); ``per_clip`` maps clip keys to CIDEr/METEOR.
    """
    metrics = _metric_list(metrics)
    if set(predictions) != set(references):
        raise ValueError("predictions and references must have the same clip keys")
    keys = list(predictions)
    res = tokenize({k: [predictions[k]] for k in keys}, tokenizer)
    gts = tokenize({k: list(references[k]) for k in keys}, tokenizer)
    scores: dict = {}
    unavailable: dict = {}
    per_clip: dict = {k: {} for k in keys}
    if "bleu" in metrics:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if "meteor" in metrics:
        if shutil.which("java") is None:
            scores["METEOR"], unavailable["METEOR"] = None, "java not found on PATH"
        else:
            from pycocoevalcap.meteor.meteor import Meteor

            meteor = Meteor()
            try:
                clean = {k: [h.replace("|||", " ") for h in v] for k, v in res.items()}
                score, each = meteor.compute_score(gts, clean)
            finally:
                del meteor
            scores["METEOR"] = float(score)
            for k, s in zip(gts.keys(), each):
                per_clip[k]["METEOR"] = float(s)
    if "rouge" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    if "cider" in metrics:
        from pycocoevalcap.cider.cider import Cider

        score, each = Cider().compute_score(gts, res)
        scores["CIDEr"] = float(score)
        for k, s in zip(gts.keys(), each):
            per_clip[k]["CIDEr"] = float(s)
    if "spice" in metrics:
        reason = _spice_unavailable_reason()
        if reason is None:
            try:
                from pycocoevalcap.spice.spice import Spice

                scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
            except Exception as e:  # SPICE's Java side is fragile (Java version, LMDB cache)
                reason = f"SPICE failed: {type(e).__name__}: {e}"
        if reason is not None:
            scores["SPICE"], unavailable["SPICE"] = None, reason
        if "cider" in metrics:
            if scores["SPICE"] is None:
                scores["SPIDEr"], unavailable["SPIDEr"] = None, "needs SPICE, which is unavailable"
            else:
                scores["SPIDEr"] = (scores["CIDEr"] + scores["SPICE"]) / 2
    return scores, unavailable, per_clip


def _metric_list(metrics) -> list[str]:
    if isinstance(metrics, str):
        metrics = [m for m in re.split(r"[,\s]+", metrics) if m]
    metrics = [m.lower() for m in metrics]
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise ValueError(f"unknown caption metrics {bad}; choose from {ALL_METRICS}")
    return metrics


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
        from fusionaudio.evaluate.captioning_ltu import evaluate_ltu

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
