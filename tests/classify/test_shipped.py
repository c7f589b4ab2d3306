"""The shipped classifiers: complete cards, small files, and their figures on held-out data."""

import numpy as np
import pytest

from shindan.classify.evaluate import held_out, labelled_table
from shindan.classify.predict import predict_paths
from shindan.engine import load_predictor
from shindan.models import list_models, load_card
from shindan.stats import classification_report

SHIPPED = {"wbc": "blood/pbc", "glomerulosclerosis": "kidney/glomerulosclerosis-aidpath"}


def _card(name):
    if name not in [c.name for c in list_models()]:
        pytest.skip(f"{name} not shipped")
    return load_card(name)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_card_complete(name):
    card = _card(name)
    d = card.data
    assert d["training"]["command"].startswith("shindan classify train ")
    assert f"--out src/shindan/models/zoo/{name}" in d["training"]["command"]
    assert d["headline"] and d["limits"] and d["training"]["licence"]
    assert {"test", "robustness", "robustness_method"} <= set(d["metrics"])
    # each model stays under 25 MB in the repository (weights, ONNX and card together)
    assert sum(f.stat().st_size for f in card.directory.iterdir()) < 25e6
    if name == "glomerulosclerosis":
        assert "non-commercial" in d["training"]["licence"].lower()
        assert card.classes == ["GS", "nonGS"]
    else:
        assert card.classes == [
            "basophil",
            "eosinophil",
            "erythroblast",
            "ig",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ]


@pytest.mark.data
def test_wbc_on_held_out_sample(shared_data):
    card = _card("wbc")
    test = held_out(labelled_table(shared_data / SHIPPED["wbc"], card), card)
    sites = card.data["metrics"].get("sites")  # trained on several sites: PBC's own part
    n = sites["test"]["sites"]["pbc"]["n"] if sites else card.data["training"]["split"]["test"]
    assert len(test) == n
    # Four held-out images per class: quick, and any broken preprocessing shows at once.
    pick = np.concatenate([np.flatnonzero(test.labels == k)[:4] for k in range(8)])
    sub = test.subset(pick)
    probs = predict_paths(load_predictor(card), sub.paths, progress=False)
    assert (probs.argmax(1) == sub.labels).mean() >= 0.8


@pytest.mark.data
def test_wbc_on_the_second_sites_held_out_part(shared_data):
    """The BCCD crops held out of training (another camera and stain) score as the card says."""
    card = _card("wbc")
    sites = card.data["metrics"].get("sites")
    if not sites or "bccd" not in sites["test"]["sites"]:
        pytest.skip("wbc was not trained on BCCD")
    test = held_out(labelled_table(shared_data / "blood/bccd", card), card)
    recorded = sites["test"]["sites"]["bccd"]
    assert len(test) == recorded["n"]
    probs = predict_paths(load_predictor(card), test.paths, progress=False)
    accuracy = (probs.argmax(1) == test.labels).mean()
    assert accuracy == pytest.approx(recorded["accuracy"], abs=0.03)  # ONNX vs torch: 2 crops


@pytest.mark.data
def test_glomerulosclerosis_auc_on_unseen_slides(shared_data):
    card = _card("glomerulosclerosis")
    table = labelled_table(
        shared_data / SHIPPED["glomerulosclerosis"],
        card,
        card.data["training"]["split"]["group_pattern"],
    )
    test = held_out(table, card)
    train_slides = set(table.groups.astype(str)) - set(test.groups.astype(str))
    assert not set(test.groups.astype(str)) & train_slides
    probs = predict_paths(load_predictor(card), test.paths, progress=False)
    r = classification_report(test.labels, probs, card.classes, n_boot=0)
    assert r["per_class"]["GS"]["auc"] >= 0.98
    assert r["per_class"]["GS"]["auc"] == pytest.approx(
        card.data["metrics"]["test"]["per_class"]["GS"]["auc"], abs=0.005
    )
