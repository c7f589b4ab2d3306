"""The ``shindan stats`` analyses end to end: read and check, compute, write JSON, figures
and an offline HTML report into the output folder.

Output folder rules (see :mod:`shindan.util.atomic`): ``--out`` is checked before any work
and may hold only files the stats commands write; the files of one run are written under
temporary names and moved in when all are complete; files of the other stats commands in
the same folder are kept, those of an earlier run of the same command are replaced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shindan.stats.cohort import (
    EGFR_UNIT,
    CohortError,
    JoinSummary,
    check_egfr,
    complete_rows,
    load_table,
    numeric_column,
    require_cases,
)

__all__ = [
    "STATS_FILES",
    "check_stats_output",
    "parse_list",
    "parse_units",
    "run_correlate",
    "run_logistic",
    "run_prognosis",
]

CORRELATE_FILES = ("correlate.json", "correlate.html", "correlate_scatter.png", "correlate_box.png")
PROGNOSIS_FILES = (
    "prognosis.json",
    "prognosis.html",
    "prognosis_slopes.csv",
    "prognosis_slopes.png",
    "prognosis_calibration.png",
)
LOGISTIC_FILES = ("logistic.json", "logistic.html", "logistic_odds_ratios.png")
STATS_FILES = frozenset(CORRELATE_FILES + PROGNOSIS_FILES + LOGISTIC_FILES)

MIN_CORRELATE = 8
MIN_LOGISTIC = 10


def check_stats_output(out: str | Path) -> None:
    """:class:`~shindan.errors.InputError` unless ``out`` can take stats outputs: missing
    and creatable, or a folder holding only files the stats commands write."""
    from shindan.util.atomic import check_output_folder

    check_output_folder(out, STATS_FILES)


def _write(out: Path, files: Mapping[str, bytes | str], command_files: Sequence[str]) -> None:
    """Stage every file, move them into ``out`` together, then drop this command's files of
    an earlier run that this run did not write (e.g. a box plot of an earlier ordinal run)."""
    from shindan.util.atomic import staged_files

    with staged_files(out) as tmp:
        for name, content in files.items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                (tmp / name).write_text(content, encoding="utf-8")
    for name in command_files:
        if name not in files and (out / name).is_file():
            (out / name).unlink()


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json(result: dict[str, Any]) -> str:
    return json.dumps(_clean(result), indent=2, ensure_ascii=False) + "\n"


def parse_list(value: str | None, option: str) -> list[str]:
    """``"a,b"`` → ``["a", "b"]``; empty items and repeats are errors.

    Examples
    --------
    >>> parse_list("age, sex", "--covariates")
    ['age', 'sex']
    """
    if value is None or not value.strip():
        return []
    items = [v.strip() for v in value.split(",")]
    if any(not v for v in items):
        raise CohortError(f"{option}: empty column name in {value!r}")
    dup = sorted({v for v in items if items.count(v) > 1})
    if dup:
        raise CohortError(f"{option}: {', '.join(dup)} given twice")
    return items


def parse_units(value: str | None) -> dict[str, float]:
    """``"score=0.1,size_mm=10"`` → ``{"score": 0.1, "size_mm": 10.0}``.

    Examples
    --------
    >>> parse_units("interstitial_fibrosis=0.1")
    {'interstitial_fibrosis': 0.1}
    """
    out: dict[str, float] = {}
    for item in parse_list(value, "--units"):
        name, sep, num = item.partition("=")
        try:
            unit = float(num)
        except ValueError:
            unit = float("nan")
        if not sep or not name.strip() or not math.isfinite(unit) or unit <= 0:
            raise CohortError(f"--units: {item!r} is not COLUMN=POSITIVE_NUMBER")
        out[name.strip()] = unit
    return out


def _source(column: str, summary: JoinSummary) -> str:
    return summary.table if summary.cohort is None else f"{summary.table} + {summary.cohort}"


def _require_columns(data: pd.DataFrame, columns: Sequence[str], summary: JoinSummary) -> None:
    for c in columns:
        if c not in data.columns:
            cols = ", ".join(map(str, data.columns[:15])) + (
                ", …" if len(data.columns) > 15 else ""
            )
            where = "table" if summary.cohort is None else "table or cohort"
            raise CohortError(f"{_source(c, summary)}: no column {c!r} in the {where} ({cols})")


def _numeric(data: pd.DataFrame, column: str, summary: JoinSummary) -> pd.Series:
    """A number column; one named like eGFR must be in mL/min/1.73 m² (see check_egfr)."""
    values = numeric_column(data, column, _source(column, summary))
    if "egfr" in column.lower():
        check_egfr(values, _source(column, summary), column)
    return values


def _typed(data: pd.DataFrame, column: str, summary: JoinSummary) -> pd.Series:
    """Numbers when every filled cell is one, else text (a category such as sex)."""
    s = data[column]
    num = pd.to_numeric(s, errors="coerce")
    if (num.notna() | s.isna()).all():
        return _numeric(data, column, summary)
    return s


def _constant(values: np.ndarray, column: str) -> None:
    if np.ptp(values) == 0:
        raise CohortError(f"column {column!r} has a single value ({values[0]:g}) in every case")


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return "< 0.0001" if v < 1e-4 else f"{v:.4f}"


def _ci(ci: Sequence[float | None]) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _join_rows(summary: JoinSummary, n: int) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("n (cases analysed)", n), ("clinical table", summary.table)]
    rows.append(("table rows", summary.table_rows))
    if summary.cohort is not None:
        rows += [
            ("cohort.csv", summary.cohort),
            ("cohort rows", summary.cohort_rows),
            ("joined on case", summary.joined),
            ("table ids not in the cohort (dropped)", ", ".join(summary.table_only) or "none"),
            ("cohort ids not in the table (dropped)", ", ".join(summary.cohort_only) or "none"),
        ]
    missing = ", ".join(f"{c}: {k}" for c, k in summary.missing.items()) or "none"
    rows.append(("cases dropped for missing values (first empty column)", missing))
    return rows


def run_correlate(
    table: str | Path,
    x: str,
    y: str,
    out: str | Path,
    *,
    cohort: str | Path | None = None,
    ordinal: bool | None = None,
    bins: Sequence[float] | None = None,
    kappa_weights: str = "linear",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """``stats correlate``: see :func:`shindan.stats.correlate.correlate` and
    :func:`~shindan.stats.correlate.ordinal_agreement`. ``ordinal`` None: ``y`` is taken
    as a grade when it holds whole numbers with 2 to 7 levels. Returns the JSON written."""
    from shindan.stats.correlate import correlate, is_ordinal, ordinal_agreement
    from shindan.stats.figures import box_by_grade, scatter_fit

    out = Path(out)
    check_stats_output(out)
    if n_boot < 100:
        raise CohortError(f"--n-boot must be at least 100, got {n_boot}")
    if x == y:
        raise CohortError(f"--x and --y are the same column ({x!r})")
    data, summary = load_table(table, cohort)
    _require_columns(data, [x, y], summary)
    xs = _numeric(data, x, summary)
    ys = _numeric(data, y, summary)
    frame = complete_rows(pd.DataFrame({x: xs, y: ys}), [x, y], summary)
    n = len(frame)
    require_cases(n, MIN_CORRELATE, "a correlation")
    xv, yv = frame[x].to_numpy(), frame[y].to_numpy()
    _constant(xv, x)
    _constant(yv, y)
    grades = is_ordinal(yv) if ordinal is None else ordinal
    if grades and not is_ordinal(yv):
        raise CohortError(
            f"--ordinal: column {y!r} is not a grade (whole numbers with 2 to 7 levels)"
        )
    if bins is not None and not grades:
        raise CohortError("--bins needs an ordinal --y (a grade)")
    result: dict[str, Any] = {"x": x, "y": y, "ordinal": grades}
    result |= correlate(xv, yv, n_boot=n_boot, seed=seed)
    methods = [
        (
            "Spearman's rho (scipy.stats.spearmanr)",
            "monotone association of ranks; pairs independent (one row per case); p from the "
            "t approximation; CI: percentile bootstrap of cases",
        ),
        (
            "Pearson's r (scipy.stats.pearsonr)",
            "linear association; p exact under bivariate normality; sensitive to outliers; "
            "CI: percentile bootstrap of cases (Fisher-z interval in the JSON for comparison)",
        ),
    ]
    if grades:
        try:
            ordv = ordinal_agreement(
                xv, yv, edges=bins, weights=kappa_weights, n_boot=n_boot, seed=seed
            )
        except ValueError as exc:
            raise CohortError(f"--bins: {exc}") from None
        result |= ordv
        methods += [
            (
                "Kendall's tau-b (scipy.stats.kendalltau)",
                "ordinal association corrected for ties (grades tie often); CI: bootstrap",
            ),
            (
                "Jonckheere–Terpstra trend test",
                "score distributions shift in one direction across ordered grades; "
                "independent cases; two-sided p from the normal approximation with the tie "
                "correction (Hollander, Wolfe & Chicken, Nonparametric Statistical Methods)",
            ),
            (
                f"Cohen's {kappa_weights}-weighted kappa (sklearn.metrics.cohen_kappa_score)",
                "agreement of the grade with the score binned into as many grades: "
                f"{ordv['kappa']['binning']}, cut points "
                + ", ".join(f"{e:.4g}" for e in ordv["kappa"]["edges"])
                + "; depends on that binning; CI: bootstrap",
            ),
        ]
    result["join"] = summary.to_dict()
    result["methods"] = [{"test": t, "assumptions": a} for t, a in methods]
    files: dict[str, bytes | str] = {"correlate.json": _json(result)}
    figures = [
        (
            "correlate_scatter.png",
            f"{y} against {x}, least-squares line",
            scatter_fit(xv, yv, x, y, f"n = {n}, Spearman rho {_fmt(result['spearman']['rho'])}"),
        )
    ]
    if grades:
        figures.append(
            (
                "correlate_box.png",
                f"{x} by {y}",
                box_by_grade(xv, yv, x, y, edges=result["kappa"]["edges"]),
            )
        )
    tables = [
        {
            "caption": "Correlation",
            "header": ["statistic", "estimate", "95% CI (bootstrap)", "p"],
            "rows": [
                [
                    "Spearman rho",
                    _fmt(result["spearman"]["rho"]),
                    _ci(result["spearman"]["ci"]),
                    _p(result["spearman"]["p"]),
                ],
                [
                    "Pearson r",
                    _fmt(result["pearson"]["r"]),
                    _ci(result["pearson"]["ci"]),
                    _p(result["pearson"]["p"]),
                ],
            ],
        }
    ]
    if grades:
        k, jt = result["kappa"], result["jonckheere"]
        tables[0]["rows"] += [
            [
                "Kendall tau-b",
                _fmt(result["kendall"]["tau"]),
                _ci(result["kendall"]["ci"]),
                _p(result["kendall"]["p"]),
            ],
            [f"Jonckheere–Terpstra J (z {_fmt(jt['z'], 2)})", f"{jt['J']:g}", "", _p(jt["p"])],
            [f"weighted kappa ({k['weights']})", _fmt(k["kappa"]), _ci(k["ci"]), ""],
        ]
        tables.append(
            {
                "caption": f"{x} by {y}",
                "header": [y, "n", "median", "quartiles"],
                "rows": [
                    [g, v["n"], _fmt(v["median"], 4), f"{v['q1']:.4f} – {v['q3']:.4f}"]
                    for g, v in result["by_grade"].items()
                ],
            }
        )
    for name, _, png in figures:
        files[name] = png
    from shindan.report.stats import render_stats_report

    _report(
        files,
        "correlate.html",
        render_stats_report,
        title=f"Correlation of {x} with {y}",
        subtitle=f"n = {n}" + (" · ordinal grade" if grades else ""),
        json_name="correlate.json",
        data_rows=_join_rows(summary, n),
        tables=tables,
        figures=figures,
        methods=methods,
        settings=[("bootstrap resamples", n_boot), ("seed", seed), ("CI level", 0.95)],
        notes=summary.notes,
    )
    _write(out, files, CORRELATE_FILES)
    return result


def _report(files: dict[str, bytes | str], name: str, render: Any, **kwargs: Any) -> None:
    """Render a report into ``files[name]`` (through a temporary file: the renderer writes)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        render(path, **kwargs)
        files[name] = path.read_text(encoding="utf-8")


def run_prognosis(
    table: str | Path,
    visits: str | Path,
    covariates: Sequence[str],
    scores: Sequence[str],
    out: str | Path,
    *,
    cohort: str | Path | None = None,
    folds: int = 5,
    repeats: int = 20,
    seed: int = 0,
    slope: str = "ols",
    min_visits: int = 3,
) -> dict[str, Any]:
    """``stats prognosis``: per-case yearly eGFR slopes from ``visits``, predicted from the
    covariates without and with the scores by repeated k-fold CV. Returns the JSON written."""
    from shindan.stats.figures import calibration_plot, slopes_plot
    from shindan.stats.prognosis import cross_validate, design, in_sample
    from shindan.stats.slope import mixed_slopes, ols_slopes, read_visits

    out = Path(out)
    check_stats_output(out)
    if slope not in ("ols", "mixed"):
        raise CohortError(f"--slope must be ols or mixed, got {slope!r}")
    if folds < 2 or repeats < 1:
        raise CohortError(
            f"--folds must be at least 2 and --repeats at least 1 ({folds}, {repeats})"
        )
    if min_visits < 2:
        raise CohortError(f"--min-visits must be at least 2, got {min_visits}")
    if not scores:
        raise CohortError("--scores: give at least one score column")
    both = sorted(set(covariates) & set(scores))
    if both:
        raise CohortError(f"{', '.join(both)} given as both covariate and score")
    data, summary = load_table(table, cohort)
    _require_columns(data, [*covariates, *scores], summary)
    v = read_visits(visits)
    ids = set(data["case"])
    visits_only = sorted(set(v["case"]) - ids)
    v = v[v["case"].isin(ids)].reset_index(drop=True)
    if v.empty:
        raise CohortError(
            f"{visits}: no case id matches the table (visits ids: "
            f"{', '.join(visits_only[:3])}{', …' if len(visits_only) > 3 else ''})"
        )
    ols = ols_slopes(v)
    mixed = mixed_slopes(v, min_visits=min_visits)
    if slope == "mixed" and not mixed["fitted"]:
        raise CohortError(f"--slope mixed: the mixed model was {mixed['note']}")
    target = ols if slope == "ols" else mixed["per_case"]
    frame = pd.DataFrame({"case": data["case"]})
    for c in covariates:
        frame[c] = _typed(data, c, summary)
    for c in scores:
        frame[c] = _numeric(data, c, summary)
    frame = frame.merge(target[["case", "slope"]], on="case", how="left")
    slope_label = (
        f"slope ({'fewer than 2 visit dates' if slope == 'ols' else 'not in the mixed model'})"
    )
    frame = frame.rename(columns={"slope": slope_label})
    frame = complete_rows(frame, [slope_label, *covariates, *scores], summary)
    frame = frame.rename(columns={slope_label: "slope"})
    n = len(frame)
    x0 = design(frame, covariates).reset_index(drop=True)
    x1 = pd.concat([x0, frame[list(scores)].astype(float)], axis=1)
    need = max(10, 2 * folds, int(math.ceil((x1.shape[1] + 3) * folds / (folds - 1))))
    require_cases(n, need, f"{folds}-fold cross-validation of {x1.shape[1]} predictor(s)")
    for c in scores:
        _constant(frame[c].to_numpy(), c)
    full = np.column_stack([np.ones(n), x1.to_numpy(dtype=float)])
    if np.linalg.matrix_rank(full) < full.shape[1]:
        raise CohortError(
            "collinear predictors (a column is constant or a combination of others): "
            + ", ".join(x1.columns)
        )
    y = frame["slope"].to_numpy(dtype=float)
    cv = cross_validate(x0.to_numpy(), x1.to_numpy(), y, folds=folds, repeats=repeats, seed=seed)
    fit = in_sample(x0, x1, y)
    predicted = cv.pop("predicted")
    mixed_json = {k: val for k, val in mixed.items() if k != "per_case"}
    result: dict[str, Any] = {
        "n": n,
        "target": {
            "slope": slope,
            "unit": f"{EGFR_UNIT} per year",
            "mean": float(y.mean()),
            "sd": float(y.std(ddof=1)),
        },
        "covariates": list(covariates),
        "scores": list(scores),
        "predictors_without": list(x0.columns),
        "predictors_with": list(x1.columns),
        "without_scores": cv["without_scores"],
        "with_scores": cv["with_scores"],
        "comparison": cv["comparison"],
        "comparison_mae": cv["comparison_mae"],
        "cv": cv["cv"],
        "per_fold": cv["per_fold"],
        "in_sample": fit,
        "slopes": {
            "ols": {
                "cases": int(len(ols)),
                "mean": float(ols["slope"].mean()),
                "median": float(ols["slope"].median()),
                "sd": float(ols["slope"].std(ddof=1)) if len(ols) > 1 else None,
                "visits_median": float(ols["visits"].median()),
                "span_years_median": float(ols["span_years"].median()),
            },
            "mixed": mixed_json,
        },
        "visits": {
            "rows": int(len(v)),
            "cases": int(v["case"].nunique()),
            "missing_egfr": int(v.attrs.get("missing_egfr", 0)),
            "visits_only": visits_only,
        },
        "join": summary.to_dict(),
    }
    methods = [
        (
            "Per-case OLS slope",
            "eGFR linear in time within a case; 2+ visits on different dates (SE with 3+); "
            "unit mL/min/1.73 m² per year, time from each case's first visit",
        ),
        (
            "Linear mixed model (statsmodels MixedLM, REML)",
            f"random intercept and slope per case, cases with {min_visits}+ visits; normal "
            "random effects and residuals; missing visits at random; per-case slopes are "
            "shrunk (BLUP)",
        ),
        (
            f"Repeated {folds}-fold cross-validation ({repeats} repeats, seed {seed})",
            "OLS on the covariates (text columns as indicators against the first level) without "
            "and with the scores, on the same folds; R² and MAE of each repeat's out-of-fold "
            "predictions, averaged",
        ),
        (
            "Corrected resampled t-test (Nadeau & Bengio 2003)",
            "per-fold MSE (and MAE) without minus with scores; variance inflated by "
            "1/J + n_test/n_train for overlapping training sets; t with J - 1 df; positive "
            "difference = the scores reduce the error",
        ),
        (
            "In-sample OLS F-test (statsmodels)",
            "scores added to the covariates, on every case; normal, homoscedastic residuals; "
            "optimistic (no held-out data)",
        ),
    ]
    result["methods"] = [{"test": t, "assumptions": a} for t, a in methods]
    slopes_csv = ols.merge(
        mixed["per_case"].rename(columns={"slope": "mixed_slope"}), on="case", how="left"
    )
    pred = pd.DataFrame(
        {
            "case": frame["case"],
            "predicted_without_scores": predicted["without_scores"],
            "predicted_with_scores": predicted["with_scores"],
        }
    )
    slopes_csv = slopes_csv.merge(pred, on="case", how="left")
    figures = [
        ("prognosis_slopes.png", "eGFR trajectories and per-case slopes", slopes_plot(v, ols)),
        (
            "prognosis_calibration.png",
            "observed against cross-validated predicted slope",
            calibration_plot(y, predicted),
        ),
    ]
    files: dict[str, bytes | str] = {
        "prognosis.json": _json(result),
        "prognosis_slopes.csv": slopes_csv.to_csv(index=False),
    }
    for name, _, png in figures:
        files[name] = png
    cmp, cmpm = result["comparison"], result["comparison_mae"]
    tables = [
        {
            "caption": "Cross-validated prediction of the yearly eGFR slope",
            "header": ["model", "R² (mean ± SD over repeats)", "MAE", "RMSE", "calibration slope"],
            "rows": [
                [
                    name.replace("_", " "),
                    f"{_fmt(m['r2'])} ± {_fmt(m['r2_sd'])}",
                    _fmt(m["mae"]),
                    _fmt(m["rmse"]),
                    _fmt(m["calibration"]["slope"], 2),
                ]
                for name, m in (
                    ("without_scores", result["without_scores"]),
                    ("with_scores", result["with_scores"]),
                )
            ],
        },
        {
            "caption": "Do the scores reduce the error? (corrected resampled t-test)",
            "header": ["error", "mean difference (without − with)", "95% CI", "t", "df", "p"],
            "rows": [
                [
                    c["metric"].upper(),
                    _fmt(c["mean_difference"], 4),
                    _ci(c["ci"]),
                    _fmt(c["t"], 2),
                    c["df"],
                    _p(c["p"]),
                ]  # fmt: skip
                for c in (cmp, cmpm)
            ],
        },
        {
            "caption": "In-sample OLS with scores (optimistic)",
            "header": ["term", "coefficient", "95% CI", "p"],
            "rows": [
                [t["name"], _fmt(t["coef"], 4), _ci(t["ci"]), _p(t["p"])]
                for t in fit["with_scores"]["coefficients"]
            ]
            + [
                [
                    f"F-test of the scores (df {fit['f_test']['df']})",
                    _fmt(fit["f_test"]["F"], 2),
                    "",
                    _p(fit["f_test"]["p"]),
                ]
            ],  # fmt: skip
        },
    ]
    if mixed["fitted"]:
        tables.append(
            {
                "caption": "Mixed model of eGFR over time",
                "header": ["cases", "visits", "population slope", "95% CI", "p", "slope SD"],
                "rows": [
                    [
                        mixed["cases"],
                        mixed["visits"],
                        _fmt(mixed["slope"]),
                        _ci(mixed["ci"]),
                        _p(mixed["p"]),
                        _fmt(mixed["slope_sd"]),
                    ]  # fmt: skip
                ],
            }
        )
    notes = [*summary.notes]
    if visits_only:
        notes.append(
            f"visits of {len(visits_only)} case(s) not among the joined cases are left out: "
            + ", ".join(visits_only[:3])
            + (", …" if len(visits_only) > 3 else "")
        )
    if v.attrs.get("missing_egfr"):
        notes.append(f"{v.attrs['missing_egfr']} visit(s) without an eGFR value left out")
    if mixed.get("note"):
        notes.append(f"mixed model: {mixed['note']}")
    from shindan.report.stats import render_stats_report

    data_rows = _join_rows(summary, n) + [
        ("visits file", str(visits)),
        ("visits used (rows, cases)", f"{len(v)}, {v['case'].nunique()}"),
        ("cases with an OLS slope", len(ols)),
    ]
    _report(
        files,
        "prognosis.html",
        render_stats_report,
        title="Prognosis: yearly eGFR slope from covariates, with and without the scores",
        subtitle=f"n = {n} · target: {slope.upper()} slope ({EGFR_UNIT} per year)",
        json_name="prognosis.json",
        data_rows=data_rows,
        tables=tables,
        figures=figures,
        methods=methods,
        settings=[
            ("covariates", ", ".join(covariates) or "none (mean-only model)"),
            ("scores", ", ".join(scores)),
            ("folds × repeats", f"{folds} × {repeats}"),
            ("seed", seed),
            ("mixed model: minimum visits per case", min_visits),
        ],
        notes=notes,
    )
    _write(out, files, PROGNOSIS_FILES)
    return result


def run_logistic(
    table: str | Path,
    outcome: str,
    predictors: Sequence[str],
    out: str | Path,
    *,
    cohort: str | Path | None = None,
    units: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``stats logistic``: :func:`shindan.stats.logistic.fit_logistic` on the joined table,
    with a bootstrap CI of its (in-sample) AUC. Returns the JSON written."""
    from shindan.stats.figures import odds_ratio_plot
    from shindan.stats.logistic import fit_logistic
    from shindan.stats.metrics import bootstrap_auc
    from shindan.stats.prognosis import design

    out = Path(out)
    check_stats_output(out)
    if not predictors:
        raise CohortError("--predictors: give at least one column")
    if outcome in predictors:
        raise CohortError(f"{outcome!r} is both the outcome and a predictor")
    units = dict(units or {})
    stray = sorted(set(units) - set(predictors))
    if stray:
        raise CohortError(f"--units: {', '.join(stray)} not among the predictors")
    data, summary = load_table(table, cohort)
    _require_columns(data, [outcome, *predictors], summary)
    frame = pd.DataFrame({outcome: numeric_column(data, outcome, _source(outcome, summary))})
    for c in predictors:
        frame[c] = _typed(data, c, summary)
    frame = complete_rows(frame, [outcome, *predictors], summary)
    require_cases(len(frame), MIN_LOGISTIC, "a logistic model")
    res = fit_logistic(frame, outcome, predictors, units=units)
    # fitted probabilities from the coefficients (per unit) for the AUC's bootstrap CI
    x = design(frame, predictors)
    coef = {t.name: t.coef for t in res.terms}
    lin = coef["const"] + x[list(res.predictors)].to_numpy(dtype=float) @ np.array(
        [coef[c] for c in res.predictors]
    )
    prob = 1 / (1 + np.exp(-lin))
    y = frame[outcome].to_numpy(dtype=float)
    auc, lo, hi = bootstrap_auc(y, prob, n_boot=n_boot, seed=seed)
    result = res.to_dict()
    result["auc_ci"] = [lo, hi]
    result["bootstrap"] = {"n_boot": n_boot, "seed": seed}
    result["join"] = summary.to_dict()
    methods = [
        (
            "Multivariable logistic regression (statsmodels Logit, maximum likelihood)",
            "independent cases; log-odds linear in each numeric predictor; no complete "
            "separation; about 10+ events per predictor; odds ratios with Wald 95% CIs",
        ),
        (
            "ROC AUC with percentile bootstrap CI",
            "AUC of the fitted probabilities on the same cases (in-sample: optimistic); "
            "cases resampled, model not refitted",
        ),
    ]
    result["methods"] = [{"test": t, "assumptions": a} for t, a in methods]
    terms = result["terms"]
    png = odds_ratio_plot(terms)
    files: dict[str, bytes | str] = {
        "logistic.json": _json(result),
        "logistic_odds_ratios.png": png,
    }
    from shindan.report.stats import render_stats_report

    tables = [
        {
            "caption": f"Odds ratios for {outcome} = 1",
            "header": ["predictor", "odds ratio", "95% CI", "per", "p"],
            "rows": [
                [
                    t["name"],
                    _fmt(t["odds_ratio"]),
                    f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]",
                    f"{t['unit']:g}",
                    _p(t["p"]),
                ]  # fmt: skip
                for t in terms
                if t["name"] != "const"
            ],
        },
        {
            "caption": "Model",
            "header": ["n", "events", "AUC (in-sample)", "95% CI", "AIC", "LR test p"],
            "rows": [
                [res.n, res.events, _fmt(auc), _ci([lo, hi]), _fmt(res.aic, 1), _p(res.llr_p)]
            ],
        },
    ]
    _report(
        files,
        "logistic.html",
        render_stats_report,
        title=f"Logistic regression of {outcome}",
        subtitle=f"n = {res.n}, events = {res.events}",
        json_name="logistic.json",
        data_rows=_join_rows(summary, res.n),
        tables=tables,
        figures=[("logistic_odds_ratios.png", "odds ratios with 95% CIs", png)],
        methods=methods,
        settings=[("bootstrap resamples", n_boot), ("seed", seed)],
        notes=summary.notes,
        warnings=res.warnings,
    )
    _write(out, files, LOGISTIC_FILES)
    return result
