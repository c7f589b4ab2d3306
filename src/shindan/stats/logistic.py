"""Multivariable logistic regression with odds ratios (statsmodels ``Logit``).

Used to ask whether a model's score adds to clinical covariates (age, sex, lesion size):
each predictor's odds ratio with its 95% CI and p-value, and the combined model's AIC and AUC.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shindan.errors import ShindanError

__all__ = ["LogisticFitError", "LogisticResult", "Term", "fit_logistic"]

# Below this many events per estimated coefficient, estimates are unstable (Peduzzi 1996).
EPV_WARN = 10.0


class LogisticFitError(ShindanError):
    """The data cannot support the model: too few events, separation, collinear predictors."""


@dataclass(frozen=True)
class Term:
    """One coefficient of the fitted model.

    Attributes
    ----------
    name : str
        Predictor name (``const`` for the intercept; ``col[level]`` for a category level).
    coef, se : float
        Log-odds coefficient per unit of the predictor and its standard error.
    z, p : float
        Wald statistic and two-sided p-value.
    odds_ratio, ci_low, ci_high : float
        ``exp(coef · unit)`` and its confidence interval (Wald), per ``unit`` of the predictor.
    unit : float
        The change in the predictor the odds ratio refers to.
    """

    name: str
    coef: float
    se: float
    z: float
    p: float
    odds_ratio: float
    ci_low: float
    ci_high: float
    unit: float = 1.0


@dataclass(frozen=True)
class LogisticResult:
    """A fitted logistic model; :meth:`to_dict` gives a JSON-able summary.

    Attributes
    ----------
    outcome : str
    predictors : list of str
        Model columns after encoding categories (without the intercept).
    n, events : int
        Observations used and how many had the outcome.
    dropped : int
        Rows left out for missing values.
    terms : list of Term
        Intercept first.
    aic, bic, log_likelihood : float
    llr_p : float
        p-value of the likelihood-ratio test against the intercept-only model.
    pseudo_r2 : float
        McFadden's pseudo-R².
    auc : float
        ROC-AUC of the fitted probabilities (in-sample; optimistic).
    confidence : float
        Level of the intervals (e.g. 0.95).
    warnings : list of str
    """

    outcome: str
    predictors: list[str]
    n: int
    events: int
    dropped: int
    terms: list[Term]
    aic: float
    bic: float
    log_likelihood: float
    llr_p: float
    pseudo_r2: float
    auc: float
    confidence: float
    warnings: list[str] = field(default_factory=list)

    def term(self, name: str) -> Term:
        """The term called ``name``."""
        for t in self.terms:
            if t.name == name:
                return t
        raise KeyError(f"no term {name!r} (terms: {', '.join(t.name for t in self.terms)})")

    @property
    def odds_ratios(self) -> dict[str, tuple[float, float, float]]:
        """predictor → (odds ratio, CI low, CI high), intercept excluded."""
        return {
            t.name: (t.odds_ratio, t.ci_low, t.ci_high) for t in self.terms if t.name != "const"
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary for JSON (non-finite numbers become None)."""
        return _clean(asdict(self))


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _design(data: pd.DataFrame, predictors: Sequence[str]) -> pd.DataFrame:
    """Numeric predictors as they are; text/categorical ones as 0/1 columns per level."""
    parts = []
    for col in predictors:
        s = data[col]
        if pd.api.types.is_bool_dtype(s):
            parts.append(s.astype(float).rename(col))
        elif pd.api.types.is_numeric_dtype(s):
            parts.append(s.astype(float).rename(col))
        else:
            levels = sorted(s.astype(str).unique())
            if len(levels) < 2:
                raise LogisticFitError(f"predictor {col!r} has a single value ({levels[0]!r})")
            # The first level (sorted) is the reference; one indicator per other level.
            for lvl in levels[1:]:
                parts.append((s.astype(str) == lvl).astype(float).rename(f"{col}[{lvl}]"))
    return pd.concat(parts, axis=1)


def _binary(y: pd.Series, outcome: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(y):
        return y.to_numpy(dtype=float)
    values = set(pd.unique(y))
    if not values <= {0, 1}:  # 0.0 and 1.0 compare equal
        shown = ", ".join(map(repr, sorted(values, key=str)[:5]))
        raise LogisticFitError(f"outcome {outcome!r} must be 0/1 (got values {shown})")
    return y.to_numpy(dtype=float)


def _separating(X: pd.DataFrame, y: np.ndarray) -> list[str]:
    """Predictors that alone split the outcome (complete or quasi-complete separation)."""
    out = []
    for col in X.columns:
        if col == "const":
            continue
        a, b = X[col].to_numpy()[y == 0], X[col].to_numpy()[y == 1]
        if a.max() <= b.min() or b.max() <= a.min():
            out.append(col)
    return out


def _separation(who: str) -> LogisticFitError:
    return LogisticFitError(
        f"the outcome is perfectly (or quasi-perfectly) separated{who}: odds ratios are "
        "infinite; drop or coarsen that predictor, or collect more cases"
    )


def fit_logistic(
    data: pd.DataFrame,
    outcome: str,
    predictors: Sequence[str],
    *,
    units: Mapping[str, float] | None = None,
    confidence: float = 0.95,
    maxiter: int = 100,
) -> LogisticResult:
    """Fit ``logit P(outcome) = b0 + Σ b_i x_i`` by maximum likelihood.

    Parameters
    ----------
    data : DataFrame
        One row per subject (not modified).
    outcome : str
        Column with 0/1 (or boolean) outcome, e.g. 1 = malignant.
    predictors : sequence of str
        Columns to adjust for together. Numeric columns enter as they are (per unit);
        text columns (e.g. ``sex``) become one 0/1 indicator per level against the first level
        in sorted order (``sex[M]`` vs ``F``).
    units : mapping, optional
        predictor → the change the odds ratio refers to (e.g. ``{"score": 0.1, "size_mm":
        10}`` for an odds ratio per 0.1 of score and per 10 mm). Coefficients stay per unit.
    confidence : float
        Level of the Wald confidence intervals.
    maxiter : int
        Newton iterations.

    Returns
    -------
    LogisticResult

    Raises
    ------
    LogisticFitError
        Missing columns, a non-binary outcome, fewer events (or non-events) than coefficients,
        collinear predictors, or (quasi-)complete separation, where odds ratios are infinite.
    """
    import statsmodels.api as sm
    from sklearn.metrics import roc_auc_score
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        PerfectSeparationError,
        PerfectSeparationWarning,
    )

    if not 0 < confidence < 1:
        raise LogisticFitError(f"confidence must be in (0, 1), got {confidence}")
    predictors = list(predictors)
    absent = [c for c in [outcome, *predictors] if c not in data.columns]
    if absent:
        raise LogisticFitError(f"missing column(s): {', '.join(absent)}")
    if not predictors:
        raise LogisticFitError("no predictors given")
    units = dict(units or {})
    used = data[[outcome, *predictors]]
    complete = used.dropna()
    dropped = len(used) - len(complete)
    y = _binary(complete[outcome], outcome)
    X = sm.add_constant(_design(complete, predictors), has_constant="add")
    k = X.shape[1]  # coefficients including the intercept
    events, n = int(y.sum()), len(y)
    if min(events, n - events) < k:
        raise LogisticFitError(
            f"too few events to fit {k} coefficients: {events} with and {n - events} without "
            f"the outcome among {n} complete rows"
        )
    if np.linalg.matrix_rank(X.to_numpy()) < k:
        raise LogisticFitError(
            "collinear predictors (a column is constant or a combination "
            f"of others): {', '.join(X.columns[1:])}"
        )
    notes: list[str] = []
    if dropped:
        notes.append(f"{dropped} row(s) with missing values left out")
    epv = min(events, n - events) / (k - 1)
    if epv < EPV_WARN:
        notes.append(
            f"only {epv:.1f} events per predictor (< {EPV_WARN:g}): estimates may be "
            "unstable and optimistic"
        )
    separated = _separating(X, y)
    if separated:
        raise _separation(f" by {', '.join(separated)}")
    with warnings.catch_warnings(), np.errstate(over="ignore"):
        # Overflow in exp() is the symptom of diverging coefficients, reported below.
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            res = sm.Logit(y, X).fit(disp=0, maxiter=maxiter)
        except (PerfectSeparationError, PerfectSeparationWarning):
            res = None
        except np.linalg.LinAlgError:
            raise LogisticFitError(
                "the model cannot be fitted (singular information matrix; collinear predictors?)"
            ) from None
        p_fit = None if res is None else np.asarray(res.predict(X))
    diverged = (
        res is None
        or not res.mle_retvals.get("converged", True)
        or bool(np.any(np.abs(np.asarray(X @ res.params)) > 30))
    )
    if diverged:
        raise _separation(" by a combination of predictors")
    assert res is not None and p_fit is not None
    ci = np.asarray(res.conf_int(alpha=1 - confidence))
    terms = []
    for i, name in enumerate(X.columns):
        unit = (
            1.0 if name == "const" else float(units.get(name, units.get(name.split("[")[0], 1.0)))
        )
        b = float(res.params.iloc[i])
        terms.append(
            Term(
                name=str(name),
                coef=b,
                se=float(res.bse.iloc[i]),
                z=float(res.tvalues.iloc[i]),
                p=float(res.pvalues.iloc[i]),
                odds_ratio=math.exp(b * unit),
                ci_low=math.exp(ci[i, 0] * unit),
                ci_high=math.exp(ci[i, 1] * unit),
                unit=unit,
            )
        )
    return LogisticResult(
        outcome=outcome,
        predictors=[str(c) for c in X.columns[1:]],
        n=n,
        events=events,
        dropped=dropped,
        terms=terms,
        aic=float(res.aic),
        bic=float(res.bic),
        log_likelihood=float(res.llf),
        llr_p=float(res.llr_pvalue),
        pseudo_r2=float(res.prsquared),
        auc=float(roc_auc_score(y, p_fit)),
        confidence=confidence,
        warnings=notes,
    )
