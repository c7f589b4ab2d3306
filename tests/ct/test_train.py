"""End to end: train a tiny CT classifier on phantom studies, evaluate it, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from shindan import cli
from shindan.ct.train import logistic_models

SHINDAN = str(Path(sys.executable).with_name("shindan"))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``shindan ARGS`` in this process (the console-script entry point): exit code, out, err."""
    monkeypatch.setattr(sys, "argv", ["shindan", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert pd.Series(lines).str.contains(pattern, regex=True).all(), lines[0]


@pytest.mark.slow
def test_train_evaluate_predict(train_cohort, test_cohort, tmp_path, monkeypatch, capsys):
    threads = torch.get_num_threads()
    model = tmp_path / "model"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "ct",
        "train",
        str(train_cohort),
        "--out",
        str(model),
        "--arch",
        "test_resnet",
        "--size",
        "32",
        "--epochs",
        "12",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--val-fraction",
        "0.25",
        "--synthetic",
        "--threads",
        "1",
        "--quiet",
    )
    assert code == 0, err
    assert torch.get_num_threads() == threads  # restored after training on one thread
    card = json.loads((model / "card.json").read_text())
    inp = card["input"]
    assert inp["channels"] == 4 and len(inp["mean"]) == 4 and len(inp["std"]) == 4
    assert inp["phases"] == ["non-contrast", "corticomedullary", "nephrographic", "excretory"]
    assert inp["window"] == {"name": "kidney", "width": 500.0, "level": 100.0}
    assert card["classes"] == ["benign", "malignant"] and card["training"]["synthetic"]
    assert card["training"]["train_cases"] + card["training"]["validation_cases"] == 20
    assert (model / "weights.safetensors").exists() and (model / "model.onnx").exists()

    out = tmp_path / "eval"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "ct",
        "evaluate",
        str(model),
        str(test_cohort),
        "--out",
        str(out),
        "--n-boot",
        "200",
        "--quiet",
    )
    assert code == 0, err
    res = json.loads((out / "evaluation.json").read_text())
    m = res["metrics"]
    # Unseen phantom patients: the enhancement pattern is learnt.
    assert m["n"] == 16 and m["auc"] >= 0.8, m
    assert m["auc_ci95"][0] <= m["auc"] <= m["auc_ci95"][1]
    assert m["youden"]["accuracy"] >= 0.75
    assert res["report"]["confusion"] and set(res["logistic"]) >= {"combined", "clinical"}
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 16 and set(pred.label) == {"benign", "malignant"}
    np.testing.assert_allclose(pred.p_benign + pred.p_malignant, 1.0, atol=1e-5)

    csv = tmp_path / "pred.csv"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "ct",
        "predict",
        str(model),
        str(test_cohort),
        "--out",
        str(csv),
        "--quiet",
    )
    assert code == 0, err
    again = pd.read_csv(csv)
    np.testing.assert_allclose(again.p_malignant, pred.p_malignant, atol=1e-6)
    # a rerun replaces the CSV it wrote (a user's CSV is refused: tests/test_outputs.py)
    code, _, err = run_cli(monkeypatch, capsys, "ct", "predict", str(model), str(test_cohort),
                           "--out", str(csv), "--quiet")  # fmt: skip
    assert code == 0, err

    # its own training cases: left out by default, scored with a warning on request
    t = card["training"]
    assert len(t["case_fingerprints"]["train"]) == t["train_cases"]
    own = tmp_path / "own"
    args = ["ct", "evaluate", str(model), str(train_cohort), "--n-boot", "0", "--quiet"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", str(own))
    assert code == 0, err
    assert f"leaving out the {t['train_cases']} of 20 cases that trained" in err
    res = json.loads((own / "evaluation.json").read_text())
    assert res["metrics"]["n"] == t["validation_cases"] and res["split"] == "held-out"
    assert res["training_cases"] == {"found": t["train_cases"], "left_out": True}
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", str(own), "--split", "all")
    assert code == 0, err
    assert f"warning: {t['train_cases']} of the 20 cases trained" in err
    assert json.loads((own / "evaluation.json").read_text())["metrics"]["n"] == 20
    # unseen cases are not mistaken for training cases
    res = json.loads((out / "evaluation.json").read_text())
    assert res["training_cases"] == {"found": 0, "left_out": True}


def test_logistic_models_of_scores():
    rng = np.random.default_rng(3)
    n = 300
    y = rng.random(n) < 0.4
    pred = pd.DataFrame(
        {
            "label": np.where(y, "malignant", "benign"),
            "p_malignant": np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1),
            "age": rng.normal(60, 10, n).round(),
            "sex": rng.choice(["M", "F"], n),
            "size_mm": rng.gamma(4, 8, n).round(1),
        }
    )
    res = logistic_models(pred)
    comb = res["combined"]
    assert [t["name"] for t in comb["terms"]] == ["const", "cnn_score", "age", "sex[M]", "size_mm"]
    score = comb["terms"][1]
    assert score["unit"] == 0.1 and score["odds_ratio"] > 1 and score["p"] < 1e-3
    assert comb["auc"] > res["clinical"]["auc"]
    # Without covariates in the CSV: said so, and the clinical model is not fitted.
    res = logistic_models(pred.assign(age=None, sex=None, size_mm=None))
    assert res["left_out"] == ["age", "sex", "size_mm"] and "error" in res["clinical"]


def test_cli_errors(tmp_path, monkeypatch, capsys, shared_data):
    code, _, err = run_cli(monkeypatch, capsys, "ct", "info", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "no such file or folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "ct", "info", str(tmp_path / "empty"))
    assert_one_line_error(code, err, "no DICOM images found")
    # A real MR study where CT is required.
    cases = tmp_path / "cases.csv"
    mr = shared_data / "dicom" / "gsps-liver-mr"
    cases.write_text(
        "case,study,x_min,y_min,z_min,x_max,y_max,z_max,label\n"
        f"liver,{mr},0,0,0,10,10,10,benign\nb,{mr},0,0,0,10,10,10,malignant\n"
    )
    model = tmp_path / "m"
    code, _, err = run_cli(
        monkeypatch, capsys, "ct", "train", str(cases), "--out", str(model), "--quiet"
    )
    assert_one_line_error(code, err, r"case liver: .*no CT series \(found MR: 1 series\)")
    assert not model.exists()  # nothing half-written
    code, _, err = run_cli(
        monkeypatch, capsys, "ct", "train", str(cases), "--out", str(model), "--window", "purple"
    )
    assert_one_line_error(code, err, "unknown window 'purple'")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "ct",
        "evaluate",
        str(tmp_path / "no-model"),
        str(cases),
        "--out",
        str(tmp_path / "e"),
    )
    assert_one_line_error(code, err, "no model card|unknown model")
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_console_script_one_line_error(tmp_path):
    p = subprocess.run(
        [SHINDAN, "ct", "info", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().startswith("error: ") and len(p.stderr.strip().splitlines()) == 1
    assert "no DICOM images found" in p.stderr
