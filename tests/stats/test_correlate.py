"""Correlation, ordinal trend and agreement: scipy/scikit-learn anchors, known effects
recovered within their CIs, and the no-effect case significant at about the stated rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st
from sklearn.metrics import cohen_kappa_score

from shindan.stats.correlate import (
    _rowwise_pearson,
    _weighted_kappa,
    bin_scores,
    bootstrap_indices,
    bootstrap_kendall,
    correlate,
    is_ordinal,
    jonckheere_terpstra,
    ordinal_agreement,
)


def _binomial_bounds(n: int, rate: float, tail: float = 1e-3) -> tuple[int, int]:
    """Counts outside which a Binomial(n, rate) falls with probability below 2 * tail."""
    return int(st.binom.ppf(tail, n, rate)), int(st.binom.isf(tail, n, rate))


def test_point_estimates_and_p_equal_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    r = correlate(x, y, n_boot=200, seed=1)
    sp, pe = st.spearmanr(x, y), st.pearsonr(x, y)
    assert r["n"] == 40
    assert r["spearman"]["rho"] == pytest.approx(sp.statistic, abs=1e-12)
    assert r["spearman"]["p"] == pytest.approx(sp.pvalue, rel=1e-8)
    assert r["pearson"]["r"] == pytest.approx(pe.statistic, abs=1e-12)
    assert r["pearson"]["p"] == pytest.approx(pe.pvalue, rel=1e-8)
    fisher = pe.confidence_interval(0.95)
    assert r["pearson"]["ci_fisher"] == pytest.approx([fisher.low, fisher.high], abs=1e-12)


def test_vectorised_bootstrap_equals_scipy_per_resample():
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(size=25), 1)  # ties, as rounded scores and grades have
    y = np.round(x + rng.normal(size=25), 0)
    idx = bootstrap_indices(25, 60, seed=2)
    want_r = [st.pearsonr(x[i], y[i]).statistic for i in idx]
    want_rho = [st.spearmanr(x[i], y[i]).statistic for i in idx]
    want_tau = [st.kendalltau(x[i], y[i]).statistic for i in idx]
    assert _rowwise_pearson(x[idx], y[idx]) == pytest.approx(want_r, abs=1e-8)
    ranks = _rowwise_pearson(st.rankdata(x[idx], axis=1), st.rankdata(y[idx], axis=1))
    assert ranks == pytest.approx(want_rho, abs=1e-8)
    assert bootstrap_kendall(x, y, idx) == pytest.approx(want_tau, abs=1e-8)
    # the CI is the percentile interval of exactly these resamples
    r = correlate(x, y, n_boot=60, seed=2)
    assert r["pearson"]["ci"] == pytest.approx(np.quantile(want_r, [0.025, 0.975]), abs=1e-8)


def test_weighted_kappa_equals_scikit_learn():
    rng = np.random.default_rng(5)
    for weights in ("linear", "quadratic"):
        a, b = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        b[:25] = a[:25]
        want = cohen_kappa_score(a, b, labels=[0, 1, 2, 3], weights=weights)
        assert _weighted_kappa(a, b, 4, weights) == pytest.approx(want, abs=1e-8)


def test_jonckheere_two_groups_is_mann_whitney_and_equals_kendall_trend():
    rng = np.random.default_rng(6)
    v = np.round(rng.normal(size=30), 1)  # with ties: the tie correction must agree too
    g = rng.integers(0, 2, 30)
    jt = jonckheere_terpstra(v, g)
    mw = st.mannwhitneyu(v[g == 1], v[g == 0], use_continuity=False, method="asymptotic")
    assert jt["J"] == pytest.approx(mw.statistic, abs=1e-12)
    assert jt["p"] == pytest.approx(mw.pvalue, rel=1e-8)
    # J is the sum of the U statistics of every ordered pair of groups
    g3 = rng.integers(0, 4, 30)
    jt3 = jonckheere_terpstra(v, g3)
    u = sum(
        st.mannwhitneyu(v[g3 == b], v[g3 == a]).statistic for a in range(4) for b in range(a + 1, 4)
    )
    assert jt3["J"] == pytest.approx(u, abs=1e-9)
    # untied values: JT's normal test is Kendall's tau-b test of value against group
    w = rng.normal(size=30)
    assert jonckheere_terpstra(w, g3)["p"] == pytest.approx(st.kendalltau(w, g3).pvalue, rel=1e-8)


def test_true_correlation_recovered_within_ci():
    rng = np.random.default_rng(7)
    rho = 0.6
    cover = 0
    for seed in range(40):
        xy = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=120)
        r = correlate(xy[:, 0], xy[:, 1], n_boot=400, seed=seed)
        lo, hi = r["pearson"]["ci"]
        cover += lo <= rho <= hi
    # a 95% interval covers the truth in about 38 of 40 runs; below 33 is p < 0.002
    assert cover >= _binomial_bounds(40, 0.95)[0] - 1, cover


def test_no_effect_significant_at_the_stated_rate():
    n_seeds, alpha = 200, 0.05
    hits = {"spearman": 0, "pearson": 0, "jonckheere": 0, "boot_excludes_0": 0}
    for seed in range(n_seeds):
        rng = np.random.default_rng(1000 + seed)
        x = rng.normal(size=30)
        y = rng.normal(size=30)
        grade = rng.integers(0, 4, 30)
        r = correlate(x, y, n_boot=200, seed=seed)
        hits["spearman"] += r["spearman"]["p"] < alpha
        hits["pearson"] += r["pearson"]["p"] < alpha
        lo, hi = r["spearman"]["ci"]
        hits["boot_excludes_0"] += not (lo <= 0 <= hi)
        hits["jonckheere"] += jonckheere_terpstra(x, grade)["p"] < alpha
    low, high = _binomial_bounds(n_seeds, alpha)
    for name, k in hits.items():
        assert low <= k <= high, (name, k, (low, high))


def test_ordinal_trend_recovered_and_binning_stated():
    rng = np.random.default_rng(8)
    fib = rng.beta(2, 5, 150)
    grade = bin_scores(fib + rng.normal(0, 0.04, 150), [0.05, 0.25, 0.5])
    r = ordinal_agreement(fib, grade, edges=[0.05, 0.25, 0.5], n_boot=300, seed=0)
    assert r["kendall"]["tau"] == pytest.approx(st.kendalltau(fib, grade).statistic, abs=1e-12)
    assert r["kendall"]["ci"][0] > 0.4 and r["jonckheere"]["p"] < 1e-10
    assert r["kappa"]["edges"] == [0.05, 0.25, 0.5] and r["kappa"]["binning"] == "given cut points"
    want = cohen_kappa_score(grade, bin_scores(fib, [0.05, 0.25, 0.5]), weights="linear")
    assert r["kappa"]["kappa"] == pytest.approx(want, abs=1e-12)
    assert r["kappa"]["ci"][0] < want < r["kappa"]["ci"][1]
    default = ordinal_agreement(fib, grade, n_boot=100)
    assert len(default["kappa"]["edges"]) == 3 and "quantiles" in default["kappa"]["binning"]
    with pytest.raises(ValueError, match="cut points"):
        ordinal_agreement(fib, grade, edges=[0.1, 0.2], n_boot=100)


def test_is_ordinal():
    assert is_ordinal(np.array([0, 1, 2, 3, 3, 1.0]))
    assert not is_ordinal(np.array([0.5, 1, 2]))
    assert not is_ordinal(np.arange(20.0))
