"""Correlation of a score with a clinical measure or a pathologist's grade.

Continuous pairs: Spearman's rho and Pearson's r (scipy.stats), each with a percentile
bootstrap CI over cases. Ordinal grades add Kendall's tau-b (scipy.stats), the
Jonckheere–Terpstra test of a trend across grades (normal approximation with the tie
correction) and Cohen's weighted kappa (scikit-learn) between the grade and the score
binned into as many grades at stated cut points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as st

__all__ = [
    "bin_scores",
    "bootstrap_indices",
    "bootstrap_kendall",
    "correlate",
    "is_ordinal",
    "jonckheere_terpstra",
    "ordinal_agreement",
]

# Grades are integers with at most this many levels (Banff ci/ct 0-3, IFTA grades 0-3).
MAX_GRADE_LEVELS = 7


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` case indices drawn with replacement (the same for every statistic)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair of two ``(B, n)`` arrays (NaN for a constant row)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / den


def _ci(values: np.ndarray, level: float) -> list[float | None]:
    v = values[np.isfinite(values)]
    if len(v) < 10:
        return [None, None]
    a = (1 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return [float(lo), float(hi)]


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def is_ordinal(values: np.ndarray) -> bool:
    """Whether values look like grades: whole numbers with 2 to 7 levels.

    Examples
    --------
    >>> is_ordinal(np.array([0, 1, 1, 3, 2.0])), is_ordinal(np.array([45.2, 61.0, 38.5]))
    (True, False)
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) and np.all(v == np.round(v)) and 2 <= len(np.unique(v)) <= MAX_GRADE_LEVELS)


def correlate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Spearman and Pearson correlation with percentile bootstrap CIs.

    Parameters
    ----------
    x, y : (n,) arrays of float
        Paired values without NaN (e.g. a fibrosis score and eGFR).
    n_boot : int
        Bootstrap resamples of cases (the same resamples for every statistic).
    seed : int
        Seed of the resampling.
    level : float
        Level of the intervals.

    Returns
    -------
    dict
        ``n``, ``spearman`` {``rho``, ``ci``, ``p``}, ``pearson`` {``r``, ``ci``, ``p``,
        ``ci_fisher``} (``p`` from scipy.stats, two-sided; ``ci`` percentile bootstrap;
        ``ci_fisher`` the Fisher-z interval for comparison), ``bootstrap`` {``n_boot``,
        ``seed``, ``level``}.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=50)
    >>> r = correlate(x, x + rng.normal(size=50), n_boot=500)
    >>> round(r["pearson"]["r"], 2), r["pearson"]["ci"][0] > 0
    (0.72, True)
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if len(y) != n or n < 3:
        raise ValueError(f"need two paired arrays of at least 3 values, got {len(x)}, {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    sp = st.spearmanr(x, y)
    pe = st.pearsonr(x, y)
    idx = bootstrap_indices(n, n_boot, seed)
    xb, yb = x[idx], y[idx]
    r_boot = _rowwise_pearson(xb, yb)
    rho_boot = _rowwise_pearson(st.rankdata(xb, axis=1), st.rankdata(yb, axis=1))
    fisher = pe.confidence_interval(confidence_level=level) if n > 3 else None
    return {
        "n": int(n),
        "spearman": {
            "rho": _num(sp.statistic),
            "ci": _ci(rho_boot, level),
            "p": _num(sp.pvalue),
        },
        "pearson": {
            "r": _num(pe.statistic),
            "ci": _ci(r_boot, level),
            "p": _num(pe.pvalue),
            "ci_fisher": [_num(fisher.low), _num(fisher.high)] if fisher else [None, None],
        },
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "level": float(level)},
    }


def jonckheere_terpstra(values: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Jonckheere–Terpstra test of an ordered trend of ``values`` across ordered ``groups``.

    ``J`` counts, over every pair of cases in different groups, the pairs whose value rises
    with the group (ties count one half): the sum of the Mann–Whitney U statistics of every
    ordered pair of groups. Under no trend its mean is ``(N² - Σ n_g²) / 4``; the variance is
    the tie-corrected one (Hollander, Wolfe & Chicken, Nonparametric Statistical Methods).
    The p-value is two-sided from the normal approximation (no continuity correction); with
    two groups it is the Mann–Whitney U test's, and with untied values it is Kendall's tau-b
    test of value against group (both checked in the tests).

    Returns
    -------
    dict
        ``J``, ``mean``, ``sd``, ``z``, ``p`` (two-sided), ``groups`` (sizes, in order).

    Examples
    --------
    >>> jt = jonckheere_terpstra(np.array([1.0, 2, 3, 4, 5, 6]), np.array([0, 0, 1, 1, 2, 2]))
    >>> jt["J"], round(jt["z"], 3)
    (12.0, 2.384)
    """
    v = np.asarray(values, dtype=float)
    g = np.asarray(groups)
    levels = np.unique(g)
    if len(levels) < 2:
        raise ValueError("the Jonckheere–Terpstra test needs at least two groups")
    # pairs (a, b) with group a below group b: +1 if v rises, +1/2 if tied
    lower = g[:, None] < g[None, :]
    rise = (v[:, None] < v[None, :]) + 0.5 * (v[:, None] == v[None, :])
    j = float((lower * rise).sum())
    n = float(len(v))
    ng = np.array([np.sum(g == lvl) for lvl in levels], dtype=float)
    _, t = np.unique(v, return_counts=True)
    t = t.astype(float)
    mean = (n * n - np.sum(ng * ng)) / 4
    var = (
        n * (n - 1) * (2 * n + 5)
        - np.sum(ng * (ng - 1) * (2 * ng + 5))
        - np.sum(t * (t - 1) * (2 * t + 5))
    ) / 72
    if n > 2:
        var += (
            np.sum(ng * (ng - 1) * (ng - 2))
            * np.sum(t * (t - 1) * (t - 2))
            / (36 * n * (n - 1) * (n - 2))
        )
    var += np.sum(ng * (ng - 1)) * np.sum(t * (t - 1)) / (8 * n * (n - 1))
    sd = float(np.sqrt(var)) if var > 0 else float("nan")
    z = (j - mean) / sd if sd > 0 else float("nan")
    p = float(2 * st.norm.sf(abs(z))) if np.isfinite(z) else float("nan")
    return {
        "J": j,
        "mean": float(mean),
        "sd": sd,
        "z": float(z),
        "p": p,
        "groups": [int(k) for k in ng],
    }


def bin_scores(scores: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Grade ``k`` for a score above ``edges[k-1]`` and at most ``edges[k]``.

    Examples
    --------
    >>> bin_scores(np.array([0.03, 0.05, 0.2, 0.3, 0.7]), [0.05, 0.25, 0.5])
    array([0, 0, 1, 2, 3])
    """
    return np.searchsorted(np.asarray(edges, dtype=float), scores, side="left")


def _marginal_edges(scores: np.ndarray, grades: np.ndarray, levels: np.ndarray) -> list[float]:
    """Cut points giving the binned score the grades' distribution (cumulative shares)."""
    share = np.cumsum([np.mean(grades == lvl) for lvl in levels])[:-1]
    return [float(e) for e in np.quantile(scores, share)]


def bootstrap_kendall(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``(x[i], y[i])`` for every row ``i`` of ``idx``, at once.

    A resample is a count per case ``c``; a sum over its pairs of a pair table ``M`` is
    ``(cᵀ M c - trace) / 2``, so concordance and ties need no loop over resamples.
    """
    n = len(x)
    counts = np.zeros((len(idx), n))
    np.add.at(counts, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.ravel()), 1.0)
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    tx = (x[:, None] == x[None, :]).astype(float)
    ty = (y[:, None] == y[None, :]).astype(float)

    def pairs(m: np.ndarray) -> np.ndarray:
        return ((counts @ m) * counts).sum(axis=1)  # cᵀ M c per resample, by BLAS

    m = idx.shape[1]
    n0 = m * (m - 1) / 2
    num = pairs(sx * sy) / 2  # tied pairs (incl. a case with itself) add 0
    n1 = (pairs(tx) - m) / 2
    n2 = (pairs(ty) - m) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.sqrt((n0 - n1) * (n0 - n2))


def _weighted_kappa(a: np.ndarray, b: np.ndarray, k: int, weights: str) -> float:
    """Cohen's weighted kappa of two codings 0..k-1 (as scikit-learn's, for the bootstrap)."""
    cm = np.bincount(a * k + b, minlength=k * k).reshape(k, k).astype(float)
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / cm.sum()
    d = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :]).astype(float)
    w = d if weights == "linear" else d**2
    den = (w * expected).sum()
    return float(1 - (w * cm).sum() / den) if den > 0 else float("nan")


def ordinal_agreement(
    scores: np.ndarray,
    grades: np.ndarray,
    *,
    edges: Sequence[float] | None = None,
    weights: str = "linear",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Kendall's tau-b, the Jonckheere–Terpstra trend test and weighted kappa.

    Parameters
    ----------
    scores : (n,) float
        The AI score.
    grades : (n,) int
        The pathologist's grade, ordered (e.g. Banff ci 0-3).
    edges : sequence of float, optional
        Score cut points between consecutive grades (one fewer than the grade levels), e.g.
        ``[0.05, 0.25, 0.5]`` for Banff ci from the fibrosis fraction. Default: the score's
        quantiles at the grades' cumulative shares, so the binned score has the grades'
        distribution (stated in the result).
    weights : {"linear", "quadratic"}
        Kappa weights.
    n_boot, seed, level
        Bootstrap of tau and kappa (same resamples as :func:`correlate` with that seed).

    Returns
    -------
    dict
        ``kendall`` {``tau``, ``ci``, ``p``}, ``jonckheere`` (see
        :func:`jonckheere_terpstra`), ``kappa`` {``kappa``, ``ci``, ``weights``, ``edges``,
        ``binning``, ``levels``}, ``by_grade`` {grade: {n, median, q1, q3}}.
    """
    from sklearn.metrics import cohen_kappa_score

    if weights not in ("linear", "quadratic"):
        raise ValueError(f"weights must be linear or quadratic, got {weights!r}")
    s = np.asarray(scores, dtype=float)
    g = np.asarray(grades, dtype=float)
    levels = np.unique(g)
    if edges is None:
        edge_list = _marginal_edges(s, g, levels)
        binning = "score quantiles at the grades' cumulative shares (binned score has the grades' distribution)"  # noqa: E501
    else:
        edge_list = [float(e) for e in edges]
        if len(edge_list) != len(levels) - 1:
            raise ValueError(
                f"{len(levels)} grade levels need {len(levels) - 1} cut points, "
                f"got {len(edge_list)}"
            )
        if any(b <= a for a, b in zip(edge_list, edge_list[1:], strict=False)):
            raise ValueError(f"cut points must increase: {edge_list}")
        binning = "given cut points"
    binned = levels[bin_scores(s, edge_list)]
    labels = list(levels)
    kappa = cohen_kappa_score(g, binned, labels=labels, weights=weights)
    kt = st.kendalltau(s, g)
    idx = bootstrap_indices(len(s), n_boot, seed)
    tau_boot = bootstrap_kendall(s, g, idx)
    gi = np.searchsorted(levels, g)
    bi = np.searchsorted(levels, binned)
    kappa_boot = np.array([_weighted_kappa(gi[i], bi[i], len(levels), weights) for i in idx])
    by_grade = {}
    for lvl in levels:
        v = s[g == lvl]
        q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
        by_grade[f"{lvl:g}"] = {
            "n": int(len(v)),
            "median": float(med),
            "q1": float(q1),
            "q3": float(q3),
        }
    return {
        "kendall": {"tau": _num(kt.statistic), "ci": _ci(tau_boot, level), "p": _num(kt.pvalue)},
        "jonckheere": jonckheere_terpstra(s, g),
        "kappa": {
            "kappa": _num(kappa),
            "ci": _ci(kappa_boot, level),
            "weights": weights,
            "edges": edge_list,
            "binning": binning,
            "levels": [float(v) for v in levels],
        },
        "by_grade": by_grade,
    }
