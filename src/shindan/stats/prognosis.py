"""Does a score improve the prediction of eGFR decline? Repeated k-fold cross-validation.

Two linear (OLS) models of each case's yearly eGFR slope are fitted on the same folds: one on
the clinical covariates, one on the covariates and the AI scores. Their out-of-fold errors
are compared fold by fold with the corrected resampled t-test of Nadeau & Bengio (2003,
Machine Learning 52:239), which widens the variance of the fold differences by
``n_test / n_train`` because training sets of different folds overlap (the plain paired t-test
over folds rejects far too often).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

__all__ = ["corrected_resampled_ttest", "cross_validate", "design", "in_sample"]


def design(data: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Model columns: numeric columns as they are, text columns as 0/1 indicators per level
    against the first level in sorted order (the encoding of ``stats.logistic``)."""
    from shindan.stats.logistic import _design

    if not columns:
        return pd.DataFrame(index=data.index)
    return _design(data, list(columns))


def corrected_resampled_ttest(
    differences: Sequence[float] | np.ndarray,
    n_train: float,
    n_test: float,
    *,
    level: float = 0.95,
) -> dict[str, float]:
    """Nadeau–Bengio corrected resampled t-test of the mean of per-fold differences.

    Parameters
    ----------
    differences : (J,) float
        Per-fold difference of a loss (e.g. MSE without scores minus MSE with scores) over
        every fold of every repeat.
    n_train, n_test : float
        Training and test set sizes (means over folds).
    level : float
        Level of the interval of the mean difference.

    Returns
    -------
    dict
        ``mean_difference``, ``ci``, ``t``, ``df`` (J - 1), ``p`` (two-sided), ``folds`` (J),
        ``correction`` (``1/J + n_test/n_train``, against ``1/J`` uncorrected).

    Examples
    --------
    >>> r = corrected_resampled_ttest([1.0, 2.0, 3.0, 2.0], n_train=8, n_test=2)
    >>> round(r["t"], 4), r["df"]
    (3.4641, 3)
    """
    d = np.asarray(differences, dtype=float)
    j = len(d)
    if j < 2:
        raise ValueError("need at least two folds")
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    correction = 1 / j + n_test / n_train
    se = np.sqrt(correction * var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / se if se > 0 else (0.0 if mean == 0 else np.sign(mean) * np.inf)
    half = float(st.t.ppf(0.5 + level / 2, j - 1) * se)
    return {
        "mean_difference": mean,
        "ci": [mean - half, mean + half],
        "t": float(t),
        "df": j - 1,
        "p": float(2 * st.t.sf(abs(t), j - 1)),
        "folds": j,
        "correction": float(correction),
    }


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    a = np.column_stack([np.ones(len(x_train)), x_train])
    coef, *_ = np.linalg.lstsq(a, y_train, rcond=None)
    return np.column_stack([np.ones(len(x_test)), x_test]) @ coef


def _summary(y: np.ndarray, oof: np.ndarray) -> dict[str, Any]:
    """R², MAE, RMSE of out-of-fold predictions, per repeat then averaged; calibration."""
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - ((oof - y) ** 2).sum(axis=1) / ss_tot
    mae = np.abs(oof - y).mean(axis=1)
    rmse = np.sqrt(((oof - y) ** 2).mean(axis=1))
    pred = oof.mean(axis=0)
    # calibration: observed on predicted (slope 1, intercept 0 when calibrated)
    cal_slope, cal_intercept = np.polyfit(pred, y, 1) if np.ptp(pred) > 0 else (np.nan, np.nan)
    return {
        "r2": float(r2.mean()),
        "r2_sd": float(r2.std(ddof=1)) if len(r2) > 1 else 0.0,
        "mae": float(mae.mean()),
        "mae_sd": float(mae.std(ddof=1)) if len(mae) > 1 else 0.0,
        "rmse": float(rmse.mean()),
        "calibration": {"slope": float(cal_slope), "intercept": float(cal_intercept)},
    }


def cross_validate(
    x_without: np.ndarray,
    x_with: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    repeats: int = 20,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Repeated k-fold CV of two OLS models on the same folds and their corrected comparison.

    Parameters
    ----------
    x_without : (n, p) float
        Predictors without the scores (may have zero columns: the mean-only model).
    x_with : (n, q) float
        Predictors with the scores.
    y : (n,) float
        Outcome (the yearly eGFR slope).
    folds, repeats, seed
        ``sklearn.model_selection.RepeatedKFold`` settings.
    level : float
        Level of the interval of the mean difference.

    Returns
    -------
    dict
        ``without_scores`` and ``with_scores``: {``r2``, ``r2_sd``, ``mae``, ``mae_sd``,
        ``rmse``, ``calibration``} (R² and MAE of each repeat's out-of-fold predictions,
        averaged over repeats; calibration of the mean out-of-fold prediction);
        ``comparison`` (per-fold MSE without minus with, see
        :func:`corrected_resampled_ttest`; positive = the scores help), ``comparison_mae``
        (the same on MAE), ``per_fold`` (lists), ``predicted`` {``without_scores``,
        ``with_scores``}: mean out-of-fold prediction per case.
    """
    from sklearn.model_selection import RepeatedKFold

    x0 = np.asarray(x_without, dtype=float).reshape(len(y), -1)
    x1 = np.asarray(x_with, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    n = len(y)
    oof0 = np.empty((repeats, n))
    oof1 = np.empty((repeats, n))
    mse0, mse1, mae0, mae1, n_train, n_test = [], [], [], [], [], []
    splitter = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for i, (tr, te) in enumerate(splitter.split(x1)):
        r = i // folds
        p0 = _fit_predict(x0[tr], y[tr], x0[te])
        p1 = _fit_predict(x1[tr], y[tr], x1[te])
        oof0[r, te], oof1[r, te] = p0, p1
        mse0.append(float(np.mean((p0 - y[te]) ** 2)))
        mse1.append(float(np.mean((p1 - y[te]) ** 2)))
        mae0.append(float(np.mean(np.abs(p0 - y[te]))))
        mae1.append(float(np.mean(np.abs(p1 - y[te]))))
        n_train.append(len(tr))
        n_test.append(len(te))
    ntr, nte = float(np.mean(n_train)), float(np.mean(n_test))
    comparison = corrected_resampled_ttest(np.subtract(mse0, mse1), ntr, nte, level=level) | {
        "metric": "mse"
    }
    comparison_mae = corrected_resampled_ttest(np.subtract(mae0, mae1), ntr, nte, level=level) | {
        "metric": "mae"
    }
    return {
        "without_scores": _summary(y, oof0),
        "with_scores": _summary(y, oof1),
        "comparison": comparison,
        "comparison_mae": comparison_mae,
        "cv": {
            "folds": folds,
            "repeats": repeats,
            "seed": seed,
            "n_train": ntr,
            "n_test": nte,
        },
        "per_fold": {"mse_without": mse0, "mse_with": mse1, "mae_without": mae0, "mae_with": mae1},
        "predicted": {"without_scores": oof0.mean(axis=0), "with_scores": oof1.mean(axis=0)},
    }


def in_sample(
    x_without: pd.DataFrame, x_with: pd.DataFrame, y: np.ndarray, *, level: float = 0.95
) -> dict[str, Any]:
    """OLS of both models on every case (statsmodels): coefficients with CIs, adjusted R²,
    and the F-test of the scores added to the covariates (in-sample: optimistic)."""
    import statsmodels.api as sm

    y = np.asarray(y, dtype=float)
    fits = {}
    for name, x in (("without_scores", x_without), ("with_scores", x_with)):
        fits[name] = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
    out: dict[str, Any] = {}
    for name, res in fits.items():
        ci = np.asarray(res.conf_int(alpha=1 - level))
        out[name] = {
            "r2": float(res.rsquared),
            "r2_adj": float(res.rsquared_adj),
            "coefficients": [
                {
                    "name": str(k),
                    "coef": float(res.params.iloc[i]),
                    "ci": [float(ci[i, 0]), float(ci[i, 1])],
                    "p": float(res.pvalues.iloc[i]),
                }
                for i, k in enumerate(res.params.index)
            ],
        }
    f, p, df_diff = fits["with_scores"].compare_f_test(fits["without_scores"])
    out["f_test"] = {"F": float(f), "p": float(p), "df": int(df_diff)}
    return out
