"""Classification metrics: accuracy, macro-F1, per-class precision/recall, confusion matrix,
one-vs-rest ROC-AUC with bootstrap 95% CIs, Youden cut-offs, calibration (ECE, Brier).

Everything that scikit-learn computes is computed by scikit-learn; this module only gathers it
into one JSON-ready dictionary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "bootstrap_auc",
    "calibration",
    "classification_report",
    "youden_cutoff",
]


def bootstrap_auc(
    y_true: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Binary ROC-AUC with a percentile bootstrap CI: ``(auc, low, high)``.

    Resamples cases with replacement; resamples holding one class only are skipped.
    Returns NaNs when ``y_true`` has a single class.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        return float("nan"), float("nan"), float("nan")
    auc = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    n = len(y)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        yi = y[i]
        if yi.all() or not yi.any():
            continue
        boots.append(roc_auc_score(yi, s[i]))
    if not boots:
        return auc, float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a])
    return auc, float(lo), float(hi)


def youden_cutoff(y_true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The score threshold maximising Youden's J = sensitivity + specificity - 1.

    Returns ``threshold`` (predict positive when score >= threshold), ``sensitivity``,
    ``specificity`` and ``j`` there.
    """
    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        nan = float("nan")
        return {"threshold": nan, "sensitivity": nan, "specificity": nan, "j": nan}
    fpr, tpr, thr = roc_curve(y, np.asarray(score, dtype=np.float64))
    k = int(np.argmax(tpr - fpr))
    # roc_curve's first threshold is +inf (nothing positive); clip to a usable probability.
    t = float(min(thr[k], 1.0))
    return {
        "threshold": t,
        "sensitivity": float(tpr[k]),
        "specificity": float(1 - fpr[k]),
        "j": float(tpr[k] - fpr[k]),
    }


def calibration(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Reliability of the top-label confidence and the Brier score.

    Parameters
    ----------
    y_true : (N,) int
    probs : (N, K) float, rows sum to 1
    n_bins : int
        Equal-width confidence bins on [0, 1].

    Returns
    -------
    dict
        ``ece`` (expected calibration error: count-weighted mean |accuracy - confidence| over
        bins), ``brier`` (multi-class Brier score, sum over classes, as scikit-learn computes
        it; for two classes the usual binary Brier of the second class), and ``bins``: list of
        ``{low, high, count, confidence, accuracy}`` (empty bins have nulls).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        if n:
            c, a = float(conf[sel].mean()), float(correct[sel].mean())
            ece += n / len(y) * abs(a - c)
        else:
            c = a = None
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": n,
                "confidence": c,
                "accuracy": a,
            }
        )
    labels = list(range(p.shape[1]))
    if p.shape[1] == 2:
        brier = float(brier_score_loss(y, p[:, 1], labels=labels))
    else:
        brier = float(brier_score_loss(y, p, labels=labels))
    return {"ece": float(ece), "brier": brier, "n_bins": n_bins, "bins": bins}


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    predicted: Sequence[int] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Every metric of a probabilistic classifier, as a JSON-ready dictionary.

    Parameters
    ----------
    y_true : (N,) int
        True class indices into ``classes``.
    probs : (N, K) float
        Predicted class probabilities; the prediction is the arg-max unless ``predicted``.
    classes : list of str
    n_boot : int
        Bootstrap resamples for the AUC confidence intervals (0 = no intervals).
    seed : int
        Bootstrap seed.
    predicted : (N,) int, optional
        The predicted class indices (e.g. by a model card's cut-off); default: the arg-max.

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``macro_f1``, ``balanced_accuracy`` (mean recall), ``confusion``
        (rows true, columns predicted, in ``classes`` order), ``per_class`` {class: precision,
        recall, f1, support, auc, auc_ci, youden}, ``macro_auc`` (mean one-vs-rest AUC over
        classes present) with ``macro_auc_ci``, and ``calibration``.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7
    k = len(classes)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(f"probs must be (N, {k}), got {p.shape}")
    pred = p.argmax(axis=1) if predicted is None else np.asarray(predicted, dtype=np.int64)
    labels = list(range(k))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = [c for c in labels if (y == c).any()]
    per_class: dict[str, Any] = {}
    aucs = []
    for c in labels:
        yc = y == c
        auc, lo, hi = (
            bootstrap_auc(yc, p[:, c], n_boot=n_boot, seed=seed + c)
            if n_boot
            else (
                (float(roc_auc_score(yc, p[:, c])) if 0 < yc.sum() < len(y) else float("nan")),
                float("nan"),
                float("nan"),
            )
        )
        if np.isfinite(auc):
            aucs.append(auc)
        per_class[classes[c]] = {
            "precision": float(prec[c]),
            "recall": float(rec[c]),
            "f1": float(f1[c]),
            "support": int(sup[c]),
            "auc": _num(auc),
            "auc_ci": [_num(lo), _num(hi)],
            "youden": {k2: _num(v) for k2, v in youden_cutoff(yc, p[:, c]).items()},
        }
    macro_auc_ci = [None, None]
    if n_boot and len(present) >= 2:
        macro_auc_ci = _macro_auc_ci(y, p, present, n_boot, seed)
    return {
        "n": int(len(y)),
        "classes": list(classes),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "balanced_accuracy": float(np.mean([rec[c] for c in present])) if present else None,
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "per_class": per_class,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "macro_auc_ci": macro_auc_ci,
        "calibration": calibration(y, p, n_bins=n_bins),
    }


def _macro_auc_ci(
    y: np.ndarray, p: np.ndarray, present: list[int], n_boot: int, seed: int
) -> list[float | None]:
    """Percentile bootstrap CI of the mean one-vs-rest AUC (resampling cases jointly)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        yi, pi = y[i], p[i]
        a = [roc_auc_score(yi == c, pi[:, c]) for c in present if 0 < (yi == c).sum() < n]
        if len(a) == len(present):
            vals.append(np.mean(a))
    if not vals:
        return [None, None]
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return [float(lo), float(hi)]


def _num(v: float) -> float | None:
    """JSON-safe float (NaN → None)."""
    return None if v is None or not np.isfinite(v) else float(v)
