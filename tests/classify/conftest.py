"""Fixtures: a synthetic three-class image tree and a tiny model trained on it once."""

from __future__ import annotations

import pytest

from tests.classify.synth import make_tree, tiny_options


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    return make_tree(root / "images", masks=root / "masks")


@pytest.fixture(scope="session")
def tiny_model(image_tree, tmp_path_factory):
    """A trained model folder (card.json, weights, ONNX) from ``classify.train``."""
    from shindan.classify.train import train_model

    out = tmp_path_factory.mktemp("model") / "tiny"
    train_model(image_tree, out, tiny_options(group_pattern=r"^[^-]+", tta=["hflip"]))
    return out
