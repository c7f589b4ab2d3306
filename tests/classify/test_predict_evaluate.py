"""predict CSV format, evaluate outputs (JSON, CSV, offline HTML report)."""

import csv
import json
import re

import numpy as np
import pytest

from shindan.classify.evaluate import evaluate
from shindan.classify.predict import predict
from shindan.errors import InputError, ModelError


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_csv(tiny_model, image_tree, tmp_path):
    one = next((image_tree / "ring").iterdir())
    out = predict(tiny_model, [image_tree / "disc", one], tmp_path / "p.csv", progress=False)
    rows = _rows(out)
    assert list(rows[0]) == ["image", "label", "p_disc", "p_ring", "p_square"]
    assert len(rows) == 17 and rows[-1]["image"] == str(one)
    for r in rows:
        p = np.array([float(r[k]) for k in ("p_disc", "p_ring", "p_square")])
        assert p.sum() == pytest.approx(1, abs=1e-4)
        assert r["label"] == ["disc", "ring", "square"][int(p.argmax())]
    torch_out = predict(
        tiny_model, [image_tree / "disc"], tmp_path / "t.csv", backend="torch", progress=False
    )
    a = [float(r["p_disc"]) for r in _rows(torch_out)]
    b = [float(r["p_disc"]) for r in rows[:16]]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_predict_errors_leave_nothing(tiny_model, tmp_path):
    with pytest.raises(InputError):
        predict(tiny_model, [tmp_path / "missing.png"], tmp_path / "p.csv", progress=False)
    with pytest.raises(ModelError):
        predict("no-such-model", [tmp_path], tmp_path / "p.csv", progress=False)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError):
        predict(tiny_model, [tmp_path / "broken.png"], tmp_path / "p.csv", progress=False)
    assert not (tmp_path / "p.csv").exists()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".p.csv")]


def test_evaluate_outputs(tiny_model, image_tree, tmp_path):
    out = tmp_path / "eval"
    r = evaluate(tiny_model, image_tree, out, split="all", n_boot=50, progress=False, log=print)
    assert r["n"] == 48
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] == pytest.approx(r["accuracy"])
    assert np.array(m["confusion"]).sum() == 48
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 48 and rows[0]["true"] in ("disc", "ring", "square")
    acc = np.mean([row["true"] == row["label"] for row in rows])
    assert acc == pytest.approx(m["accuracy"])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=\"https?://", html)  # offline: no external assets


def test_evaluate_held_out_split_and_shift(tiny_model, image_tree, tmp_path):
    from shindan.models import load_card

    card = load_card(tiny_model)
    r = evaluate(tiny_model, image_tree, tmp_path / "e", split="test", n_boot=0, progress=False)
    assert r["n"] == card.data["training"]["split"]["test"]
    # The torch-evaluated card metrics and this ONNX run agree on the same held-out images.
    assert r["accuracy"] == pytest.approx(card.data["metrics"]["test"]["accuracy"], abs=0.03)
    s = evaluate(
        tiny_model,
        image_tree,
        tmp_path / "s",
        split="test",
        shift="jpeg-15",
        n_boot=0,
        progress=False,
    )
    assert s["shift"] == "jpeg-15" and s["n"] == r["n"]
    with pytest.raises(InputError, match="split"):
        evaluate(tiny_model, image_tree, tmp_path / "x", split="nope", progress=False)


def test_evaluate_defaults_to_held_out_on_training_data(tiny_model, image_tree, tmp_path):
    from shindan.models import load_card
    from tests.classify.synth import make_tree

    held_out = load_card(tiny_model).data["training"]["split"]["test"]
    said: list[str] = []
    r = evaluate(tiny_model, image_tree, tmp_path / "a", n_boot=0, progress=False, log=said.append)
    assert r["n"] == held_out < 48 and r["split"] == "test" and r["training_data"]
    assert len(said) == 1 and said[0].startswith("note: ") and "held-out fold" in said[0]
    said.clear()  # asked for every image: scored, with a warning
    r = evaluate(tiny_model, image_tree, tmp_path / "b", split="all", n_boot=0, progress=False,
                 log=said.append)  # fmt: skip
    assert r["n"] == 48 and len(said) == 1 and said[0].startswith("warning: ")
    said.clear()  # other images of the same classes: all of them, no warning
    other = make_tree(tmp_path / "other", per_class=5, seed=3)
    r = evaluate(tiny_model, other, tmp_path / "c", n_boot=0, progress=False, log=said.append)
    assert r["n"] == 15 and r["split"] == "all" and not r["training_data"] and not said


def test_evaluate_rejects_foreign_labels(tiny_model, tmp_path):
    from tests.classify.synth import make_tree

    make_tree(tmp_path / "other", per_class=2, classes=("cat", "dog"))
    with pytest.raises(InputError, match="class"):
        evaluate(tiny_model, tmp_path / "other", tmp_path / "e", progress=False)
    assert not (tmp_path / "e").exists()
