"""``shindan stats ...``: cohort statistics on a clinical table joined with cohort.csv.

Thin typer wiring: numpy, scipy, statsmodels, pandas and matplotlib are imported inside the
commands, so ``shindan --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Cohort statistics: scores against eGFR and grades, eGFR-slope prognosis, logistic.",
    no_args_is_help=True,
)

Table = Annotated[
    Path, typer.Argument(help="Clinical CSV, one row per case, with a 'case' column.")
]
Out = Annotated[Path, typer.Option("--out", help="Output folder.")]
Cohort = Annotated[
    Path | None,
    typer.Option(help="cohort.csv from 'kidney analyze', joined on 'case' (scores as columns)."),
]
Seed = Annotated[int, typer.Option(help="Seed of the bootstrap / fold split.")]


def _floats(value: str | None, option: str) -> list[float] | None:
    from shindan.errors import InputError

    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise InputError(f"{option}: {value!r} is not a comma-separated list of numbers") from None


@app.command()
def correlate(
    table: Table,
    x: Annotated[str, typer.Option("--x", help="Column, e.g. a score: interstitial_fibrosis.")],
    y: Annotated[str, typer.Option("--y", help="Column, e.g. egfr or a pathologist's grade.")],
    out: Out,
    cohort: Cohort = None,
    ordinal: Annotated[
        bool | None,
        typer.Option(
            "--ordinal/--continuous",
            help="--y is an ordinal grade (Kendall, Jonckheere–Terpstra, weighted kappa); "
            "default: yes when it holds whole numbers with 2 to 7 levels.",
        ),
    ] = None,
    bins: Annotated[
        str | None,
        typer.Option(
            help="Cut points of --x into grades for the weighted kappa, e.g. 0.05,0.25,0.5 "
            "(Banff ci from the fibrosis fraction); default: quantiles matching the grades.",
        ),
    ] = None,
    kappa_weights: Annotated[str, typer.Option(help="linear or quadratic.")] = "linear",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 2000,
    seed: Seed = 0,
) -> None:
    """Spearman and Pearson with bootstrap CIs; Kendall, Jonckheere–Terpstra, kappa for grades.

    Writes correlate.json, figures and correlate.html into --out.
    """
    from shindan.errors import InputError
    from shindan.stats.run import run_correlate

    if kappa_weights not in ("linear", "quadratic"):
        raise InputError(f"--kappa-weights must be linear or quadratic, got {kappa_weights!r}")
    r = run_correlate(
        table,
        x,
        y,
        out,
        cohort=cohort,
        ordinal=ordinal,
        bins=_floats(bins, "--bins"),
        kappa_weights=kappa_weights,
        n_boot=n_boot,
        seed=seed,
    )
    sp, pe = r["spearman"], r["pearson"]
    line = (
        f"n {r['n']}  Spearman rho {sp['rho']:.3f} [{sp['ci'][0]:.3f}, {sp['ci'][1]:.3f}] "
        f"p {sp['p']:.2g}  Pearson r {pe['r']:.3f} [{pe['ci'][0]:.3f}, {pe['ci'][1]:.3f}] "
        f"p {pe['p']:.2g}"
    )
    if r["ordinal"]:
        line += (
            f"\n  Kendall tau {r['kendall']['tau']:.3f} p {r['kendall']['p']:.2g}  "
            f"Jonckheere–Terpstra z {r['jonckheere']['z']:.2f} p {r['jonckheere']['p']:.2g}  "
            f"weighted kappa {r['kappa']['kappa']:.3f}"
        )
    typer.echo(line, err=True)
    _joined(r["join"])
    typer.echo(f"wrote {out / 'correlate.json'}, {out / 'correlate.html'}", err=True)


def _joined(join: dict) -> None:
    from shindan.stats.cohort import JoinSummary

    typer.echo(f"  data: {JoinSummary(**join).line()}", err=True)


@app.command()
def prognosis(
    table: Table,
    visits: Annotated[
        Path,
        typer.Option(help="CSV of eGFR visits: case, date (YYYY-MM-DD), egfr (mL/min/1.73 m²)."),
    ],
    scores: Annotated[str, typer.Option(help="Score columns, comma-separated.")],
    out: Out,
    covariates: Annotated[
        str, typer.Option(help="Clinical columns, comma-separated (text ones as categories).")
    ] = "",
    cohort: Cohort = None,
    folds: Annotated[int, typer.Option(help="Folds of the cross-validation.")] = 5,
    repeats: Annotated[int, typer.Option(help="Repeats of the k-fold split.")] = 20,
    slope: Annotated[
        str, typer.Option(help="Target slope: ols (per case) or mixed (mixed-model BLUP).")
    ] = "ols",
    min_visits: Annotated[
        int, typer.Option(help="Visits a case needs to enter the mixed model.")
    ] = 3,
    seed: Seed = 0,
) -> None:
    """Yearly eGFR slopes predicted with and without the scores (repeated k-fold CV, t-test).

    R² and MAE of each model, the Nadeau–Bengio corrected resampled t-test of their fold
    errors. Writes prognosis.json, figures, prognosis_slopes.csv and prognosis.html into --out.
    """
    from shindan.stats.run import parse_list, run_prognosis

    r = run_prognosis(
        table,
        visits,
        parse_list(covariates, "--covariates"),
        parse_list(scores, "--scores"),
        out,
        cohort=cohort,
        folds=folds,
        repeats=repeats,
        seed=seed,
        slope=slope,
        min_visits=min_visits,
    )
    w, s, c = r["without_scores"], r["with_scores"], r["comparison"]
    typer.echo(
        f"n {r['n']}  without scores R² {w['r2']:.3f} MAE {w['mae']:.3f}  "
        f"with scores R² {s['r2']:.3f} MAE {s['mae']:.3f}  "
        f"(per year)\n  corrected resampled t-test (MSE) t {c['t']:.2f} p {c['p']:.2g}",
        err=True,
    )
    _joined(r["join"])
    typer.echo(f"wrote {out / 'prognosis.json'}, {out / 'prognosis.html'}", err=True)


@app.command()
def logistic(
    table: Table,
    outcome: Annotated[str, typer.Option(help="0/1 outcome column.")],
    predictors: Annotated[str, typer.Option(help="Predictor columns, comma-separated.")],
    out: Out,
    cohort: Cohort = None,
    units: Annotated[
        str | None,
        typer.Option(help="Odds ratio per this change, e.g. interstitial_fibrosis=0.1."),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC's CI.")] = 1000,
    seed: Seed = 0,
) -> None:
    """Multivariable logistic regression: odds ratios with CIs, AUC with a bootstrap CI.

    Writes logistic.json, a forest plot and logistic.html into --out.
    """
    from shindan.stats.run import parse_list, parse_units, run_logistic

    r = run_logistic(
        table,
        outcome,
        parse_list(predictors, "--predictors"),
        out,
        cohort=cohort,
        units=parse_units(units),
        n_boot=n_boot,
        seed=seed,
    )
    for t in r["terms"]:
        if t["name"] != "const":
            typer.echo(
                f"{t['name']}: OR {t['odds_ratio']:.3g} [{t['ci_low']:.3g}, {t['ci_high']:.3g}] "
                f"per {t['unit']:g}  p {t['p']:.2g}",
                err=True,
            )
    lo, hi = r["auc_ci"]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    typer.echo(f"n {r['n']}  events {r['events']}  AUC {r['auc']:.3f}{ci} (in-sample)", err=True)
    for w in r["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    _joined(r["join"])
    typer.echo(f"wrote {out / 'logistic.json'}, {out / 'logistic.html'}", err=True)


@app.command()
def example(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("stats-example"),
    cases: Annotated[int, typer.Option(help="Number of synthetic cases.")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a SYNTHETIC cohort with known effects to try the stats commands on.

    cohort.csv (scores), clinical.csv, visits.csv (eGFR), truth.json (the true model).
    """
    from shindan.stats.example import write_example

    counts = write_example(out, cases=cases, seed=seed)
    typer.echo(
        f"wrote synthetic {', '.join(f'{k}.csv ({v} rows)' for k, v in counts.items())} "
        f"to {out} (see {out / 'README.txt'})",
        err=True,
    )
