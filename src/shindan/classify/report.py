"""The ``classify evaluate`` HTML report: metrics tables and embedded PNG plots, fully offline."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to PNG bytes only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

_env = Environment(
    loader=PackageLoader("shindan.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


def _png(fig: plt.Figure) -> str:
    """A figure as a ``data:image/png;base64`` URI (and close it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Confusion matrix (rows true, columns predicted) with counts, shaded by row share."""
    cm = np.asarray(confusion, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _png(fig)


def roc_figure(
    y_true: np.ndarray, probs: np.ndarray, report: dict[str, Any], order: Sequence[int]
) -> str:
    """One-vs-rest ROC curves with AUC, its bootstrap 95% CI and the Youden point."""
    classes = report["classes"]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for c in order:
        yc = y_true == c
        if yc.all() or not yc.any():
            continue
        fpr, tpr, _ = roc_curve(yc, probs[:, c])
        pc = report["per_class"][classes[c]]
        lo, hi = pc["auc_ci"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        (line,) = ax.plot(fpr, tpr, lw=1.3, label=f"{classes[c]}: {pc['auc']:.3f}{ci}")
        yd = pc["youden"]
        if yd["sensitivity"] is not None:
            ax.plot(1 - yd["specificity"], yd["sensitivity"], "o", ms=4, color=line.get_color())
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC (one vs rest), AUC [95% CI]; dots: Youden cut-off", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    return _png(fig)


def calibration_figure(cal: dict[str, Any]) -> str:
    """Reliability diagram of the top-label confidence, with bin counts."""
    bins = [b for b in cal["bins"] if b["count"]]
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(4.6, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", ms=4)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Calibration: ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}", fontsize=9)
    ax.set_ylim(-0.01, 1.01)
    width = 1.0 / cal["n_bins"]
    ax2.bar(
        [b["low"] for b in cal["bins"]],
        [b["count"] for b in cal["bins"]],
        width=width,
        align="edge",
        color="grey",
    )
    ax2.set_xlabel("confidence (top-class probability)")
    ax2.set_ylabel("images")
    ax2.set_xlim(0, 1)
    return _png(fig)


def render_report(
    out: str | Path,
    report: dict[str, Any],
    y_true: np.ndarray,
    probs: np.ndarray,
    positive: str | None = None,
) -> Path:
    """Write the self-contained HTML report for a ``classify evaluate`` run."""
    classes = report["classes"]
    order = list(range(len(classes)))
    if len(classes) == 2:
        # For two classes both curves carry the same information: show the positive one.
        order = [classes.index(positive)] if positive else [0]
    html = _env.get_template("classify_evaluate.html.j2").render(
        r=report,
        confusion_png=confusion_figure(report["confusion"], classes),
        roc_png=roc_figure(np.asarray(y_true), np.asarray(probs), report, order),
        calibration_png=calibration_figure(report["calibration"]),
    )
    out = Path(out)
    out.write_text(html, encoding="utf-8")
    return out
