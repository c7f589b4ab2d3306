"""A synthetic cohort with known effects, for trying ``shindan stats`` (never real patients).

``cohort.csv`` holds AI-like scores (as ``kidney analyze`` writes them), ``clinical.csv`` the
clinical table (age, sex, diagnosis, baseline eGFR, a pathologist's Banff ci grade) and
``visits.csv`` dated eGFR measurements. Every case id starts with ``SYN``. The generating
model, written to ``truth.json``, is:

- fibrosis ``f ~ Beta(2, 5)``; inflammation ``0.02 + 0.08 f + noise``;
- Banff ci grade: ``f`` plus noise (SD 0.06) binned at 0.05 / 0.25 / 0.5;
- baseline eGFR ``95 - 30 f - 0.3 (age - 55) + noise`` (SD 12);
- yearly eGFR slope ``-1 - 12 f - 1.5 [diabetic nephropathy] + noise`` (SD 1.2);
- ``rapid_decline`` 1 when that true slope is below -5 (KDIGO's rapid progression);
- 3 to 8 visits over 1 to 6 years, each ``baseline + slope · years + noise`` (SD 3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["EXAMPLE_FILES", "TRUTH", "check_example_folder", "make_example", "write_example"]

EXAMPLE_FILES = ("cohort.csv", "clinical.csv", "visits.csv", "truth.json", "README.txt")

TRUTH: dict[str, Any] = {
    "slope_intercept": -1.0,
    "slope_per_fibrosis": -12.0,
    "slope_diabetic": -1.5,
    "slope_noise_sd": 1.2,
    "baseline_egfr": "95 - 30 * fibrosis - 0.3 * (age - 55) + N(0, 12)",
    "ci_grade_edges": [0.05, 0.25, 0.5],
    "visit_noise_sd": 3.0,
}

README = """SYNTHETIC DATA, made by `shindan stats example` (seed {seed}): no real patient.
Case ids start with SYN. The generating model (true effects) is in truth.json.

cohort.csv    scores as `kidney analyze` writes them (interstitial_fibrosis, inflammation)
clinical.csv  case, age, sex, diagnosis, baseline_egfr (mL/min/1.73 m²), ci_grade (Banff ci),
              rapid_decline (1 = true slope below -5 per year)
visits.csv    case, date (YYYY-MM-DD), egfr (mL/min/1.73 m²)

Two clinical cases have no cohort row and one cohort case no clinical row, and one case has
no age, so the join summary shows what is dropped. Try:

  shindan stats correlate clinical.csv --cohort cohort.csv \\
      --x interstitial_fibrosis --y ci_grade --out corr
  shindan stats prognosis clinical.csv --cohort cohort.csv --visits visits.csv \\
      --covariates age,sex,diagnosis,baseline_egfr \\
      --scores interstitial_fibrosis,inflammation --out prog
  shindan stats logistic clinical.csv --cohort cohort.csv --outcome rapid_decline \\
      --predictors age,diagnosis,interstitial_fibrosis --units interstitial_fibrosis=0.1 --out logit
"""


def make_example(cases: int = 120, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The three synthetic tables (see the module docstring for the model).

    Examples
    --------
    >>> t = make_example(20, seed=1)
    >>> sorted(t), len(t["clinical"]), t["clinical"]["case"].iloc[0]
    (['clinical', 'cohort', 'visits'], 19, 'SYN001')
    """
    rng = np.random.default_rng(seed)
    ids = [f"SYN{i + 1:03d}" for i in range(cases)]
    fib = rng.beta(2, 5, cases)
    infl = np.clip(0.02 + 0.08 * fib + rng.normal(0, 0.01, cases), 0.001, None)
    age = np.round(rng.normal(58, 12, cases)).clip(20, 90)
    sex = rng.choice(["F", "M"], cases)
    dn = rng.random(cases) < 0.4
    diagnosis = np.where(dn, "diabetic nephropathy", "IgA nephropathy")
    base = (95 - 30 * fib - 0.3 * (age - 55) + rng.normal(0, 12, cases)).clip(15, 140)
    grade = np.searchsorted(TRUTH["ci_grade_edges"], fib + rng.normal(0, 0.06, cases))
    slope = (
        TRUTH["slope_intercept"]
        + TRUTH["slope_per_fibrosis"] * fib
        + TRUTH["slope_diabetic"] * dn
        + rng.normal(0, TRUTH["slope_noise_sd"], cases)
    )
    start = pd.Timestamp("2019-01-01")
    visits = []
    for i, c in enumerate(ids):
        biopsy = start + pd.Timedelta(days=int(rng.integers(0, 730)))
        k = int(rng.integers(3, 9))
        span = rng.uniform(1.0, 6.0)
        years = np.sort(np.concatenate([[0.0, span], rng.uniform(0.2, span, k - 2)]))
        egfr = base[i] + slope[i] * years + rng.normal(0, TRUTH["visit_noise_sd"], k)
        for t, e in zip(years, egfr, strict=True):
            date = biopsy + pd.Timedelta(days=round(t * 365.25))
            visits.append(
                {"case": c, "date": date.strftime("%Y-%m-%d"), "egfr": round(max(e, 5.0), 1)}
            )
    clinical = pd.DataFrame(
        {
            "case": ids,
            "age": age.astype(int).astype(object),
            "sex": sex,
            "diagnosis": diagnosis,
            "baseline_egfr": np.round(base, 1),
            "ci_grade": grade,
            # KDIGO's rapid progression: losing more than 5 mL/min/1.73 m² a year (true slope)
            "rapid_decline": (slope < -5).astype(int),
        }
    )
    cohort = pd.DataFrame(
        {"case": ids, "interstitial_fibrosis": np.round(fib, 4), "inflammation": np.round(infl, 5)}
    )
    # what a real cohort has: cases without a biopsy score or a clinical row, a missing age
    clinical.loc[3, "age"] = None
    cohort = cohort.drop(index=[5, 6]).reset_index(drop=True)
    clinical = clinical.drop(index=[cases - 1]).reset_index(drop=True)
    return {"cohort": cohort, "clinical": clinical, "visits": pd.DataFrame(visits)}


def check_example_folder(out: str | Path, cases: int = 120) -> None:
    """Refuse, before any work, an ``out`` that :func:`write_example` may not replace (a file,
    a folder holding files it did not write) and a cohort too small for the statistics."""
    from shindan.errors import InputError
    from shindan.util.atomic import check_output_folder

    out = Path(out)
    check_output_folder(out, EXAMPLE_FILES)
    readme = out / "README.txt"
    # a cohort.csv alone may be a real one from kidney analyze: replace only an earlier example
    if out.is_dir() and any(out.iterdir()):
        ours = readme.is_file() and readme.read_text(errors="replace").startswith("SYNTHETIC DATA")
        if not ours:
            raise InputError(
                f"{out}: holds files shindan stats example did not write; choose another "
                "output folder"
            )
    if cases < 20:
        raise InputError(f"--cases must be at least 20, got {cases}")


def write_example(out: str | Path, cases: int = 120, seed: int = 0) -> dict[str, int]:
    """Write the synthetic cohort into the folder ``out`` (replaced only if it holds nothing
    but these files). Returns the row count of each table."""
    from shindan.util.atomic import atomic_dir

    out = Path(out)
    check_example_folder(out, cases)
    tables = make_example(cases, seed)
    with atomic_dir(out, EXAMPLE_FILES) as tmp:
        for name, df in tables.items():
            df.to_csv(tmp / f"{name}.csv", index=False)
        (tmp / "truth.json").write_text(
            json.dumps({"synthetic": True, "seed": seed, "cases": cases, **TRUTH}, indent=2) + "\n"
        )
        (tmp / "README.txt").write_text(README.format(seed=seed))
    return {name: len(df) for name, df in tables.items()}
