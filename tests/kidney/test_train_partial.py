"""Training on annotations of one class (e.g. glomeruli only) and fine-tuned model cards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.engine.train_segmenter import TrainConfig
from shindan.errors import InputError
from shindan.io.annotations import IGNORE
from shindan.kidney.labels import GLOMERULUS, other_code
from shindan.kidney.training.run import train_compartments
from shindan.kidney.training.user_annotations import CLASS_NAMES, load_annotated

SQUARE = [[40, 40], [120, 40], [120, 120], [40, 120], [40, 40]]


def _glomeruli_only(folder: Path, n: int = 3) -> None:
    """``n`` images whose only annotation is one glomerulus (labelme JSON)."""
    for i in range(n):
        rng = np.random.default_rng(i)
        img = np.full((200, 200, 3), (235, 200, 220), np.uint8)
        img[40:120, 40:120] = (150, 60, 140)
        img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"g{i}.png")
        shape = {"label": "glomerulus", "points": SQUARE[:-1], "shape_type": "polygon"}
        (folder / f"g{i}.json").write_text(
            json.dumps({"shapes": [shape], "imageHeight": 200, "imageWidth": 200})
        )


def _train(tmp_path: Path, out: str, **kwargs) -> dict:
    data = tmp_path / "data"
    return train_compartments(
        tmp_path / out,
        inputs=[data],
        annotations=[data],
        mpp=1.0,
        target_mpp=2.0,
        decoder_channels=(32, 16, 16, 8, 8),
        config=TrainConfig(steps=2, batch_size=2, eval_every=2, warmup=1),
        tile=64,
        log=lambda s: None,
        progress=False,
        **kwargs,
    )


def test_unannotated_other_labels_the_rest_as_none_of_the_annotated_classes(tmp_path):
    _glomeruli_only(tmp_path)
    args = (tmp_path / "g0.png", tmp_path / "g0.json", 2.0, 1.0, CLASS_NAMES)
    ignored = load_annotated(*args).label
    other = load_annotated(*args, unannotated="other").label
    assert set(np.unique(ignored)) == {GLOMERULUS, IGNORE}
    assert set(np.unique(other)) == {GLOMERULUS, other_code([GLOMERULUS])}
    assert ((ignored == GLOMERULUS) == (other == GLOMERULUS)).all()
    with pytest.raises(InputError, match="--unannotated must be ignore or other"):
        load_annotated(*args, unannotated="others")


@pytest.mark.slow
def test_one_class_needs_unannotated_other_and_fine_tunes_say_so(tmp_path):
    (tmp_path / "data").mkdir()
    _glomeruli_only(tmp_path / "data")
    with pytest.raises(InputError, match="only glomerulus is annotated"):
        _train(tmp_path, "m0")
    assert not (tmp_path / "m0").exists()
    res = _train(tmp_path, "m1", unannotated="other", command="train m1")
    assert res["train"]["step"] == 2
    base = json.loads((tmp_path / "m1" / "card.json").read_text())
    assert base["version"] == "1.0.0" and "init" not in base["training"]
    assert base["summary"].startswith("Kidney compartment U-Net trained from scratch on 3 ")
    assert "held-out part of these annotations" in base["limits"][0]
    # validation now sees glomerulus called on "not glomerulus" pixels: Dice is not a free 1.0
    assert base["metrics"]["validation"]["mean_dice"] < 1.0
    _train(tmp_path, "m2", unannotated="other", init=str(tmp_path / "m1"), command="train m2")
    card = json.loads((tmp_path / "m2" / "card.json").read_text())
    assert card["version"] == "1.0.0+ft"
    assert card["training"]["init"] == {"name": "kidney-compartments", "version": "1.0.0"}
    assert card["training"]["command"] == "train m1 && train m2"
    assert card["summary"].startswith("kidney-compartments 1.0.0 fine-tuned on 3 annotated")


def test_a_validation_part_without_annotations_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _glomeruli_only(data, n=1)  # one image: the right fifth of its annotated box validates
    shapes = [
        {"label": "glomerulus", "points": SQUARE[:-1], "shape_type": "polygon"},
        {"label": "tubule", "points": [[40, 130], [120, 130], [120, 150]], "shape_type": "polygon"},
    ]  # both far left of the box's right fifth, which holds only the 50 µm margin
    (data / "g0.json").write_text(json.dumps({"shapes": shapes}))
    with pytest.raises(InputError, match="nothing annotated in the validation part"):
        _train(tmp_path, "m")
    assert not (tmp_path / "m").exists()


def test_card_states_the_given_stains_and_the_data_scale(tmp_path):
    (tmp_path / "data").mkdir()
    _glomeruli_only(tmp_path / "data")
    _train(tmp_path, "m", unannotated="other", stains=["PAS"], tissue="kidney biopsy")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["domain"] == {"stains": ["PAS"], "mpp": 1.0, "tissue": "kidney biopsy"}
    assert card["training"]["scales"][0]["mpp"] == 1.0
    assert card["training"]["scales"][0]["source"] == "given with --mpp"
