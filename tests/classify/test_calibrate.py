"""Temperature scaling and the positive-class cut-off: maths, card section, and every use of it."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from shindan.classify.calibrate import (
    binary_rates,
    calibrate_model,
    choose_threshold,
    fit_decision,
    fit_temperature,
    nll,
)
from shindan.errors import InputError, ModelError
from shindan.models import load_card
from shindan.models.card import validate_card
from shindan.models.decision import Decision, apply_temperature, softmax
from tests.classify.synth import make_tree, tiny_options


def _miscalibrated(n=2000, scale=6.0, seed=0):
    """Two Gaussian classes (means ±1, sd 1: true log-odds 2x) with logits ``scale``·x."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (1 - 2 * y) + rng.normal(0, 1, n)
    return np.stack([scale * x, np.zeros(n)], 1), y


def test_temperature_fit_lowers_nll_and_finds_the_scale():
    z, y = _miscalibrated(scale=6.0)
    t = fit_temperature(z, y)
    assert 2.5 < t < 3.5  # 6x / 2x
    assert nll(z, y, t) < 0.8 * nll(z, y)
    z2, y2 = _miscalibrated(scale=0.5, seed=1)  # under-confident: T < 1
    assert fit_temperature(z2, y2) < 0.4
    # arg-max is unchanged by a temperature; probabilities move
    p = softmax(z)
    q = apply_temperature(p, t)
    assert np.array_equal(p.argmax(1), q.argmax(1)) and not np.allclose(p, q)
    assert np.allclose(q, softmax(z / t), atol=1e-6)


def test_threshold_rules():
    rng = np.random.default_rng(0)
    pos = rng.random(300) < 0.25
    score = np.clip(np.where(pos, 0.6, 0.3) + rng.normal(0, 0.15, 300), 0, 1)
    for target in (0.8, 0.9, 0.95, 1.0):
        t = choose_threshold(score, pos, "sensitivity", target)
        assert (score[pos] >= t).mean() >= target
        # the highest such cut-off: the next positive score above it breaks the target
        above = np.sort(score[pos][score[pos] >= t])[0]
        assert (score[pos] > above).mean() < target
    t = choose_threshold(score, pos, "youden")
    j = (score[pos] >= t).mean() + (score[~pos] < t).mean()
    for c in np.linspace(0.05, 0.95, 19):
        assert j >= (score[pos] >= c).mean() + (score[~pos] < c).mean() - 1e-9
    with pytest.raises(ValueError, match="positive and negative"):
        choose_threshold(score, np.ones(300, bool))
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(score, pos, "best")
    assert binary_rates(pos, score >= 0) == {"sensitivity": 1.0, "specificity": 0.0}


def test_fit_decision_on_validation_probabilities():
    z, y = _miscalibrated(n=400, scale=6.0)
    d = fit_decision(softmax(z), y, ["GS", "nonGS"], "GS", 0.9)
    assert d["positive"] == "GS" and 2.0 < d["temperature"] < 4.0
    assert d["validation"]["sensitivity"] >= 0.9
    assert d["validation"]["ece"] < d["validation"]["ece_uncalibrated"]
    assert d["validation"]["nll"] < d["validation"]["nll_uncalibrated"]
    youden = fit_decision(softmax(z), y, ["GS", "nonGS"], "GS", 0.0)
    assert "Youden" in youden["rule"] and "target_sensitivity" not in youden
    card = {"classes": ["GS", "nonGS"], "decision": d}
    dec = Decision.from_card(card)
    assert dec.positive == 0 and dec.threshold == d["threshold"]


def _card_data(**decision):
    data = json.loads(json.dumps(load_card("glomerulosclerosis").data))
    data["decision"] = {"temperature": 1.5, "fitted_on": "validation split", **decision}
    return data


def test_schema_decision_section():
    validate_card(_card_data(positive="GS", threshold=0.3, rule="sensitivity >= 0.95"))
    validate_card(_card_data())  # a temperature alone (any number of classes)
    with pytest.raises(ModelError):
        validate_card(_card_data(threshold=0.3))  # a cut-off needs its class and rule
    with pytest.raises(ModelError):
        validate_card(_card_data(positive="GS", threshold=1.2, rule="r"))
    with pytest.raises(ModelError):
        validate_card(_card_data(temperature=0, positive="GS", threshold=0.3, rule="r"))
    with pytest.raises(ModelError, match="must be one of two classes"):
        Decision.from_card(_card_data(positive="fibrotic", threshold=0.3, rule="r"))


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """A two-class tree and a tiny model trained on it (decision fitted by train)."""
    from shindan.classify.train import train_model

    root = tmp_path_factory.mktemp("binary")
    tree = make_tree(root / "images", classes=("disc", "ring"), per_class=16)
    out = root / "model"
    train_model(
        tree,
        out,
        tiny_options(group_pattern=r"^[^-]+", positive="ring", shifts=["jpeg-15"], epochs=10),
    )
    return tree, out


def test_train_writes_decision_and_metrics(binary):
    _, model = binary
    card = load_card(model)  # schema-checked
    d = card.data["decision"]
    assert d["positive"] == "ring" and 0 < d["threshold"] < 1 and d["temperature"] > 0
    assert "validation split" in d["fitted_on"] and "sensitivity" in d["rule"]
    test = card.data["metrics"]["test"]
    assert {"sensitivity", "specificity", "ece", "ece_uncalibrated"} <= set(test["decision"])
    assert {"sensitivity", "specificity", "accuracy_argmax"} <= set(
        card.data["metrics"]["robustness"]["jpeg-15"]
    )


def _with_decision(model, dest, **decision):
    """A copy of ``model`` whose card has ``decision`` (none when empty)."""
    shutil.copytree(model, dest)
    data = json.loads((dest / "card.json").read_text())
    data.pop("decision", None)
    if decision:
        data["decision"] = {"fitted_on": "test", **decision}
    (dest / "card.json").write_text(json.dumps(data))
    return dest


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predict_uses_the_cards_cut_off_and_temperature(binary, tmp_path):
    from shindan.classify.predict import predict

    tree, model = binary
    raw = _with_decision(model, tmp_path / "raw")
    plain = _rows(predict(raw, [tree], tmp_path / "plain.csv", progress=False))
    # without a decision the labels are the arg-max
    assert all(
        r["label"] == ("disc" if float(r["p_disc"]) >= float(r["p_ring"]) else "ring")
        for r in plain
    )
    rare = min(("disc", "ring"), key=lambda c: sum(r["label"] == c for r in plain))
    assert sum(r["label"] != rare for r in plain) >= 16
    low = _with_decision(
        model, tmp_path / "low", temperature=1.0, positive=rare, threshold=1e-4, rule="test"
    )
    rows = _rows(predict(low, [tree], tmp_path / "low.csv", progress=False))
    assert all(r["label"] == rare for r in rows)  # every image is above the tiny cut-off
    hot = _with_decision(model, tmp_path / "hot", temperature=2.0)
    rows = _rows(predict(hot, [tree], tmp_path / "hot.csv", progress=False))
    p_plain = np.array([[float(r["p_disc"]), float(r["p_ring"])] for r in plain])
    p_hot = np.array([[float(r["p_disc"]), float(r["p_ring"])] for r in rows])
    assert np.allclose(p_hot, apply_temperature(p_plain, 2.0), atol=1e-4)
    assert [r["label"] for r in rows] == [r["label"] for r in plain]  # arg-max unchanged


def test_evaluate_reports_the_decision(binary, tmp_path):
    from shindan.classify.evaluate import evaluate

    tree, model = binary
    low = _with_decision(
        model, tmp_path / "low", temperature=1.0, positive="ring", threshold=1e-4, rule="test"
    )
    r = evaluate(low, tree, tmp_path / "ev", split="all", n_boot=0, progress=False)
    assert r["decision"]["sensitivity"] == 1.0 and r["decision"]["specificity"] == 0.0
    assert r["accuracy"] == 0.5 and r["decision"]["accuracy_argmax"] > 0.5
    rows = _rows(tmp_path / "ev" / "predictions.csv")
    assert {r["label"] for r in rows} == {"ring"}
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "Labels by the model card's cut-off: ring" in html and "sensitivity 1.000" in html


def test_calibrate_model_folder(binary, tmp_path):
    tree, model = binary
    folder = shutil.copytree(model, tmp_path / "m")
    before = (folder / "weights.safetensors").read_bytes()
    d = calibrate_model(folder, tree, sensitivity=1.0, progress=False)
    card = load_card(folder)
    assert card.data["decision"] == json.loads(json.dumps(d))
    assert d["validation"]["sensitivity"] == 1.0 and d["positive"] == "ring"
    assert set(card.data["metrics"]["decision"]["robustness"]) == {"jpeg-15"}
    assert (folder / "weights.safetensors").read_bytes() == before
    other = make_tree(tmp_path / "other", classes=("disc", "ring"), per_class=5)
    with pytest.raises(InputError, match="not the data"):
        calibrate_model(folder, other, progress=False)
    with pytest.raises(InputError, match="not a model folder"):
        calibrate_model(tmp_path, tree, progress=False)


@pytest.mark.data
def test_shipped_glomerulosclerosis_uses_its_cut_off(shared_data):
    """The shipped card's cut-off labels the held-out fold as its card records."""
    from shindan.classify.evaluate import held_out, labelled_table
    from shindan.classify.predict import predict_paths
    from shindan.engine import load_predictor

    card = load_card("glomerulosclerosis")
    if "decision" not in card.data:
        pytest.skip("shipped glomerulosclerosis card has no decision")
    split = card.data["training"]["split"]
    table = labelled_table(
        shared_data / "kidney/glomerulosclerosis-aidpath", card, split["group_pattern"]
    )
    test = held_out(table, card)
    predictor = load_predictor(card)
    probs = predict_paths(predictor, test.paths, progress=False)
    labels = predictor.labels(probs)
    gs = test.labels == card.classes.index("GS")
    recorded = card.data["metrics"]["decision"]["test"]
    assert (labels[gs] == 0).mean() == pytest.approx(recorded["sensitivity"], abs=0.05)
    assert (labels == test.labels).mean() == pytest.approx(recorded["accuracy"], abs=0.02)
    assert (labels != probs.argmax(1)).any()  # the cut-off, not the arg-max, labels them


def test_kidney_glomerulus_table_uses_the_cut_off(binary, tmp_path):
    """``sclerosed`` follows the card's cut-off on p(GS), not 0.5."""
    from shindan.engine import load_predictor
    from shindan.io.slide import ImageSlide
    from shindan.kidney.glomeruli import Glomerulus, classify_glomeruli
    from tests.classify.synth import draw

    _, model = binary
    img = np.full((120, 120, 3), 235, np.uint8)
    img[30:78, 30:78] = draw("disc", np.random.default_rng(3))[0]
    slide = ImageSlide.from_array(img, mpp=1.0)
    glom = [Glomerulus(1, 2000.0, 54.0, 54.0, 48.0, (30, 30, 48, 48))]

    def run(name, **decision):
        folder = _with_decision(model, tmp_path / name, temperature=50.0, **decision)
        data = json.loads((folder / "card.json").read_text())
        data["classes"] = ["GS", "nonGS"]  # the glomerulus table asks for a GS class
        if "positive" in decision:
            data["decision"]["positive"] = "GS"
        (folder / "card.json").write_text(json.dumps(data))
        return classify_glomeruli(slide, glom, load_predictor(str(folder)))[0]

    p = run("soft").p_sclerosed  # temperature 50: p(GS) near 0.5, no cut-off
    below = run("below", positive="GS", threshold=round(p - 0.002, 4), rule="test")
    above = run("above", positive="GS", threshold=round(p + 0.002, 4), rule="test")
    assert below.sclerosed is True and above.sclerosed is False
    assert below.p_sclerosed == above.p_sclerosed == p
    assert glom[0].sclerosed is None  # input records untouched
