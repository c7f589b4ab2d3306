"""Heatmaps, the attention index cam_in_mask, and the correct-vs-wrong summary."""

import csv

import numpy as np
import pytest
from PIL import Image

from shindan.errors import InputError
from shindan.explain.cam import (
    METHODS,
    cam_in_mask,
    colour_bar,
    default_layer,
    make_explainer,
    overlay,
)
from shindan.explain.run import explain
from tests.classify.synth import make_tree, tiny_options


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    make_tree(root / "images", per_class=8, masks=root / "masks")
    return root


@pytest.fixture(scope="module")
def model(tree, tmp_path_factory):
    from shindan.classify.train import train_model

    out = tmp_path_factory.mktemp("m") / "tiny"
    train_model(tree / "images", out, tiny_options(folds=0, epochs=3, shifts=[]))
    return out


def test_cam_in_mask_known_values():
    cam = np.ones((4, 4))
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert cam_in_mask(cam, mask) == pytest.approx(0.5)
    cam2 = np.zeros((4, 4))
    cam2[0, 0], cam2[3, 3] = 3.0, 1.0  # 3 of 4 units of mass inside
    assert cam_in_mask(cam2, mask) == pytest.approx(0.75)
    assert cam_in_mask(cam2, mask.astype(np.uint8) * 7) == pytest.approx(0.75)  # any non-zero
    assert np.isnan(cam_in_mask(np.zeros((4, 4)), mask))
    with pytest.raises(InputError):
        cam_in_mask(cam, np.ones((3, 3)))


def test_explain_outputs_with_masks(model, tree, tmp_path):
    out = tmp_path / "x"
    rows = explain(model, [tree / "images"], out, masks=tree / "masks", progress=False)
    assert len(rows) == 24
    for r in rows:
        stem = r["image"].rsplit("/", 1)[-1][:-4]
        cam_png = out / f"{stem}_cam.png"
        assert cam_png.exists()
        # the input's own grid, then the colour bar
        assert Image.open(cam_png).size == (48 + colour_bar(48).shape[1], 48)
        # NaN: Grad-CAM can be all zero (no positive evidence); written as an empty cell.
        assert np.isnan(r["cam_in_mask"]) or 0.0 <= r["cam_in_mask"] <= 1.0
        assert r["true"] == r["image"].split("/")[-2]
    finite = [r for r in rows if not np.isnan(r["cam_in_mask"])]
    assert finite
    with open(out / "attention.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:3] == ["image", "label", "cam_in_mask"]
    with open(out / "attention_summary.csv", newline="") as f:
        summary = {r["class"]: r for r in csv.DictReader(f)}
    assert set(summary) <= {"disc", "ring", "square", "all"} and "all" in summary
    n = int(summary["all"]["n_correct"]) + int(summary["all"]["n_wrong"])
    assert n == len(finite)
    assert not [f for f in out.iterdir() if f.name.startswith(".")]


def test_explain_without_masks_has_empty_index(model, tree, tmp_path):
    img = next((tree / "images" / "disc").iterdir())
    rows = explain(model, [img], tmp_path / "y", progress=False)
    assert rows[0]["cam_in_mask"] is None
    line = (tmp_path / "y" / "attention.csv").read_text().splitlines()[1]
    assert line.split(",")[2] == ""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam++", "eigencam", "scorecam"])
def test_other_methods(model, tree, method):
    ex = make_explainer(model, method)
    batch = np.stack(
        [
            np.asarray(Image.open(p).resize((32, 32)))
            for p in sorted((tree / "images" / "ring").iterdir())[:2]
        ]
    )
    cams, probs = ex(batch)
    assert cams.shape == (2, 32, 32) and probs.shape == (2, 3)
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_methods_and_layers(model):
    assert {"gradcam", "gradcam++", "scorecam", "eigencam", "ablationcam"} <= set(METHODS)
    with pytest.raises(InputError, match="method"):
        make_explainer(model, "magic")
    with pytest.raises(InputError, match="layer"):
        make_explainer(model, "gradcam", layer="no.such.layer")
    ex = make_explainer(model)
    assert ex.layer == default_layer(ex.net, 32)


@pytest.mark.data
def test_shipped_glomerulosclerosis_on_real_masks(shared_data, tmp_path):
    from shindan.models import list_models

    if "glomerulosclerosis" not in [c.name for c in list_models()]:
        pytest.skip("glomerulosclerosis model not shipped")
    root = shared_data / "kidney" / "glomerulosclerosis-aidpath"
    images = sorted((root / "GS").iterdir())[:2] + sorted((root / "nonGS").iterdir())[:2]
    rows = explain("glomerulosclerosis", images, tmp_path, masks=root / "masks", progress=False)
    assert [r["true"] for r in rows] == ["GS", "GS", "nonGS", "nonGS"]
    assert all(0 <= r["cam_in_mask"] <= 1 for r in rows)


def test_cam_png_has_a_colour_bar():
    image = np.full((120, 100, 3), 200, np.uint8)
    cam = np.zeros((120, 100), np.float32)
    out = overlay(image, cam)
    assert out.shape[0] == 120 and out.shape[1] > 100
    np.testing.assert_array_equal(out[:, :100], overlay(image, cam, bar=False))
    bar = out[:, 100:]
    # jet from red (1, top) to blue (0, bottom) in the bar's strip
    top, bottom = bar[10, 2].astype(int), bar[-10, 2].astype(int)
    assert top[0] > top[2] + 60 and bottom[2] > bottom[0] + 60
