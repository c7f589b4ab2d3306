"""Training: the shared loop is reproducible, the train command writes a complete model card."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from shindan.engine import load_predictor
from shindan.engine.train_classifier import _class_weights, dataset_labels, fit
from shindan.models import load_card

CARD = {
    "name": "t",
    "version": "0",
    "task": "classification",
    "architecture": {
        "library": "timm",
        "name": "resnet10t",
        "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8},
    },
    "classes": ["a", "b"],
    "input": {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    "files": {"weights": "w"},
    "training": {"data": "x", "licence": "x", "command": "x"},
}


def _toy(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.arange(n) % 2
    x[y == 1, 0] += 1.5  # class b is redder
    return TensorDataset(x, y)


def test_fit_learns_and_is_reproducible():
    ds = _toy()
    net1, h1 = fit(
        CARD, ds, ds, epochs=4, batch_size=8, lr=3e-3, progress=False, seed=7, num_threads=1
    )
    net2, h2 = fit(
        CARD, ds, ds, epochs=4, batch_size=8, lr=3e-3, progress=False, seed=7, num_threads=1
    )
    assert h1["train_loss"] == h2["train_loss"]
    for a, b in zip(net1.state_dict().values(), net2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert max(h1["val_accuracy"]) >= 0.9
    assert h1["best_score"] == max(h1["val_macro_f1"])
    assert not net1.training
    _, h3 = fit(CARD, ds, ds, epochs=2, batch_size=8, progress=False, seed=8, num_threads=1)
    assert h3["train_loss"] != h1["train_loss"][:2]


def test_early_stopping_restores_best():
    train = _toy(16)
    x, y = train.tensors
    # Every validation image twice, with both labels: the loss is lowest at p = 0.5, so it can
    # only get worse as the network learns the training set; training stops early.
    val = TensorDataset(torch.cat([x, x]), torch.cat([y, 1 - y]))
    net, h = fit(
        CARD,
        train,
        val,
        epochs=12,
        batch_size=8,
        lr=3e-3,
        patience=2,
        progress=False,
        monitor="loss",
        num_threads=1,
    )
    assert h["stopped_early"] and h["epochs_run"] < 12
    assert h["best_score"] == min(h["val_loss"])
    assert h["epochs_run"] == h["best_epoch"] + 2


def test_class_weights_balance_classes():
    w = _class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[0] * 3 == pytest.approx(w[1] * 1) and w[2] == 0
    assert dataset_labels(_toy(6)).tolist() == [0, 1, 0, 1, 0, 1]


def test_train_model_card(tiny_model):
    card = load_card(tiny_model)
    d = card.data
    assert card.classes == ["disc", "ring", "square"]
    assert card.tta == ("hflip",)
    assert d["training"]["command"].startswith("shindan classify train")
    split = d["training"]["split"]
    assert split["folds"] == 4 and split["group_pattern"] == "^[^-]+"
    assert split["train"] + split["val"] + split["test"] == 48
    test = d["metrics"]["test"]
    assert test["n"] == split["test"]
    assert {"accuracy", "macro_f1", "per_class", "confusion", "calibration"} <= set(test)
    assert set(d["metrics"]["robustness"]) == {"jpeg-15", "zoom-0.65"}
    assert "held-out" in d["headline"] and d["limits"]
    assert (tiny_model / "model.onnx").exists() and (tiny_model / "weights.safetensors").exists()
    json.dumps(d)  # JSON-clean


def test_saved_model_runs_on_both_backends(tiny_model):
    batch = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    p_onnx = load_predictor(str(tiny_model), backend="onnx").predict(batch)
    p_torch = load_predictor(str(tiny_model), backend="torch").predict(batch)
    assert p_onnx.shape == (3, 3)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)
    np.testing.assert_allclose(p_onnx.sum(1), 1, atol=1e-5)
