"""Multivariable logistic regression: published values, simulated effects, clear failures."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from shindan.stats.logistic import LogisticFitError, fit_logistic


def test_spector_mazzeo_published_values():
    # Spector & Mazzeo (1980) teaching-method data; logit estimates as published in Greene,
    # Econometric Analysis (Table 21.1): const -13.021 (4.931), GPA 2.826 (1.263),
    # TUCE 0.095 (0.142), PSI 2.379 (1.065); log-likelihood -12.890.
    data = sm.datasets.spector.load_pandas().data
    res = fit_logistic(data, "GRADE", ["GPA", "TUCE", "PSI"])
    want = {
        "const": (-13.021, 4.931),
        "GPA": (2.826, 1.263),
        "TUCE": (0.095, 0.142),
        "PSI": (2.379, 1.065),
    }
    for name, (coef, se) in want.items():
        t = res.term(name)
        assert t.coef == pytest.approx(coef, abs=1e-3)
        assert t.se == pytest.approx(se, abs=1e-3)
    assert res.log_likelihood == pytest.approx(-12.890, abs=1e-3)
    assert res.aic == pytest.approx(2 * 4 + 2 * 12.890, abs=1e-2)
    assert (res.n, res.events) == (32, 11)
    # Odds ratio = exp(coef); Wald 95% CI = exp(coef ± 1.95996 se).
    g = res.term("GPA")
    assert g.odds_ratio == pytest.approx(math.exp(2.826113), rel=1e-5)
    assert g.ci_low == pytest.approx(math.exp(g.coef - 1.959964 * g.se), rel=1e-6)
    assert g.ci_high == pytest.approx(math.exp(g.coef + 1.959964 * g.se), rel=1e-6)
    assert g.p == pytest.approx(0.0252, abs=1e-4)
    assert 0.5 < res.auc <= 1.0
    assert any("events per predictor" in w for w in res.warnings)  # 11 events, 3 predictors
    d = json.loads(json.dumps(res.to_dict()))
    assert d["terms"][1]["name"] == "GPA" and d["n"] == 32


def test_simulated_effects_are_recovered():
    # 4000 subjects, true log-odds: -1 + 0.8·score + 0.03·age + 0.5·male + 0.02·size.
    rng = np.random.default_rng(7)
    n = 4000
    df = pd.DataFrame(
        {
            "score": rng.normal(0, 1, n),
            "age": rng.normal(60, 10, n),
            "sex": rng.choice(["F", "M"], n),
            "size_mm": rng.gamma(4, 8, n),
        }
    )
    eta = (
        -1 - 0.03 * 60 + 0.8 * df.score + 0.03 * df.age + 0.5 * (df.sex == "M") + 0.02 * df.size_mm
    )
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    res = fit_logistic(
        df, "y", ["score", "age", "sex", "size_mm"], units={"age": 10, "size_mm": 10}
    )
    truth = {"score": 0.8, "age": 0.03, "sex[M]": 0.5, "size_mm": 0.02}
    for name, beta in truth.items():
        t = res.term(name)
        assert abs(t.coef - beta) < 3 * t.se, (name, t.coef, t.se)
        assert t.p < 1e-3
    # Odds ratios per 10 years / 10 mm: exp(10·beta), and the CI covers the truth.
    age = res.term("age")
    assert age.unit == 10 and age.odds_ratio == pytest.approx(math.exp(10 * age.coef))
    assert age.ci_low < math.exp(0.3) < age.ci_high
    assert res.predictors == ["score", "age", "sex[M]", "size_mm"]
    assert not res.warnings


def test_missing_rows_are_dropped_and_reported():
    data = sm.datasets.spector.load_pandas().data.copy()
    data.loc[[0, 5], "TUCE"] = np.nan
    res = fit_logistic(data, "GRADE", ["GPA", "TUCE"])
    assert res.n == 30 and res.dropped == 2
    assert any("2 row(s) with missing values" in w for w in res.warnings)


def test_perfect_separation_is_an_error():
    x = np.arange(20.0)
    df = pd.DataFrame({"y": (x > 9).astype(int), "x": x, "z": np.sin(x)})
    with pytest.raises(LogisticFitError, match="separated by x"):
        fit_logistic(df, "y", ["z", "x"])
    # Separation by a combination of predictors only.
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    df["y"] = (df.a + df.b > 0).astype(int)
    with pytest.raises(LogisticFitError, match="combination of predictors"):
        fit_logistic(df, "y", ["a", "b"])


def test_too_few_events_and_bad_inputs():
    df = pd.DataFrame(
        {
            "y": [1, 1, 0, 0, 0, 0, 0, 0],
            "a": [1.0, 5, 2, 3, 4, 6, 7, 8],
            "b": [3.0, 1, 4, 1, 5, 9, 2, 6],
            "c": [2.0, 7, 1, 8, 2, 8, 1, 8],
        }
    )
    with pytest.raises(LogisticFitError, match="too few events to fit 4 coefficients: 2 with"):
        fit_logistic(df, "y", ["a", "b", "c"])
    with pytest.raises(LogisticFitError, match="missing column"):
        fit_logistic(df, "y", ["nope"])
    with pytest.raises(LogisticFitError, match="must be 0/1"):
        fit_logistic(df.assign(y=df.y * 2), "y", ["a"])
    with pytest.raises(LogisticFitError, match="collinear"):
        fit_logistic(pd.concat([df] * 3).assign(d=lambda t: 2 * t.a), "y", ["a", "d"])
