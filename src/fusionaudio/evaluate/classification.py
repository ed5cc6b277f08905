"""Classification by text-embedding similarity (the reference's ``eval_Cls.py`` method).

Each prediction is embedded as ``"sound of " + prediction.lower()`` and each label as
``"sound of " + label.lower()`` with the vocabulary's name kept as it is (``car_horn`` keeps its
underscore, as the reference does; ``keep_underscores=False`` turns ``_`` into spaces); labels are
scored by cosine similarity, each distinct text once, in float64 and in the reference's order of
operations (:func:`score_records`). As the reference's ``caption`` task (its published setting), the
whole answer is embedded (``pred_format="caption"``, the default). ``pred_format="labels"`` splits
every answer as the reference's ``cla`` task does (after the last ``": "``, on ``"; "``), ``"auto"``
only answers that start with ``"Label:"``/``"Labels:"``; the similarities of the items are combined by
``aggregation``: ``accu`` sums them (the reference's default), ``max`` keeps the largest, starting from
0 as the reference does (negative similarities never count).

Beside our metrics, the report carries the published ones (``published_mAP``, ``published_mAUC``,
``published_acc``; see :mod:`.cls_stats` for how classes without positives count) and the
reference's files ``all_pred.npy``, ``all_truth.npy``, ``result_summary.csv`` go to
``<output stem>_cla_report/``. Only the embedders ``text-embedding-3-large`` and
``bert-large-uncased`` reproduce the published setting; the default MiniLM is marked
"not comparable with published numbers". Single-label sets report accuracy (argmax), macro-F1, mAP, mAUC, a
per-class precision/recall/F1 table and a confusion-matrix PNG; multi-label sets (ground truth
a list or a ``label_sep``-separated string, optionally prefixed ``"Labels:"`` as in the FSD50K
eval file) report mAP, mAUC, top-1 hit rate and per-class AP.

CLI::

    python -m fusionaudio.evaluate.classification --input preds.json \
        --vocabulary data/eval/vocabulary/ESC50.csv --output results/esc50.cls.json
"""

from __future__ import annotations

from fusionaudio.commands import function_main, print_result

import csv
import re
import sys
from pathlib import Path

import numpy as np

from fusionaudio.evaluate.cls_stats import reference_stats, write_reference_files
from fusionaudio.evaluate.embeddings import CachedEmbedder, make_backend, named_embedder, reference_cosine
from fusionaudio.evaluate.records import (
    DEFAULT_PRED_KEY,
    DEFAULT_REF_KEY,
    EvalInputError,
    count_null,
    get_field,
    get_prediction,
    load_predictions,
    normalize_text,
)
from fusionaudio.evaluate.report import default_output, make_result, write_report
from fusionaudio.evaluate.cls_stats import published_note

PREFIX = "sound of "
_LABELS_PREFIX = re.compile(r"^\s*labels?\s*:\s*", re.IGNORECASE)


# ----------------------------------------------------------------- vocabulary / labels
VOCABULARY_DIR = Path(__file__).with_name("data") / "vocabulary"


def packaged_vocabularies() -> list[str]:
    """Names of the packaged vocabularies: the reference's files (ESC50, FSD50K, FSDnoisy18k, TAU_Urban,
    UrbanSound8K), with the reference's names and index order."""
    return sorted(p.stem for p in VOCABULARY_DIR.glob("*.csv"))


def vocabulary_path(name_or_path: str) -> Path:
    """A vocabulary file: an existing path, else a packaged vocabulary by name (``ESC50``, ``FSD50K``, ...)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = VOCABULARY_DIR / f"{name_or_path}.csv"
    if packaged.is_file():
        return packaged
    raise EvalInputError(f"{p}: vocabulary file not found (packaged vocabularies: {', '.join(packaged_vocabularies())})")


def load_vocabulary(path: str) -> list[str]:
    """Label names from a CSV ``index,name[,...]`` (header optional; ``name``/``display_name`` columns),
    given as a path or as the name of a packaged vocabulary."""
    p = vocabulary_path(str(path))
    with p.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise EvalInputError(f"{p}: empty vocabulary")
    name_col = 1
    if not rows[0][0].strip().lstrip("-").isdigit():  # header row
        header = [c.strip().lower() for c in rows[0]]
        for cand in ("name", "display_name", "label"):
            if cand in header:
                name_col = header.index(cand)
                break
        rows = rows[1:]
    names = []
    for n, row in enumerate(rows):
        if len(row) <= name_col or not row[name_col].strip():
            raise EvalInputError(f"{p}: row {n + 1}: expected 'index,name', got {row}")
        names.append(row[name_col].strip())
    seen = {}
    for n, name in enumerate(names):
        key = normalize_text(name)
        if key in seen:
            raise EvalInputError(f"{p}: row {n + 1}: duplicate label {name!r} (also row {seen[key] + 1})")
        seen[key] = n
    return names


def parse_labels(value, sep: str = ";") -> list[str]:
    """Ground-truth labels from a list or a string (``"Labels: "`` prefix stripped, split on ``sep``)."""
    if isinstance(value, list):
        items = [str(v) for v in value]
    else:
        items = _LABELS_PREFIX.sub("", str(value)).split(sep) if sep else [str(value)]
    return [s.strip() for s in items if s.strip()]


def prediction_items(pred: str, pred_format: str = "caption", sep: str = ";") -> list[str]:
    """Texts to embed for one prediction: the whole caption, or the items of a label list."""
    if pred_format not in ("auto", "caption", "labels"):
        raise ValueError(f"pred_format must be auto, caption or labels, not {pred_format!r}")
    as_labels = pred_format == "labels" or (pred_format == "auto" and _LABELS_PREFIX.match(pred))
    if as_labels:
        # the reference: pred.split(': ')[-1].split('; '), each item left-stripped
        return [x.lstrip() for x in pred.split(": ")[-1].split(sep.strip() + " " if sep.strip() else sep)]
    return [pred]


# ----------------------------------------------------------------------------- metrics
def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """scikit-learn's average precision (tied scores grouped); NaN without positives (undefined)."""
    from sklearn.metrics import average_precision_score

    y_true = np.asarray(y_true, dtype=float)
    if y_true.sum() == 0:
        return float("nan")
    return float(average_precision_score(y_true, np.asarray(y_score, dtype=float)))


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """scikit-learn's ROC AUC (ties averaged); NaN unless both classes occur."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true, dtype=bool)
    if y_true.all() or not y_true.any():
        return float("nan")
    return float(roc_auc_score(y_true, np.asarray(y_score, dtype=float)))


def _nanmean(values) -> float | None:
    vals = [v for v in values if not np.isnan(v)]
    return float(np.mean(vals)) if vals else None


def classification_metrics(scores: np.ndarray, truth: np.ndarray, labels: list[str], multilabel: bool):
    """Metrics from a score matrix (n, C) and a binary truth matrix (n, C).

    Returns ``(metrics, per_class, confusion)``; ``confusion`` is ``None`` for multi-label sets.
    mAP/mAUC average over the classes where they are defined (classes with positives).
    """
    n, C = scores.shape
    ap = [average_precision(truth[:, c], scores[:, c]) for c in range(C)]
    auc = [roc_auc(truth[:, c], scores[:, c]) for c in range(C)]
    top = scores.argmax(axis=1)
    metrics = {"mAP": _nanmean(ap), "mAUC": _nanmean(auc)}
    per_class = []
    if multilabel:
        metrics["top1_hit"] = float(np.mean(truth[np.arange(n), top] > 0))
        metrics["n_classes_with_positives"] = int(sum(not np.isnan(a) for a in ap))
        for c in range(C):
            per_class.append({"label": labels[c], "support": int(truth[:, c].sum()), "AP": _num(ap[c])})
        return metrics, per_class, None
    true_idx = truth.argmax(axis=1)
    confusion = np.zeros((C, C), dtype=int)
    np.add.at(confusion, (true_idx, top), 1)
    metrics["accuracy"] = float(np.mean(top == true_idx))
    f1s = []
    for c in range(C):
        tp, support, predicted = confusion[c, c], confusion[c].sum(), confusion[:, c].sum()
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if support or predicted:
            f1s.append(f1)
        per_class.append({"label": labels[c], "support": int(support), "predicted": int(predicted),
                          "precision": float(p), "recall": float(r), "f1": float(f1), "AP": _num(ap[c])})
    metrics["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    return {"accuracy": metrics.pop("accuracy"), **metrics}, per_class, confusion


def _num(x: float):
    return None if np.isnan(x) else float(x)


def plot_confusion_matrix(confusion: np.ndarray, labels: list[str], path: str) -> str:
    """Save a confusion matrix (rows: true, columns: predicted) as a PNG (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    C = len(labels)
    size = max(5.0, 0.22 * C + 2)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(C), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(C), labels, fontsize=6)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title("confusion matrix")
    if C <= 30:
        thresh = confusion.max() / 2 if confusion.size else 0
        for i in range(C):
            for j in range(C):
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if confusion[i, j] > thresh else "black")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return str(path)


# -------------------------------------------------------------------------- pipeline
def label_text(label: str, keep_underscores: bool = True) -> str:
    """The text embedded for a label."""
    return PREFIX + (label if keep_underscores else label.replace("_", " ")).lower()


def score_records(pred_items: list[list[str]], labels: list[str], embedder, keep_underscores=True,
                  aggregation: str = "accu") -> np.ndarray:
    """Score matrix (n, C) of each record's items against each label, as the published scripts score it:
    each distinct text is embedded and compared once (:func:`.embeddings.reference_cosine`, float64 in the
    original's order), so duplicate answers score exactly alike; ``accu`` adds the item similarities to
    0.0 in item order, ``max`` keeps ``max(score, similarity)`` starting from 0 (negative similarities
    never count), as the original does."""
    if aggregation not in ("accu", "max"):
        raise ValueError(f"aggregation must be 'accu' or 'max', not {aggregation!r}")
    label_vecs = embedder.embed([label_text(lab, keep_underscores) for lab in labels])
    texts = [[PREFIX + item.lower() for item in items] for items in pred_items]
    distinct = list(dict.fromkeys(t for row in texts for t in row))
    row_of = {t: r for r, t in enumerate(distinct)}
    sims = reference_cosine(embedder.embed(distinct), label_vecs) if distinct else np.zeros((0, len(labels)))
    scores = np.zeros((len(pred_items), len(labels)))
    for i, row in enumerate(texts):
        for text in row:
            sim = sims[row_of[text]]
            scores[i] = scores[i] + sim if aggregation == "accu" else np.where(sim > scores[i], sim, scores[i])
    return scores


def evaluate_classification(
    input: str,
    output: str | None = None,
    vocabulary: str | None = None,
    pred_key: str = DEFAULT_PRED_KEY,
    ref_key: str = DEFAULT_REF_KEY,
    label_sep: str = ";",
    pred_format: str = "caption",
    multilabel: str | bool = "auto",
    keep_underscores: bool = True,
    aggregation: str = "accu",
    undefined_auc: str = "-1",
    reference_dir: str | None = None,
    backend: str = "st",
    embed_model: str | None = None,
    embed_base_url: str | None = None,
    embed_api_key_env: str = "OPENAI_API_KEY",
    cache_dir: str | None = None,
    no_cache: bool = False,
    device: str = "cpu",
    confusion_png: str | None = None,
    embedder=None,
    structured: bool = False,
) -> dict:
    """Evaluate a prediction file; writes ``output`` (JSON), ``.md`` and a confusion PNG.

    ``vocabulary``: CSV ``index,name`` (e.g. ``data/eval/vocabulary/ESC50.csv``); without it the
    label set is every label found in the ground truth. ``multilabel``: ``auto`` (any record with
    several labels), ``True`` or ``False``. ``pred_format``: ``caption`` (the whole answer, the
    reference's published setting), ``labels`` or ``auto`` (see the module docstring). ``embedder``: a name from
    ``minilm`` / ``text-embedding-3-large`` / ``bert-large-uncased`` (``embed_model`` = its local
    directory for minilm/bert; ``embed_base_url`` overrides the OpenAI URL), or an object with
    ``embed(texts)``; without it, ``backend``: ``st`` (``embed_model`` = local sentence-transformers
    dir, default all-MiniLM-L6-v2), ``bert`` (local dir) or ``openai`` (``embed_base_url`` +
    ``embed_model``, key from ``embed_api_key_env``). ``aggregation``: ``accu`` or ``max``.
    ``undefined_auc``: ``-1`` or ``nan`` for classes without positives (see :mod:`.cls_stats`).
    ``reference_dir``: where the reference's ``.npy``/``.csv`` files go (default
    ``<output stem>_cla_report``).
    """
    records, structured_metrics = load_predictions(input, pred_key, structured)
    truths, preds = [], []
    for i, rec in enumerate(records):
        gt = parse_labels(get_field(rec, ref_key, input, i, types=(str, list)), label_sep)
        if not gt:
            raise EvalInputError(f"{input}: record {i}: empty ground truth in field {ref_key!r}")
        truths.append(gt)
        preds.append(prediction_items(get_prediction(rec, pred_key, input, i), pred_format, label_sep))

    labels = load_vocabulary(vocabulary) if vocabulary else sorted({g for gt in truths for g in gt}, key=str.lower)
    truth = truth_matrix(truths, labels, input, vocabulary)
    is_multi = any(len(gt) > 1 for gt in truths) if multilabel == "auto" else bool(multilabel)
    if not is_multi and any(len(gt) > 1 for gt in truths):
        raise EvalInputError(f"{input}: multilabel=False but some records have several labels")

    embedder, comparability = _resolve_embedder(embedder, backend, embed_model, embed_base_url, embed_api_key_env,
                                                device, cache_dir, no_cache)
    scores = score_records(preds, labels, embedder, keep_underscores, aggregation)
    metrics, per_class, confusion = classification_metrics(scores, truth, labels, is_multi)
    published = reference_stats(scores, truth, undefined_auc)
    metrics.update(published_mAP=published["mAP"], published_mAUC=published["mAUC"], published_acc=published["acc"],
                   published_n_undefined_auc=published["n_undefined_auc"])

    output = output or default_output(input, ".cls.json")
    backend_id = getattr(getattr(embedder, "backend", embedder), "backend_id", type(embedder).__name__)
    meta = {"input": str(input), "n_records": len(records), "n_classes": len(labels), "multilabel": is_multi,
            "n_null_predictions": count_null(records, pred_key),
            "vocabulary": vocabulary or "labels found in the data", "backend": backend_id,
            "pred_key": pred_key, "ref_key": ref_key, "pred_format": pred_format, "label_prefix": PREFIX,
            "label_underscores": "kept (as the reference)" if keep_underscores else "turned into spaces",
            "aggregation": aggregation, "undefined_auc": undefined_auc,
            "comparability": comparability or "unknown (custom embedder object)",
            "published_metrics": published_note(published)}
    meta["reference_files"] = write_reference_files(
        reference_dir or str(Path(output).with_suffix("")) + "_cla_report", scores, truth, published)
    details = {"per_class": per_class,
               "records": [{"index": i, "audio_id": rec.get("audio_id"), "truth": truths[i],
                            "top1": labels[int(scores[i].argmax())]} for i, rec in enumerate(records)]}
    if confusion is not None:
        details["labels"] = labels
        details["confusion_matrix"] = confusion.tolist()
        png = confusion_png or str(Path(output).with_suffix("")) + "_confusion.png"
        meta["confusion_png"] = plot_confusion_matrix(confusion, labels, png)
    metrics.update(structured_metrics)
    result = make_result("classification", metrics, meta, details=details)
    write_report(result, output)
    return result


def truth_matrix(truths: list[list[str]], labels: list[str], input, vocabulary) -> np.ndarray:
    """Binary (n, C) truth; labels match ignoring case and ``_``/space; an unknown label is an error."""
    index = {normalize_text(lab): c for c, lab in enumerate(labels)}
    truth = np.zeros((len(truths), len(labels)))
    for i, gt in enumerate(truths):
        for g in gt:
            c = index.get(normalize_text(g))
            if c is None:
                raise EvalInputError(
                    f"{input}: record {i}: label {g!r} is not in the vocabulary "
                    f"({vocabulary or 'from data'}; {len(labels)} labels, e.g. {labels[:5]})"
                )
            truth[i, c] = 1
    return truth


def _resolve_embedder(embedder, backend, embed_model, embed_base_url, embed_api_key_env, device, cache_dir, no_cache):
    """``(embedder object, comparability note)`` from a name, an object, or the backend options."""
    if isinstance(embedder, str):
        named, comparability = named_embedder(embedder, embed_model, embed_base_url, embed_api_key_env, device)
        return CachedEmbedder(named, cache_dir, not no_cache), comparability
    if embedder is None:
        made = make_backend(backend, embed_model, embed_base_url, embed_api_key_env, device)
        return CachedEmbedder(made, cache_dir, not no_cache), _backend_comparability(backend, embed_model)
    return embedder, None


def _backend_comparability(backend: str, embed_model: str | None) -> str:
    from fusionaudio.evaluate.embeddings import NOT_COMPARABLE

    if backend == "openai" and embed_model == "text-embedding-3-large":
        return "comparable (OpenAI text-embedding-3-large, the published setting)"
    if backend == "bert":
        return "comparable if embed_model is bert-large-uncased (mean over all tokens)"
    return NOT_COMPARABLE


def _metrics_only(result):
    return result["metrics"] if isinstance(result, dict) and "metrics" in result else result


def _show(result) -> None:
    print_result(_metrics_only(result))
    if isinstance(result, dict) and result.get("metrics", {}).get("published_n_undefined_auc"):
        print(f"note: {result['meta']['published_metrics']}", file=sys.stderr)


def main(argv=None) -> int:
    return function_main(evaluate_classification, "python -m fusionaudio.evaluate.classification", argv, show=_show)

if __name__ == "__main__":
    raise SystemExit(main())
