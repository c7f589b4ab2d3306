"""``shindan stats``: the three analyses and the example on a synthetic cohort, joined and
dropped cases, one-line errors (exit 2) for bad input and bad --out, nothing partial left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shindan.stats.example import TRUTH, write_example


def shindan(monkeypatch, capsys, *args: object) -> tuple[int, str]:
    """Run the console entry point in this process: (exit code, stderr)."""
    import shindan.cli as cli

    if not any(g.name == "stats" for g in cli.app.registered_groups):
        cli._register_tasks()
    monkeypatch.setattr(cli, "_register_tasks", lambda: None)
    monkeypatch.setattr(sys, "argv", ["shindan", *map(str, args)])
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stats") / "example"
    write_example(d, cases=60, seed=0)
    return d


def test_example_command_writes_synthetic_cohort(monkeypatch, capsys, tmp_path):
    code, err = shindan(monkeypatch, capsys, "stats", "example", "--out", tmp_path / "ex",
                        "--cases", 30)  # fmt: skip
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert names == ["README.txt", "clinical.csv", "cohort.csv", "truth.json", "visits.csv"]
    assert "SYNTHETIC" in (tmp_path / "ex" / "README.txt").read_text()
    assert json.loads((tmp_path / "ex" / "truth.json").read_text())["synthetic"] is True
    # a real cohort.csv (kidney analyze's) is never replaced by the synthetic one
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "cohort.csv").write_text("case,interstitial_fibrosis,inflammation\n")
    code, err = shindan(monkeypatch, capsys, "stats", "example", "--out", tmp_path / "real")
    one_line_error(code, err, "did not write")
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["cohort.csv"]
    # an earlier example is replaced
    code, err = shindan(monkeypatch, capsys, "stats", "example", "--out", tmp_path / "ex")
    assert code == 0, err
    (tmp_path / "ex" / "mine.txt").write_text("user file")
    code, err = shindan(monkeypatch, capsys, "stats", "example", "--out", tmp_path / "ex")
    one_line_error(code, err, "did not write")


def test_correlate_grades_with_join_summary(monkeypatch, capsys, example, tmp_path):
    out = tmp_path / "corr"
    code, err = shindan(monkeypatch, capsys, "stats", "correlate", example / "clinical.csv",
                        "--cohort", example / "cohort.csv", "--x", "interstitial_fibrosis",
                        "--y", "ci_grade", "--bins", "0.05,0.25,0.5", "--n-boot", 300,
                        "--out", out)  # fmt: skip
    assert code == 0, err
    r = json.loads((out / "correlate.json").read_text())
    # 60 cases: 2 without a cohort row, 1 cohort row without a clinical row
    assert r["n"] == 57 and r["join"]["table_only"] == ["SYN006", "SYN007"]
    assert r["join"]["cohort_only"] == ["SYN060"]
    assert set(r["spearman"]) >= {"rho", "ci", "p"} and set(r["pearson"]) >= {"r", "ci", "p"}
    assert r["ordinal"] and r["spearman"]["ci"][0] > 0.5 and r["jonckheere"]["p"] < 1e-6
    assert r["kappa"]["edges"] == [0.05, 0.25, 0.5]
    html = (out / "correlate.html").read_text()
    assert "data:image/png;base64," in html and "Jonckheere" in html and "SYN006" in html
    assert {p.name for p in out.iterdir()} == {
        "correlate.json", "correlate.html", "correlate_scatter.png", "correlate_box.png"
    }  # fmt: skip
    # again into the same folder, continuous: the earlier box plot goes, the rest is replaced
    code, err = shindan(monkeypatch, capsys, "stats", "correlate", example / "clinical.csv",
                        "--x", "age", "--y", "baseline_egfr", "--n-boot", 200,
                        "--out", out)  # fmt: skip
    assert code == 0, err
    assert not (out / "correlate_box.png").exists()
    r = json.loads((out / "correlate.json").read_text())
    assert r["n"] == 58 and r["join"]["missing"] == {"age": 1} and not r["ordinal"]


def test_prognosis_recovers_the_score_effect(monkeypatch, capsys, example, tmp_path):
    out = tmp_path / "prog"
    code, err = shindan(monkeypatch, capsys, "stats", "prognosis", example / "clinical.csv",
                        "--cohort", example / "cohort.csv", "--visits", example / "visits.csv",
                        "--covariates", "age,sex,diagnosis", "--scores",
                        "interstitial_fibrosis", "--repeats", 5, "--out", out)  # fmt: skip
    assert code == 0, err
    r = json.loads((out / "prognosis.json").read_text())
    assert r["n"] == 56  # 57 joined, one without age
    for k in ("without_scores", "with_scores"):
        assert {"r2", "mae"} <= set(r[k])
    assert {"t", "p"} <= set(r["comparison"])
    assert r["with_scores"]["r2"] > r["without_scores"]["r2"]
    assert r["comparison"]["t"] > 0
    coef = {c["name"]: c for c in r["in_sample"]["with_scores"]["coefficients"]}
    lo, hi = coef["interstitial_fibrosis"]["ci"]
    assert lo <= TRUTH["slope_per_fibrosis"] <= hi
    assert r["slopes"]["mixed"]["fitted"]
    html = (out / "prognosis.html").read_text()
    assert "Nadeau" in html and html.count("data:image/png;base64,") == 2
    assert (out / "prognosis_slopes.csv").read_text().startswith("case,slope,se,")
    # a failing command into the same folder leaves the prognosis files as they were
    before = sorted(p.name for p in out.iterdir())
    code, err = shindan(monkeypatch, capsys, "stats", "logistic", example / "clinical.csv",
                        "--cohort", example / "cohort.csv", "--outcome", "dn",
                        "--predictors", "interstitial_fibrosis", "--out", out)  # fmt: skip
    one_line_error(code, err, "no column 'dn'")
    assert sorted(p.name for p in out.iterdir()) == before


def test_logistic(monkeypatch, capsys, example, tmp_path):
    import pandas as pd

    clinical = pd.read_csv(example / "clinical.csv")
    clinical["advanced"] = (clinical["ci_grade"] >= 2).astype(int)
    clinical.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "log"
    code, err = shindan(monkeypatch, capsys, "stats", "logistic", tmp_path / "t.csv",
                        "--cohort", example / "cohort.csv", "--outcome", "advanced",
                        "--predictors", "interstitial_fibrosis,age", "--units",
                        "interstitial_fibrosis=0.1", "--n-boot", 200, "--out", out)  # fmt: skip
    assert code == 0, err
    r = json.loads((out / "logistic.json").read_text())
    t = {x["name"]: x for x in r["terms"]}
    assert (
        t["interstitial_fibrosis"]["unit"] == 0.1 and t["interstitial_fibrosis"]["odds_ratio"] > 1
    )
    assert r["auc_ci"][0] < r["auc"] < r["auc_ci"][1]
    assert (out / "logistic.html").exists() and (out / "logistic_odds_ratios.png").exists()


def test_bad_inputs_one_line_errors(monkeypatch, capsys, example, tmp_path):
    clin, coh, vis = example / "clinical.csv", example / "cohort.csv", example / "visits.csv"
    out = tmp_path / "o"
    base = ["stats", "correlate", clin, "--cohort", coh, "--out", out]
    (tmp_path / "other.csv").write_text("case,interstitial_fibrosis\nX1,0.1\nX2,0.2\n")
    (tmp_path / "dup.csv").write_text("case,age\nA,1\nA,2\n")
    (tmp_path / "few.csv").write_text(
        "case,a,b\n" + "".join(f"C{i},{i},{i % 3}\n" for i in range(5))
    )
    (tmp_path / "umol.csv").write_text(
        "case,baseline_egfr,a\n" + "".join(f"C{i},{80 + i * 40},{i}\n" for i in range(10))
    )
    (tmp_path / "bad_dates.csv").write_text("case,date,egfr\nSYN001,2020/01/05,50\n")
    (tmp_path / "mls.csv").write_text(
        "case,date,egfr\n" + "".join(f"SYN{i:03d},2020-01-0{i},0.{i + 2}\n" for i in range(1, 8))
    )
    cases = [
        (["stats", "correlate", clin, "--cohort", tmp_path / "other.csv", "--x", "age", "--y",
          "interstitial_fibrosis", "--out", out], ["no case id matches"]),
        ([*base, "--x", "nope", "--y", "age"], ["no column 'nope'"]),
        ([*base, "--x", "sex", "--y", "age"], ["'F' is not a number"]),
        ([*base, "--x", "age", "--y", "age"], ["same column"]),
        (["stats", "correlate", tmp_path / "dup.csv", "--x", "age", "--y", "age2", "--out", out],
         ["more than once"]),
        (["stats", "correlate", tmp_path / "few.csv", "--x", "a", "--y", "b", "--out", out],
         ["too few cases", "at least 8"]),
        (["stats", "correlate", tmp_path / "umol.csv", "--x", "a", "--y", "baseline_egfr",
          "--out", out], ["baseline_egfr", "not possible in mL/min/1.73 m²"]),
        (["stats", "correlate", tmp_path / "missing.csv", "--x", "a", "--y", "b", "--out", out],
         ["no such file"]),
        ([*base, "--x", "interstitial_fibrosis", "--y", "ci_grade", "--bins", "0.1,x"],
         ["--bins"]),
        ([*base, "--x", "interstitial_fibrosis", "--y", "ci_grade", "--bins", "0.1,0.2"],
         ["cut points"]),
        (["stats", "prognosis", clin, "--cohort", coh, "--visits", tmp_path / "bad_dates.csv",
          "--scores", "interstitial_fibrosis", "--out", out], ["not a date"]),
        (["stats", "prognosis", clin, "--cohort", coh, "--visits", tmp_path / "mls.csv",
          "--scores", "interstitial_fibrosis", "--out", out], ["mL/s"]),
        (["stats", "prognosis", clin, "--cohort", coh, "--visits", vis, "--scores",
          "interstitial_fibrosis", "--covariates", "age,age", "--out", out], ["given twice"]),
        (["stats", "logistic", clin, "--outcome", "ci_grade", "--predictors", "age",
          "--out", out], ["must be 0/1"]),
        (["stats", "logistic", clin, "--outcome", "ci_grade", "--predictors", "age",
          "--units", "age=ten", "--out", out], ["--units"]),
    ]  # fmt: skip
    for args, words in cases:
        code, err = shindan(monkeypatch, capsys, *args)
        one_line_error(code, err, *words)
        assert not out.exists(), args  # nothing partial left behind


def test_bad_out(monkeypatch, capsys, example, tmp_path):
    args = ["stats", "correlate", example / "clinical.csv", "--x", "age", "--y", "baseline_egfr"]
    (tmp_path / "file").write_text("x")
    one_line_error(*shindan(monkeypatch, capsys, *args, "--out", tmp_path / "file"), "not a folder")
    one_line_error(*shindan(monkeypatch, capsys, *args, "--out", tmp_path / "file" / "sub"),
                   "is a file")  # fmt: skip
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.docx").write_text("keep")
    one_line_error(*shindan(monkeypatch, capsys, *args, "--out", mine), "did not write")
    assert [p.name for p in mine.iterdir()] == ["notes.docx"]


def test_console_script_help_and_error(tmp_path):
    exe = str(Path(sys.executable).with_name("shindan"))
    h = subprocess.run([exe, "stats", "--help"], capture_output=True, text=True, timeout=120)
    assert h.returncode == 0 and all(c in h.stdout for c in ("correlate", "prognosis", "logistic"))
    p = subprocess.run([exe, "stats", "correlate", str(tmp_path / "none.csv"), "--x", "a", "--y",
                        "b", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr


def test_prognosis_on_mixed_model_slopes(example, tmp_path):
    import pandas as pd

    from shindan.stats.cohort import CohortError
    from shindan.stats.run import run_prognosis

    r = run_prognosis(example / "clinical.csv", example / "visits.csv", ["age"],
                      ["interstitial_fibrosis"], tmp_path / "m", cohort=example / "cohort.csv",
                      repeats=2, slope="mixed")  # fmt: skip
    slopes = pd.read_csv(tmp_path / "m" / "prognosis_slopes.csv")
    used = slopes.dropna(subset=["predicted_with_scores"])
    assert r["target"]["slope"] == "mixed" and r["n"] == len(used)
    assert r["target"]["mean"] == pytest.approx(used["mixed_slope"].mean(), abs=1e-10)
    # shrinkage: BLUP slopes vary less than per-case OLS slopes
    assert used["mixed_slope"].std() < used["slope"].std()
    with pytest.raises(CohortError, match="--slope mixed: the mixed model was not fitted"):
        run_prognosis(example / "clinical.csv", example / "visits.csv", ["age"],
                      ["interstitial_fibrosis"], tmp_path / "m2", cohort=example / "cohort.csv",
                      repeats=2, slope="mixed", min_visits=50)  # fmt: skip
    assert not (tmp_path / "m2").exists()
