"""Reading and joining the clinical table: what is joined, what is dropped, and why not."""

from __future__ import annotations

import pandas as pd
import pytest

from shindan.stats.cohort import CohortError, JoinSummary, complete_rows, load_table


def _write(path, text: str):
    path.write_text(text)
    return path


def test_join_lists_dropped_ids_and_missing_values(tmp_path):
    t = _write(tmp_path / "t.csv", "case,age\nA,60\nB,\nC,80\nE,70\n")
    c = _write(tmp_path / "c.csv", "case,score\nA,0.1\nB,0.2\nC,0.3\nD,0.4\n")
    data, s = load_table(t, c)
    assert list(data["case"]) == ["A", "B", "C"] and list(data.columns) == ["case", "age", "score"]
    assert (s.table_rows, s.cohort_rows, s.joined) == (4, 4, 3)
    assert (s.table_only, s.cohort_only) == (["E"], ["D"])
    kept = complete_rows(data, ["age", "score"], s)
    assert list(kept["case"]) == ["A", "C"] and s.missing == {"age": 1} and s.used == 2
    assert "2 case(s) used" in s.line() and "age 1" in s.line()
    assert JoinSummary(**s.to_dict()) == s


def test_ids_are_compared_as_written(tmp_path):
    # leading zeros are kept: 007 is not 7
    t = _write(tmp_path / "t.csv", "case,age\n007,60\n")
    c = _write(tmp_path / "c.csv", "case,score\n7,0.1\n")
    with pytest.raises(CohortError, match="no case id matches.*would match ignoring case"):
        load_table(t, c)
    # some matched: the near misses are named in the notes
    t = _write(tmp_path / "t.csv", "case,age\nA1,60\nsyn-02,61\n")
    c = _write(tmp_path / "c.csv", "case,score\nA1,0.1\nSYN2,0.2\n")
    _, s = load_table(t, c)
    assert s.table_only == ["syn-02"] and any("'syn-02' and 'SYN2'" in n for n in s.notes)


@pytest.mark.parametrize(
    ("table", "cohort", "message"),
    [
        ("case,age\nA,1\nA,2\n", None, "more than once"),
        ("case,age\n,1\n", None, "row 2 has no case id"),
        ("id,age\nA,1\n", None, "no column 'case'"),
        ("case,age,age\nA,1,2\n", None, "named twice"),
        ("case,score\nA,1\n", "case,score\nA,0.1\n", "in both the table and the cohort"),
        ("case,age\nA,1\n", "case,score\nA,0.1\nA,0.2\n", "more than once in the cohort"),
    ],
)
def test_bad_tables(tmp_path, table, cohort, message):
    t = _write(tmp_path / "t.csv", table)
    c = _write(tmp_path / "c.csv", cohort) if cohort else None
    with pytest.raises(CohortError, match=message):
        load_table(t, c)


def test_no_cohort_keeps_every_row(tmp_path):
    data, s = load_table(_write(tmp_path / "t.csv", "case,age\nA,1\nB,2\n"))
    assert s.cohort is None and s.joined == 2 and isinstance(data, pd.DataFrame)
