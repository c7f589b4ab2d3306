"""Card-driven input preparation: cell-centred crop and colour normalisation, the same in
training, prediction (ONNX and torch), evaluation and explanations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from shindan.classify.preprocess import (
    cell_box,
    eval_transform,
    model_box,
    normalise_colour,
    prepare,
    train_transform,
)
from shindan.engine.augment import resize
from shindan.errors import ModelError
from tests.classify.synth import make_tree, tiny_options


def _cell(side: int, radius: float, centre=(0.5, 0.5), lobes: bool = False) -> np.ndarray:
    """A peach smear with a purple nucleus (optionally two lobes) and a pale cytoplasm."""
    yy, xx = np.mgrid[:side, :side]
    cy, cx = centre[0] * side, centre[1] * side
    img = np.empty((side, side, 3), np.float32)
    img[:] = (245, 225, 205)
    cyto = np.hypot(yy - cy, xx - cx) < 1.6 * radius
    img[cyto] = (225, 200, 210)
    if lobes:
        nuc = (np.hypot(yy - cy, xx - cx + 0.5 * radius) < 0.6 * radius) | (
            np.hypot(yy - cy, xx - cx - 0.5 * radius) < 0.6 * radius
        )
    else:
        nuc = np.hypot(yy - cy, xx - cx) < radius
    img[nuc] = (95, 55, 150)
    return img.astype(np.uint8)


def test_cell_crop_sees_the_same_cell_whatever_the_framing():
    spec = {"size": 64, "cell_crop": 2.5}
    near = prepare(_cell(360, 40), spec)  # CellaVision-like: small cell in a big frame
    tight = prepare(_cell(150, 40), spec)  # a tight crop of the same cell
    zoomed = prepare(_cell(300, 80), spec)  # twice the magnification
    off = prepare(_cell(360, 40, centre=(0.4, 0.6)), spec)  # not centred
    for other in (tight, zoomed, off):
        diff = np.abs(near.astype(int) - other.astype(int))
        assert diff.mean() < 6, diff.mean()


def test_cell_box_spans_a_lobed_nucleus_and_reaches_past_edges():
    r0, r1, c0, c1 = cell_box(_cell(200, 30, lobes=True), 2.0)
    # both lobes: 2 x (0.5 + 0.6) x 30 = 66 px wide nucleus -> about 132 px box
    assert 115 <= c1 - c0 <= 150 and r1 - r0 == c1 - c0
    r0, r1, c0, c1 = cell_box(_cell(100, 40), 2.0)  # nucleus 80 px in a 100 px crop
    assert r0 < 0 and r1 > 100


def test_no_nucleus_falls_back_to_the_central_square():
    plain = np.full((80, 120, 3), 230, np.uint8)
    assert cell_box(plain, 2.0) == (0, 80, 20, 100)


def test_stretch_removes_lamp_colour_and_stain_strength():
    image = _cell(128, 20)
    warm = np.clip(image * np.array([1.05, 0.95, 0.75]), 0, 255).astype(np.uint8)
    pale = (255 - 0.6 * (255 - image.astype(np.float32))).astype(np.uint8)
    for method in ("stretch", "grey"):
        a = normalise_colour(image, method).astype(int)
        for other in (warm, pale):
            assert np.abs(a - normalise_colour(other, method).astype(int)).mean() < 4
    g = normalise_colour(image, "grey")
    assert np.array_equal(g[..., 0], g[..., 2])


def test_prepare_does_not_change_its_input_and_checks_the_card():
    image = _cell(100, 15)
    before = image.copy()
    prepare(image, {"size": 32, "cell_crop": 2.0, "colour": "stretch"})
    assert np.array_equal(image, before)
    with pytest.raises(ModelError, match="unknown colour normalisation 'sepia'"):
        prepare(image, {"size": 32, "colour": "sepia"})
    # an old card (no cell_crop, no colour) is the plain central crop resized
    assert np.array_equal(prepare(image, {"size": 32, "crop": 0.7}), resize(image, 32, 0.7))


def test_train_and_predict_prepare_identically():
    spec = {"size": 48, "crop": 0.9, "cell_crop": 2.2, "colour": "stretch"}
    image = _cell(220, 25, centre=(0.45, 0.55), lobes=True)
    rng = np.random.default_rng(0)

    def plain_resize(im, rng):  # an augmenter that draws nothing
        return resize(im, spec["size"], spec["crop"])

    trained_on = train_transform(spec, plain_resize)(image, rng)
    validated_on = eval_transform(spec)(image, rng)
    assert np.array_equal(trained_on, prepare(image, spec))
    assert np.array_equal(validated_on, prepare(image, spec))
    r0, r1, c0, c1 = model_box(image, spec)
    assert r1 - r0 == c1 - c0 and r0 < 0.45 * 220 < r1


@pytest.mark.slow
def test_trained_card_drives_prediction_on_both_backends(tmp_path):
    """A model trained with --cell-crop/--colour-norm stores them; predict (ONNX and torch)
    gives the network's output on exactly prepare(image, card input)."""
    import torch

    from shindan.classify.predict import predict
    from shindan.classify.train import train_model
    from shindan.models import load_card
    from shindan.models.network import load_network

    tree = make_tree(tmp_path / "images", per_class=8)
    out = tmp_path / "model"
    train_model(
        tree,
        out,
        tiny_options(folds=0, epochs=1, shifts=[], cell_crop=2.0, colour_norm="stretch", blur=2.0),
    )
    card = json.loads((out / "card.json").read_text())
    assert card["input"]["cell_crop"] == 2.0 and card["input"]["colour"] == "stretch"
    assert card["training"]["augmentation"]["blur_sigma"] == 2.0
    files = sorted(tree.rglob("*.png"))[:5]
    net = load_network(load_card(out))
    x = np.stack([prepare(np.asarray(Image.open(f).convert("RGB")), card["input"]) for f in files])
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(card["input"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["input"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(net((t - mean) / std), 1).numpy()
    for backend in ("onnx", "torch"):
        csv = tmp_path / f"p-{backend}.csv"
        predict(out, files, csv, backend=backend, progress=False)
        rows = [r.split(",") for r in csv.read_text().splitlines()[1:]]
        probs = np.array([[float(v) for v in r[2:]] for r in rows])
        np.testing.assert_allclose(probs, expected, atol=2e-3)
