"""eGFR slopes and the cross-validated prognosis: statsmodels/scipy/scikit-learn anchors, a
true slope and a true score effect recovered, and no effect rejected at about the stated rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats as st

from shindan.stats.cohort import CohortError
from shindan.stats.prognosis import corrected_resampled_ttest, cross_validate, in_sample
from shindan.stats.slope import mixed_slopes, ols_slopes, read_visits


def _visits(n_cases: int, slope: float, seed: int, slope_sd: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cases):
        b, s = rng.normal(60, 15), rng.normal(slope, slope_sd)
        k = int(rng.integers(3, 8))
        for t in np.sort(rng.uniform(0, 5, k)):
            rows.append({"case": f"C{i:03d}", "years": t, "egfr": b + s * t + rng.normal(0, 3)})
    v = pd.DataFrame(rows)
    v["years"] -= v.groupby("case")["years"].transform("min")
    return v


def test_ols_slopes_equal_statsmodels():
    v = _visits(12, -2.0, seed=1)
    got = ols_slopes(v).set_index("case")
    for case, d in v.groupby("case"):
        res = sm.OLS(d["egfr"].to_numpy(), sm.add_constant(d["years"].to_numpy())).fit()
        assert got.loc[case, "slope"] == pytest.approx(res.params[1], abs=1e-8)
        assert got.loc[case, "intercept"] == pytest.approx(res.params[0], abs=1e-8)
        assert got.loc[case, "se"] == pytest.approx(res.bse[1], abs=1e-8)


def test_true_slope_recovered_by_mixed_model_and_equals_statsmodels():
    v = _visits(40, -2.5, seed=2)
    m = mixed_slopes(v)
    assert m["fitted"] and m["converged"]
    assert m["ci"][0] <= -2.5 <= m["ci"][1]
    direct = smf.mixedlm("egfr ~ years", v, groups=v["case"], re_formula="~years").fit(
        reml=True, method=["cg", "powell", "lbfgs"]
    )
    assert m["slope"] == pytest.approx(direct.fe_params["years"], abs=1e-8)
    assert m["p"] == pytest.approx(direct.pvalues["years"], rel=1e-8)
    # per-case slopes = population slope + BLUP
    blup = direct.random_effects["C000"].iloc[1] + direct.fe_params["years"]
    per = m["per_case"].set_index("case")["slope"]
    assert per["C000"] == pytest.approx(blup, abs=1e-8)
    # the OLS slopes' mean also covers the truth
    s = ols_slopes(v)["slope"]
    half = st.t.ppf(0.975, len(s) - 1) * s.std(ddof=1) / np.sqrt(len(s))
    assert abs(s.mean() + 2.5) < half


def test_mixed_model_needs_enough_cases():
    m = mixed_slopes(_visits(5, -2.0, seed=3))
    assert not m["fitted"] and "10 needed" in m["note"]


def test_read_visits_checks_dates_and_units(tmp_path):
    p = tmp_path / "v.csv"
    p.write_text("case,date,egfr\nA,2020-01-01,60\nA,2021-07-02,55\nB,2020-03-01,\n")
    v = read_visits(p)
    assert v["years"].tolist() == pytest.approx([0, 548 / 365.25])
    assert v.attrs["missing_egfr"] == 1
    for body, msg in [
        ("A,01/02/2020,60\n", "not a date as YYYY-MM-DD"),
        ("A,2020-13-01,60\n", "not a date"),
        ("A,2020-01-01,1.1\nA,2021-01-01,0.9\n", "mL/s"),
        ("A,2020-01-01,600\n", "not possible"),
        ("A,2020-01-01,-3\n", "positive"),
        ("A,2020-01-01,sixty\n", "not a number"),
    ]:
        p.write_text("case,date,egfr\n" + body)
        with pytest.raises(CohortError, match=msg):
            read_visits(p)
    p.write_text("case,when,egfr\nA,2020-01-01,60\n")
    with pytest.raises(CohortError, match="no column 'date'"):
        read_visits(p)


def test_corrected_t_equals_scipy_one_sample_t_scaled():
    d = np.random.default_rng(4).normal(0.3, 1.0, 50)
    r = corrected_resampled_ttest(d, n_train=80, n_test=20)
    plain = st.ttest_1samp(d, 0.0)
    scale = np.sqrt((1 / 50) / (1 / 50 + 20 / 80))
    assert r["t"] == pytest.approx(plain.statistic * scale, rel=1e-10)
    assert r["p"] == pytest.approx(2 * st.t.sf(abs(plain.statistic * scale), 49), rel=1e-8)
    assert r["df"] == 49 and r["correction"] == pytest.approx(1 / 50 + 0.25)


def _cohort(n: int, effect: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    score = rng.normal(0, 1, n)
    y = -2 - 0.03 * (age - 60) + effect * score + rng.normal(0, 1, n)
    return age[:, None], np.column_stack([age, score]), y


def test_cv_predictions_equal_scikit_learn_and_in_sample_equals_statsmodels():
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import RepeatedKFold

    x0, x1, y = _cohort(30, 0.5, seed=5)
    r = cross_validate(x0, x1, y, folds=5, repeats=2, seed=9)
    mse = []
    for tr, te in RepeatedKFold(n_splits=5, n_repeats=2, random_state=9).split(x1):
        p = LinearRegression().fit(x1[tr], y[tr]).predict(x1[te])
        mse.append(np.mean((p - y[te]) ** 2))
    assert r["per_fold"]["mse_with"] == pytest.approx(mse, abs=1e-8)
    fit = in_sample(pd.DataFrame(x0, columns=["age"]), pd.DataFrame(x1, columns=["age", "s"]), y)
    full = sm.OLS(y, sm.add_constant(x1)).fit()
    assert fit["with_scores"]["r2"] == pytest.approx(full.rsquared, abs=1e-10)
    assert fit["with_scores"]["coefficients"][2]["p"] == pytest.approx(full.pvalues[2], rel=1e-8)


def test_true_score_effect_detected():
    x0, x1, y = _cohort(80, 0.8, seed=6)
    r = cross_validate(x0, x1, y, folds=5, repeats=10, seed=0)
    assert r["with_scores"]["r2"] > r["without_scores"]["r2"] + 0.2
    assert r["with_scores"]["mae"] < r["without_scores"]["mae"]
    assert r["comparison"]["t"] > 0 and r["comparison"]["p"] < 0.01
    assert r["comparison"]["ci"][0] > 0


def test_no_score_effect_rejected_at_most_at_the_stated_rate():
    n_seeds, alpha = 200, 0.05
    rejected = 0
    for seed in range(n_seeds):
        x0, x1, y = _cohort(40, 0.0, seed=2000 + seed)
        r = cross_validate(x0, x1, y, folds=5, repeats=5, seed=seed)
        rejected += r["comparison"]["p"] < alpha
    # the corrected test is at or below its level (conservative), never far above it
    assert rejected <= st.binom.isf(1e-3, n_seeds, alpha), rejected
