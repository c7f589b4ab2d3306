"""Reading a clinical table, joining it to a ``kidney analyze`` cohort.csv, checking values.

Every problem a user can cause is a :class:`CohortError` with one line saying which file,
which column and which row: unmatched case ids, unreadable dates, eGFR in the wrong unit or
out of the possible range, missing columns, too few cases. What was joined and what was
dropped (ids without a partner, rows with missing values) is kept in a :class:`JoinSummary`
that the JSON and the report show.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shindan.errors import InputError

__all__ = [
    "EGFR_MAX",
    "EGFR_UNIT",
    "CohortError",
    "JoinSummary",
    "check_egfr",
    "complete_rows",
    "load_table",
    "numeric_column",
    "parse_dates",
    "read_csv",
    "require_cases",
]

EGFR_UNIT = "mL/min/1.73 m²"
# eGFR above this is not a measurement (normal young adults ~ 90-130; hyperfiltration < 200).
EGFR_MAX = 250.0


class CohortError(InputError):
    """A clinical table, visits table or cohort.csv that cannot be used as it is."""


@dataclass
class JoinSummary:
    """What was joined and what was dropped, for the JSON and the report.

    Attributes
    ----------
    table, cohort : str or None
        The files read (``cohort`` None when no cohort.csv was joined).
    table_rows, cohort_rows : int
        Rows read from each.
    joined : int
        Cases in both (all table rows without ``--cohort``).
    table_only, cohort_only : list of str
        Case ids found in one file only (left out).
    missing : dict
        column → cases left out because that column was empty.
    used : int
        Cases in the analysis.
    notes : list of str
    """

    table: str
    cohort: str | None
    table_rows: int
    cohort_rows: int | None
    joined: int
    table_only: list[str] = field(default_factory=list)
    cohort_only: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)
    used: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)

    def line(self) -> str:
        """One line for the terminal, e.g. ``joined 58 of 60 table rows with 59 ...``."""
        parts = [f"{self.used} case(s) used"]
        if self.cohort is not None:
            parts.append(
                f"joined {self.joined} of {self.table_rows} table row(s) with "
                f"{self.cohort_rows} cohort row(s)"
            )
        if self.table_only:
            parts.append(f"{len(self.table_only)} table id(s) not in the cohort")
        if self.cohort_only:
            parts.append(f"{len(self.cohort_only)} cohort id(s) not in the table")
        if self.missing:
            parts.append(
                "left out for missing values: "
                + ", ".join(f"{c} {n}" for c, n in self.missing.items())
            )
        return "; ".join(parts)


def read_csv(path: str | Path, what: str, required: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV as text columns (``case`` kept as written), with ``required`` columns present.

    Parameters
    ----------
    path : path
    what : str
        What the file is, for messages ("clinical table", "visits").
    required : sequence of str
        Columns that must be there.

    Raises
    ------
    CohortError
        Missing, unreadable, empty, not a CSV, duplicate column names, missing columns.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("case,age\\nA01,63\\n")
    >>> read_csv(p, "clinical table", ["case", "age"]).to_dict("records")
    [{'case': 'A01', 'age': '63'}]
    >>> read_csv(p, "clinical table", ["case", "egfr"])
    Traceback (most recent call last):
    ...
    shindan.stats.cohort.CohortError: ...t.csv: clinical table has no column 'egfr' ...
    """
    path = Path(path)
    if not path.exists():
        raise CohortError(f"{path}: no such file")
    if not path.is_file():
        raise CohortError(f"{path}: is not a file ({what} expected)")
    try:
        data = pd.read_csv(
            path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig"
        )
    except UnicodeDecodeError:
        raise CohortError(f"{path}: is not a text CSV file ({what} expected)") from None
    except pd.errors.EmptyDataError:
        raise CohortError(f"{path}: is empty ({what} expected)") from None
    except (pd.errors.ParserError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CohortError(f"{path}: cannot be read as CSV ({first})") from None
    # pandas renames a repeated column "a" to "a.1": check the header as written
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = [c.strip() for c in next(csv.reader(fh), [])]
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise CohortError(f"{path}: column(s) named twice: {', '.join(dup)}")
    data.columns = [str(c).strip() for c in data.columns]
    for c in required:
        if c not in data.columns:
            cols = ", ".join(data.columns[:12]) + (", …" if len(data.columns) > 12 else "")
            raise CohortError(f"{path}: {what} has no column {c!r} (columns: {cols})")
    if data.empty:
        raise CohortError(f"{path}: {what} has a header but no rows")
    data = data.apply(lambda s: s.str.strip())
    return data.replace({"": np.nan, "NA": np.nan, "NaN": np.nan, "nan": np.nan})


def _unique_cases(data: pd.DataFrame, path: Path, what: str) -> None:
    if data["case"].isna().any():
        row = int(np.flatnonzero(data["case"].isna().to_numpy())[0]) + 2
        raise CohortError(f"{path}: {what} row {row} has no case id")
    dup = data["case"][data["case"].duplicated()].unique()
    if len(dup):
        shown = ", ".join(map(str, dup[:3])) + (", …" if len(dup) > 3 else "")
        raise CohortError(f"{path}: case id(s) appear more than once in the {what}: {shown}")


def _examples(ids: Sequence[str]) -> str:
    return ", ".join(ids[:3]) + (", …" if len(ids) > 3 else "")


def _near_misses(left: Sequence[str], right: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of unmatched ids equal but for case, spaces, separators and leading zeros."""

    def key(case: str) -> str:
        s = "".join(ch for ch in case.lower() if ch.isalnum())
        return "".join(part.lstrip("0") or "0" for part in _digit_runs(s))

    by_key = {key(c): c for c in right}
    return [(c, by_key[key(c)]) for c in left if key(c) in by_key]


def _digit_runs(s: str) -> list[str]:
    """``"syn007a"`` → ``["syn", "007", "a"]`` (so leading zeros of numbers can go)."""
    import re

    return re.findall(r"\d+|\D+", s)


def load_table(
    table: str | Path, cohort: str | Path | None = None
) -> tuple[pd.DataFrame, JoinSummary]:
    """The clinical table, joined on ``case`` with a ``kidney analyze`` cohort.csv if given.

    Case ids are compared as text, exactly (``A01`` is not ``a01``). Ids found in one file
    only are left out and listed in the summary; when no id matches, or the cohort has a
    column of the same name as the table (other than ``case``), it is an error.

    Parameters
    ----------
    table : path
        CSV with a ``case`` column, one row per case.
    cohort : path, optional
        ``cohort.csv`` written by ``kidney analyze`` (its scores become columns).

    Returns
    -------
    data : DataFrame
        Text columns, one row per case (in the table's order).
    summary : JoinSummary

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "t.csv").write_text("case,age\\nA,60\\nB,70\\nC,80\\n")
    >>> _ = (d / "cohort.csv").write_text("case,interstitial_fibrosis,inflammation\\n"
    ...                                   "A,0.1,0.01\\nB,0.3,0.02\\nD,0.2,0.02\\n")
    >>> data, summary = load_table(d / "t.csv", d / "cohort.csv")
    >>> list(data["case"]), summary.table_only, summary.cohort_only
    (['A', 'B'], ['C'], ['D'])
    """
    table = Path(table)
    data = read_csv(table, "clinical table", ["case"])
    _unique_cases(data, table, "clinical table")
    if cohort is None:
        summary = JoinSummary(str(table), None, len(data), None, len(data), used=len(data))
        return data, summary
    cohort = Path(cohort)
    scores = read_csv(cohort, "cohort.csv", ["case"])
    _unique_cases(scores, cohort, "cohort.csv")
    both = sorted(set(data.columns) & set(scores.columns) - {"case"})
    if both:
        raise CohortError(
            f"{cohort}: column(s) {', '.join(both)} are in both the table and the cohort; "
            "rename them in the table"
        )
    in_cohort = set(scores["case"])
    in_table = set(data["case"])
    table_only = [c for c in data["case"] if c not in in_cohort]
    cohort_only = [c for c in scores["case"] if c not in in_table]
    near = _near_misses(table_only, cohort_only)
    hint = (
        f"; {len(near)} would match ignoring case, spaces and leading zeros (e.g. "
        f"{near[0][0]!r} and {near[0][1]!r}): write them the same way in both files"
        if near
        else ""
    )
    if len(table_only) == len(data):
        raise CohortError(
            f"{table}: no case id matches {cohort} (table ids: {_examples(list(data['case']))}; "
            f"cohort ids: {_examples(list(scores['case']))}); ids must be equal as text{hint}"
        )
    joined = data.merge(scores, on="case", how="inner", validate="one_to_one")
    summary = JoinSummary(
        str(table),
        str(cohort),
        len(data),
        len(scores),
        len(joined),
        table_only=table_only,
        cohort_only=cohort_only,
        used=len(joined),
    )
    if table_only:
        summary.notes.append(
            f"{len(table_only)} case(s) of the table have no cohort row and are left out: "
            f"{_examples(table_only)}"
        )
    if near:
        summary.notes.append(f"unmatched ids{hint}")
    if cohort_only:
        summary.notes.append(
            f"{len(cohort_only)} cohort case(s) have no table row and are left out: "
            f"{_examples(cohort_only)}"
        )
    return joined.reset_index(drop=True), summary


def numeric_column(data: pd.DataFrame, column: str, source: str | Path) -> pd.Series:
    """``data[column]`` as floats (empty cells NaN); a cell that is not a number is an error.

    Examples
    --------
    >>> numeric_column(pd.DataFrame({"age": ["61", None, "70.5"]}), "age", "t.csv").tolist()
    [61.0, nan, 70.5]
    """
    if column not in data.columns:
        cols = ", ".join(map(str, data.columns[:12]))
        raise CohortError(f"{source}: no column {column!r} (columns: {cols})")
    s = data[column]
    out = pd.to_numeric(s, errors="coerce").astype(float)
    bad = out.isna() & s.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        case = f" (case {data['case'].iloc[i]})" if "case" in data.columns else ""
        raise CohortError(
            f"{source}: column {column!r} row {i + 2}{case}: {s.iloc[i]!r} is not a number"
        )
    if np.isinf(out).any():
        raise CohortError(f"{source}: column {column!r} holds an infinite value")
    return out


def parse_dates(values: pd.Series, source: str | Path, column: str = "date") -> pd.Series:
    """ISO 8601 dates (``2021-03-14``, optionally with a time) as timestamps.

    Other forms (``14/03/2021``: day or month first?) are refused rather than guessed.

    Examples
    --------
    >>> parse_dates(pd.Series(["2021-03-14", "2022-01-02"]), "v.csv").dt.year.tolist()
    [2021, 2022]
    >>> parse_dates(pd.Series(["14/03/2021"]), "v.csv")
    Traceback (most recent call last):
    ...
    shindan.stats.cohort.CohortError: v.csv: column 'date' row 2: '14/03/2021' is not a date ...
    """
    out = pd.to_datetime(values, format="ISO8601", errors="coerce")
    iso = values.astype(str).str.match(r"^\d{4}-\d{2}-\d{2}")
    bad = (out.isna() | ~iso) & values.notna()
    if bad.any() or values.isna().any():
        i = int(np.flatnonzero((bad | values.isna()).to_numpy())[0])
        shown = "an empty cell" if pd.isna(values.iloc[i]) else repr(values.iloc[i])
        raise CohortError(
            f"{source}: column {column!r} row {i + 2}: {shown} is not a date as YYYY-MM-DD"
        )
    return out


def check_egfr(values: pd.Series, source: str | Path, column: str = "egfr") -> None:
    """eGFR must be in mL/min/1.73 m²: positive, at most 250, and not all below 3.

    A median below 3 is eGFR in mL/s/1.73 m² (× 60 gives mL/min); above 250 is not a
    possible filtration rate (creatinine in µmol/L in the wrong column?).

    Examples
    --------
    >>> check_egfr(pd.Series([1.1, 0.9, 1.4]), "v.csv")
    Traceback (most recent call last):
    ...
    shindan.stats.cohort.CohortError: v.csv: column 'egfr' looks like mL/s/1.73 m² (median 1.1); ...
    """
    v = values.dropna()
    if v.empty:
        return
    low = v[v <= 0]
    if len(low):
        raise CohortError(
            f"{source}: column {column!r} holds eGFR {low.iloc[0]:g} {EGFR_UNIT}: "
            "a filtration rate is positive"
        )
    high = v[v > EGFR_MAX]
    if len(high):
        raise CohortError(
            f"{source}: column {column!r} holds eGFR {high.iloc[0]:g}: not possible in "
            f"{EGFR_UNIT} (more than {EGFR_MAX:g}; creatinine in µmol/L?)"
        )
    med = float(v.median())
    if med < 3:
        raise CohortError(
            f"{source}: column {column!r} looks like mL/s/1.73 m² (median {med:.2g}); "
            f"give eGFR in {EGFR_UNIT} (× 60)"
        )


def complete_rows(data: pd.DataFrame, columns: Sequence[str], summary: JoinSummary) -> pd.DataFrame:
    """Rows with every one of ``columns`` filled; counts of the others go into ``summary``.

    A case missing several columns is counted once, under the first of them.
    """
    keep = pd.Series(True, index=data.index)
    for c in columns:
        miss = keep & data[c].isna()
        if miss.any():
            summary.missing[c] = summary.missing.get(c, 0) + int(miss.sum())
        keep &= ~miss
    out = data[keep].reset_index(drop=True)
    summary.used = len(out)
    return out


def require_cases(n: int, minimum: int, what: str) -> None:
    """:class:`CohortError` when fewer than ``minimum`` cases are left for ``what``."""
    if n < minimum:
        raise CohortError(
            f"too few cases for {what}: {n} with complete data, at least {minimum} needed"
        )
