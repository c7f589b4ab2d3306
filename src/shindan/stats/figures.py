"""Figures of the cohort statistics, as PNG bytes (written to files and embedded in reports)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to PNG bytes only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import t as t_dist  # noqa: E402

__all__ = ["box_by_grade", "calibration_plot", "odds_ratio_plot", "scatter_fit", "slopes_plot"]


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def scatter_fit(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str) -> bytes:
    """Scatter of ``y`` on ``x`` with the least-squares line and its 95% confidence band."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    ax.scatter(x, y, s=18, alpha=0.75, color="#2b6cb0", edgecolor="none")
    if np.ptp(x) > 0 and len(x) > 2:
        b, a = np.polyfit(x, y, 1)
        grid = np.linspace(x.min(), x.max(), 100)
        resid = y - (a + b * x)
        s = np.sqrt(resid @ resid / (len(x) - 2))
        se = s * np.sqrt(1 / len(x) + (grid - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
        tq = float(t_dist.ppf(0.975, len(x) - 2))
        ax.plot(grid, a + b * grid, color="#c53030", lw=1.5, label="least-squares fit")
        ax.fill_between(grid, a + b * grid - tq * se, a + b * grid + tq * se, color="#c53030",
                        alpha=0.15, lw=0, label="95% CI of the line")  # fmt: skip
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def box_by_grade(scores: np.ndarray, grades: np.ndarray, score_name: str, grade_name: str,
                 edges: Sequence[float] | None = None) -> bytes:  # fmt: skip
    """Box plot of the score per grade with the cases as dots, the medians joined, and the
    kappa binning's cut points as dashed lines."""
    s = np.asarray(scores, dtype=float)
    g = np.asarray(grades, dtype=float)
    levels = np.unique(g)
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    data = [s[g == lvl] for lvl in levels]
    ax.boxplot(data, positions=range(len(levels)), widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)  # jitter only
    for i, v in enumerate(data):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=12, alpha=0.6, color="#2b6cb0",
                   edgecolor="none")  # fmt: skip
    ax.plot(range(len(levels)), [np.median(v) for v in data], color="#c53030", lw=1.2,
            marker="o", ms=3, label="median")  # fmt: skip
    for e in edges or ():
        ax.axhline(e, color="grey", ls="--", lw=0.8)
    ax.set_xticks(range(len(levels)), [f"{lvl:g}" for lvl in levels])
    ax.set_xlabel(grade_name)
    ax.set_ylabel(score_name)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{score_name} by {grade_name}" + (" (dashed: kappa cut points)" if edges else ""),
                 fontsize=9)  # fmt: skip
    return _png(fig)


def slopes_plot(visits: pd.DataFrame, slopes: pd.DataFrame, max_cases: int = 60) -> bytes:
    """eGFR over years per case (thin lines) and the histogram of the per-case slopes."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.0, 3.4))
    for k, (_, d) in enumerate(visits.groupby("case", sort=False)):
        if k >= max_cases:
            break
        a.plot(d["years"], d["egfr"], lw=0.7, alpha=0.6, marker=".", ms=3)
    a.set_xlabel("years since first visit")
    a.set_ylabel("eGFR (mL/min/1.73 m²)")
    a.set_title(f"eGFR per case (first {min(max_cases, visits['case'].nunique())})", fontsize=9)
    b.hist(slopes["slope"], bins=min(30, max(5, len(slopes) // 3)), color="#2b6cb0", alpha=0.8)
    b.axvline(float(np.median(slopes["slope"])), color="#c53030", lw=1.2, label="median")
    b.set_xlabel("eGFR slope (mL/min/1.73 m² per year)")
    b.set_ylabel("cases")
    b.legend(fontsize=7, frameon=False)
    b.set_title("per-case OLS slopes", fontsize=9)
    return _png(fig)


def calibration_plot(y: np.ndarray, predicted: dict[str, np.ndarray], bins: int = 5) -> bytes:
    """Observed against mean out-of-fold predicted slope per model: cases, quantile-bin means
    and the identity line (a calibrated model's points lie on it)."""
    y = np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    colours = {"without_scores": "#718096", "with_scores": "#c53030"}
    for name, p in predicted.items():
        p = np.asarray(p, dtype=float)
        c = colours.get(name, "#2b6cb0")
        label = name.replace("_", " ")
        ax.scatter(p, y, s=10, alpha=0.35, color=c, edgecolor="none")
        q = pd.qcut(p, min(bins, len(np.unique(p))), labels=False, duplicates="drop")
        mp = [p[q == k].mean() for k in np.unique(q)]
        my = [y[q == k].mean() for k in np.unique(q)]
        ax.plot(mp, my, marker="o", color=c, lw=1.2, label=f"{label} (bin means)")
    lo = float(min(y.min(), *(np.min(p) for p in predicted.values())))
    hi = float(max(y.max(), *(np.max(p) for p in predicted.values())))
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--", label="identity")
    ax.set_xlabel("predicted slope, out of fold (per year)")
    ax.set_ylabel("observed slope (per year)")
    ax.set_title("calibration of the cross-validated predictions", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def odds_ratio_plot(terms: Sequence[dict[str, Any]]) -> bytes:
    """Forest plot of odds ratios with their CIs (log scale), intercept left out."""
    rows = [t for t in terms if t["name"] != "const"]
    fig, ax = plt.subplots(figsize=(4.8, 0.5 + 0.4 * len(rows)))
    for i, t in enumerate(rows):
        ax.plot([t["ci_low"], t["ci_high"]], [i, i], color="#2b6cb0", lw=1.5)
        ax.plot(t["odds_ratio"], i, "o", color="#2b6cb0")
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    labels = [t["name"] + (f" (per {t['unit']:g})" if t.get("unit", 1) != 1 else "") for t in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("odds ratio (log scale)")
    return _png(fig)
