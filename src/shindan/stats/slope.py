"""Yearly eGFR slope per case from dated measurements.

Two estimates, both in mL/min/1.73 m² per year:

- **OLS per case**: a straight line through each case's own visits (2 or more visits on
  different dates; a standard error needs 3 or more).
- **Mixed model** (statsmodels ``MixedLM``, REML): ``egfr ~ years`` with a random intercept
  and a random slope per case, fitted on the cases with at least ``min_visits`` visits. Each
  case's slope is the population slope plus its predicted random slope (BLUP), shrunk toward
  the population for cases with few or noisy visits.

Time is in years (days / 365.25) since each case's first visit.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shindan.stats.cohort import CohortError, check_egfr, numeric_column, parse_dates, read_csv

__all__ = ["DAYS_PER_YEAR", "mixed_slopes", "ols_slopes", "read_visits"]

DAYS_PER_YEAR = 365.25


def read_visits(path: str | Path) -> pd.DataFrame:
    """``case``, ``date``, ``egfr`` (mL/min/1.73 m²) from a visits CSV, one row per visit.

    Returns a frame with ``case`` (text), ``date`` (timestamp), ``egfr`` (float) and
    ``years`` (since the case's first visit), sorted by case and date; rows with an empty
    eGFR are left out (counted in ``attrs["missing_egfr"]``).

    Raises
    ------
    CohortError
        Missing columns, empty case ids, dates not as YYYY-MM-DD, eGFR not a number or in
        another unit (see :func:`shindan.stats.cohort.check_egfr`).
    """
    raw = read_csv(path, "visits table", ["case", "date", "egfr"])
    if raw["case"].isna().any():
        row = int(np.flatnonzero(raw["case"].isna().to_numpy())[0]) + 2
        raise CohortError(f"{path}: visits row {row} has no case id")
    egfr = numeric_column(raw, "egfr", path)
    check_egfr(egfr, path)
    date = parse_dates(raw["date"], path)
    out = pd.DataFrame({"case": raw["case"], "date": date, "egfr": egfr})
    missing = int(out["egfr"].isna().sum())
    out = out.dropna(subset=["egfr"]).sort_values(["case", "date"], kind="stable")
    first = out.groupby("case")["date"].transform("min")
    out["years"] = (out["date"] - first).dt.total_seconds() / (86400 * DAYS_PER_YEAR)
    out = out.reset_index(drop=True)
    out.attrs["missing_egfr"] = missing
    return out


def ols_slopes(visits: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of eGFR on years for each case.

    Parameters
    ----------
    visits : DataFrame
        ``case``, ``years``, ``egfr`` (as from :func:`read_visits`).

    Returns
    -------
    DataFrame
        One row per case with a slope: ``case``, ``slope`` (per year), ``se`` (NaN with 2
        visits), ``intercept``, ``visits``, ``span_years``, ``baseline_egfr`` (the first
        visit's). Cases with one visit, or all visits on one date, are left out.

    Examples
    --------
    >>> v = pd.DataFrame({"case": ["A"] * 3, "years": [0.0, 1.0, 2.0], "egfr": [60, 57, 54.0]})
    >>> ols_slopes(v)[["case", "slope", "visits"]].to_dict("records")
    [{'case': 'A', 'slope': -3.0, 'visits': 3}]
    """
    rows = []
    for case, d in visits.groupby("case", sort=False):
        t = d["years"].to_numpy(dtype=float)
        y = d["egfr"].to_numpy(dtype=float)
        if len(t) < 2 or np.ptp(t) == 0:
            continue
        tc = t - t.mean()
        sxx = float(tc @ tc)
        slope = float(tc @ (y - y.mean()) / sxx)
        intercept = float(y.mean() - slope * t.mean())
        se = float("nan")
        if len(t) > 2:
            resid = y - intercept - slope * t
            se = float(np.sqrt(resid @ resid / (len(t) - 2) / sxx))
        rows.append(
            {
                "case": case,
                "slope": slope,
                "se": se,
                "intercept": intercept,
                "visits": len(t),
                "span_years": float(np.ptp(t)),
                "baseline_egfr": float(y[np.argmin(t)]),
            }
        )
    return pd.DataFrame(
        rows,
        columns=["case", "slope", "se", "intercept", "visits", "span_years", "baseline_egfr"],
    )


def mixed_slopes(
    visits: pd.DataFrame, *, min_visits: int = 3, min_cases: int = 10, level: float = 0.95
) -> dict[str, Any]:
    """Random-intercept, random-slope linear mixed model of eGFR on years (REML).

    Parameters
    ----------
    visits : DataFrame
        ``case``, ``years``, ``egfr``.
    min_visits : int
        Cases with fewer visits are left out of the model.
    min_cases : int
        Fewer such cases: no model (``fitted`` False and the reason in ``note``).
    level : float
        Level of the population slope's Wald interval.

    Returns
    -------
    dict
        ``fitted``, ``note``, ``cases``, ``visits``, ``slope`` (population, per year),
        ``ci``, ``p``, ``intercept``, ``slope_sd`` (between-case SD of slopes),
        ``residual_sd``, ``converged``, and ``per_case``: DataFrame ``case``, ``slope``.
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    counts = visits.groupby("case")["years"].agg(["size", "nunique"])
    keep = counts.index[(counts["size"] >= min_visits) & (counts["nunique"] >= 2)]
    data = visits[visits["case"].isin(keep)].reset_index(drop=True)
    empty: dict[str, Any] = {
        "fitted": False,
        "cases": int(len(keep)),
        "visits": int(len(data)),
        "per_case": pd.DataFrame(columns=["case", "slope"]),
    }
    if len(keep) < min_cases:
        empty["note"] = (
            f"not fitted: {len(keep)} case(s) with {min_visits}+ visits, {min_cases} needed"
        )
        return empty
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            model = smf.mixedlm("egfr ~ years", data, groups=data["case"], re_formula="~years")
            # statsmodels' default (BFGS) often stalls on eGFR's scale; CG then Powell do not
            res = model.fit(reml=True, method=["cg", "powell", "lbfgs"])
        except (np.linalg.LinAlgError, ValueError) as exc:
            empty["note"] = f"not fitted: {exc}"
            return empty
    converged = bool(getattr(res, "converged", True))
    boundary = any("boundary" in str(w.message) for w in caught)
    ci = res.conf_int(alpha=1 - level).loc["years"]
    re = res.random_effects
    per_case = pd.DataFrame(
        {
            "case": list(re),
            "slope": [float(res.fe_params["years"] + re[c].iloc[1]) for c in re],
        }
    )
    cov = np.asarray(res.cov_re)
    return {
        "fitted": True,
        "note": "; ".join(
            n
            for n, on in (
                ("the fit did not converge: read its numbers with care", not converged),
                ("a variance or correlation of the random effects is at its bound", boundary),
            )
            if on
        ),
        "cases": int(len(keep)),
        "visits": int(len(data)),
        "slope": float(res.fe_params["years"]),
        "ci": [float(ci.iloc[0]), float(ci.iloc[1])],
        "p": float(res.pvalues["years"]),
        "intercept": float(res.fe_params["Intercept"]),
        "slope_sd": float(np.sqrt(max(cov[1, 1], 0.0))),
        "residual_sd": float(np.sqrt(res.scale)),
        "converged": converged,
        "per_case": per_case,
    }
