"""Saving a model never replaces a folder that holds a user's files."""

import pytest

from shindan.errors import InputError
from tests.helpers import tiny_seg_model


def test_save_model_replaces_only_model_folders(tmp_path):
    out = tmp_path / "m"
    tiny_seg_model(out)
    (out / "training_log.json").write_text("{}")
    tiny_seg_model(out, seed=1)  # retraining into a model folder replaces it, old log too
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json",
        "model.onnx",
        "weights.safetensors",
    ]
    (out / "slides.txt").write_text("my list")
    with pytest.raises(InputError, match="slides.txt"):
        tiny_seg_model(out, seed=2)
    assert (out / "slides.txt").read_text() == "my list"
    (tmp_path / "f").write_text("mine")
    with pytest.raises(InputError, match="not a folder"):
        tiny_seg_model(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
