"""Caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE through pycocoevalcap) on tokenized captions."""

from __future__ import annotations

import re
import shutil
from pathlib import Path


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


def _metric_list(metrics) -> list[str]:
    if isinstance(metrics, str):
        metrics = [m for m in re.split(r"[,\s]+", metrics) if m]
    metrics = [m.lower() for m in metrics]
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise ValueError(f"unknown caption metrics {bad}; choose from {ALL_METRICS}")
    return metrics


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
