"""The classify commands through the installed ``shindan`` script: exit codes, one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

SHINDAN = [str(Path(sys.executable).with_name("shindan"))]


def run(*args):
    return subprocess.run(
        SHINDAN + [str(a) for a in args], capture_output=True, text=True, timeout=600
    )


def assert_one_line_error(p):
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr


def test_predict_cli(tiny_model, image_tree, tmp_path):
    out = tmp_path / "p.csv"
    p = run("classify", "predict", tiny_model, image_tree / "ring", "--out", out, "--quiet")
    assert p.returncode == 0, p.stderr
    assert out.read_text().splitlines()[0] == "image,label,p_disc,p_ring,p_square"
    assert len(out.read_text().splitlines()) == 17


@pytest.mark.slow
def test_cli_errors(tiny_model, image_tree, tmp_path):
    out = tmp_path / "p.csv"
    assert_one_line_error(
        run("classify", "predict", tiny_model, tmp_path / "missing.jpg", "--out", out)
    )
    assert_one_line_error(run("classify", "predict", "no-such-model", image_tree, "--out", out))
    assert not out.exists()
    assert_one_line_error(run("classify", "train", tmp_path / "nothing", "--out", tmp_path / "m"))
    assert_one_line_error(
        run("classify", "train", image_tree, "--out", tmp_path / "m", "--tta", "hflip,spin")
    )
    assert_one_line_error(
        run(
            "classify",
            "evaluate",
            tiny_model,
            image_tree,
            "--out",
            tmp_path / "e",
            "--shift",
            "sideways",
        )
    )
    assert_one_line_error(
        run(
            "explain",
            tiny_model,
            image_tree,
            "--out",
            tmp_path / "x",
            "--masks",
            tmp_path / "no-masks",
        )
    )
    assert not (tmp_path / "m").exists() and not (tmp_path / "e").exists()


def test_option_errors_in_process(tiny_model, image_tree, tmp_path):
    """The same checks without a subprocess each: typed errors the CLI turns into exit 2."""
    import pytest

    from shindan.classify.cli import train
    from shindan.errors import InputError, ModelError
    from shindan.explain.run import explain

    with pytest.raises(InputError, match="architecture"):
        train([image_tree], tmp_path / "m", arch="no-such-net")
    with pytest.raises(InputError, match="crop"):
        train([image_tree], tmp_path / "m", crop=0.05)
    with pytest.raises(ModelError):
        explain("no-such-model", [image_tree], tmp_path / "x", progress=False)
    with pytest.raises(InputError, match="method"):
        explain(tiny_model, [image_tree], tmp_path / "x", method="magic", progress=False)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_train_model_version(tiny_model, image_tree, tmp_path):
    """--model-version goes into the card and its command; default 1.0; bad ones refused."""
    import json

    assert json.loads((tiny_model / "card.json").read_text())["version"] == "1.0"
    tiny = ["--arch", "resnet10t", "--width", "8,16,32,64", "--size", "32", "--epochs", "1"]
    tiny += ["--folds", "4", "--val-fraction", "0.25", "--group-pattern", "^[^-]+", "--quiet"]
    p = run(
        "classify", "train", image_tree, "--out", tmp_path / "m", "--model-version", "2.1", *tiny
    )
    assert p.returncode == 0, p.stderr
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["version"] == "2.1"
    assert "--model-version 2.1" in card["training"]["command"]
    for bad in ("two", "2.1-beta", ""):
        out = tmp_path / f"bad{bad}"
        assert_one_line_error(
            run("classify", "train", image_tree, "--out", out, "--model-version", bad, *tiny)
        )
        assert not out.exists()
