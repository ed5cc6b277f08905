"""Classification statistics as the published evaluation computes them (``stats.py`` of LTU, reused by
FusionAudio's ``eval_Cls.py``), and the files that evaluation writes.

For a score matrix ``all_pred`` (n, C) and a binary truth matrix ``all_truth`` (n, C):

* ``acc`` -- accuracy of ``argmax(all_pred)`` against ``argmax(all_truth)`` over every row (for a
  multi-label row that is its lowest-index true class; for a row with no true class, class 0);
* per class, ``AP`` is scikit-learn's ``average_precision_score``: a class without positives gets
  AP = 0 (sklearn sets recall to one there), a class whose rows are all positive gets AP = 1;
* per class, ``auc`` is ``roc_auc_score``; where it is undefined (the class has only positives or only
  negatives) the reference's ``except`` branch stores ``-1``. scikit-learn >= 1.6 no longer raises there
  but returns NaN, so the very same script gives NaN with a current sklearn; ``undefined_auc`` selects
  ``-1`` (the reference's branch, default) or ``nan``;
* ``mAP`` and ``mAUC`` are the plain means over **all** classes (those 0 / -1 values included).

``write_reference_files`` writes ``all_pred.npy``, ``all_truth.npy`` and ``result_summary.csv``
(``np.savetxt`` of ``[mAP, mAUC, acc]``, one value a line), as the reference does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def reference_stats(all_pred: np.ndarray, all_truth: np.ndarray, undefined_auc: str = "-1") -> dict:
    """``{"mAP", "mAUC", "acc", "AP": [...], "auc": [...]}`` computed as the reference's ``calculate_stats``."""
    from sklearn import metrics

    if undefined_auc not in ("-1", "nan"):
        raise ValueError(f"undefined_auc must be '-1' or 'nan', not {undefined_auc!r}")
    all_pred, all_truth = np.asarray(all_pred, float), np.asarray(all_truth, float)
    if all_pred.shape != all_truth.shape or all_pred.ndim != 2:
        raise ValueError(f"all_pred {all_pred.shape} and all_truth {all_truth.shape} must be equal (n, C) shapes")
    acc = float(metrics.accuracy_score(np.argmax(all_truth, 1), np.argmax(all_pred, 1)))
    ap, auc = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns for classes without positives; handled below
        for k in range(all_truth.shape[1]):
            y, s = all_truth[:, k], all_pred[:, k]
            ap.append(float(metrics.average_precision_score(y, s, average=None)))
            if len(np.unique(y)) < 2:
                auc.append(-1.0 if undefined_auc == "-1" else float("nan"))
            else:
                auc.append(float(metrics.roc_auc_score(y, s, average=None)))
    undefined = sum(len(np.unique(all_truth[:, k])) < 2 for k in range(all_truth.shape[1]))
    return {"mAP": float(np.mean(ap)), "mAUC": float(np.mean(auc)), "acc": acc, "AP": ap, "auc": auc,
            "n_undefined_auc": int(undefined)}


def published_note(stats: dict) -> str:
    """Why ``published_mAUC`` / ``published_mAP`` can differ from ``mAUC`` / ``mAP`` (one sentence for the report)."""
    n, total = stats["n_undefined_auc"], len(stats["auc"])
    return (f"published_mAP/mAUC/acc are computed as the published eval_Cls.py computes them: means over all {total} "
            f"classes, where a class with only positives or only negatives in the data ({n} here) counts AUC -1 (and "
            "AP 0 without positives), so published_mAUC can be negative on a small or partial test set; mAP/mAUC "
            "average only the classes where they are defined")


def write_reference_files(folder, all_pred: np.ndarray, all_truth: np.ndarray, stats: dict) -> dict:
    """Write ``all_pred.npy``, ``all_truth.npy`` and ``result_summary.csv`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"all_pred": folder / "all_pred.npy", "all_truth": folder / "all_truth.npy",
             "result_summary": folder / "result_summary.csv"}
    np.save(paths["all_pred"], np.asarray(all_pred, float))
    np.save(paths["all_truth"], np.asarray(all_truth, float))
    np.savetxt(paths["result_summary"], [stats["mAP"], stats["mAUC"], stats["acc"]], delimiter=",")
    return {k: str(v) for k, v in paths.items()}
