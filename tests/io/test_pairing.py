"""Pairing training images with annotation files (shared by ``kidney train`` and ``nuclei
train``), and the kidney class names of excluded regions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.errors import InputError
from shindan.io.annotations import IGNORE
from shindan.io.inputs import IMAGE_SUFFIXES, pair_annotations


def _touch_image(path: Path, size: int = 16) -> Path:
    Image.fromarray(np.full((size, size, 3), 200, np.uint8)).save(path)
    return path


def _touch_mask(path: Path, size: int = 16) -> Path:
    Image.fromarray(np.zeros((size, size), np.uint8)).save(path)
    return path


def _touch_json(path: Path) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    return path


def _names(pairs: list[tuple[Path, Path]]) -> list[tuple[str, str]]:
    return [(i.name, a.name) for i, a in pairs]


def test_mask_next_to_its_image_is_its_annotation_not_an_image(tmp_path: Path) -> None:
    """A folder of c.png and c_mask.png given as inputs and annotations: c.png is not its own
    annotation, c_mask.png is not an image (both commands)."""
    _touch_image(tmp_path / "c.png")
    _touch_mask(tmp_path / "c_mask.png")
    _touch_image(tmp_path / "d.png")
    _touch_mask(tmp_path / "d_labels.tif")
    logs: list[str] = []
    pairs = pair_annotations([tmp_path], [tmp_path], log=logs.append)
    assert _names(pairs) == [("c.png", "c_mask.png"), ("d.png", "d_labels.tif")]
    assert logs == []
    nuclei = pair_annotations([tmp_path], [tmp_path], suffixes=IMAGE_SUFFIXES, log=logs.append)
    assert _names(nuclei) == _names(pairs) and logs == []  # nuclei train


def test_polygons_win_then_exact_stems(tmp_path: Path) -> None:
    imgs, masks, polys = (tmp_path / d for d in ("img", "masks", "polys"))
    for d in (imgs, masks, polys):
        d.mkdir()
    for name in ("a", "b", "c", "X_mask"):
        _touch_image(imgs / f"{name}.jpg")
    _touch_mask(masks / "a.png")
    _touch_json(polys / "a_annotations.geojson")  # polygons beat a mask of the exact stem
    _touch_mask(masks / "b_mask.png")
    _touch_mask(masks / "b.png")  # the exact stem beats a suffixed one of the same kind
    _touch_mask(masks / "X_mask.png")  # an image whose own stem ends in _mask
    logs: list[str] = []
    pairs = pair_annotations(
        [imgs], [masks, polys], suffixes=IMAGE_SUFFIXES, log=logs.append
    )  # masks given first: order does not beat kind
    assert _names(pairs) == [
        ("X_mask.jpg", "X_mask.png"),
        ("a.jpg", "a_annotations.geojson"),
        ("b.jpg", "b.png"),
    ]
    assert logs == ["no annotation for 1 image(s), skipped: c.jpg"]


def test_unannotated_images_reported_once_and_no_pair_refused(tmp_path: Path) -> None:
    from shindan.kidney.training.run import train_compartments

    for name in ("a", "b", "c"):
        _touch_image(tmp_path / f"{name}.png")
    logs: list[str] = []
    with pytest.raises(InputError, match="no image has an annotation file"):
        pair_annotations([tmp_path], [tmp_path], log=logs.append)
    with pytest.raises(InputError, match="no such file or folder"):
        pair_annotations([tmp_path], [tmp_path / "nope"])
    # kidney train reports the unannotated images like nuclei train, before reading any
    _touch_json(tmp_path / "a.geojson")
    with pytest.raises(InputError, match="no polygon with a known class"):
        train_compartments(
            tmp_path / "m", inputs=[tmp_path], annotations=[tmp_path], mpp=1.0, log=logs.append
        )
    assert logs == ["no annotation for 2 image(s), skipped: b.png, c.png"]
    assert not (tmp_path / "m").exists()


def test_nuclei_train_skips_masks_among_its_images(tmp_path: Path) -> None:
    """An X_mask.png among the nuclei training images is X.png's mask, not an image paired
    with itself."""
    from shindan.engine.train_segmenter import TrainConfig
    from shindan.nuclei.train import train_nuclei

    _touch_image(tmp_path / "X.png")
    _touch_mask(tmp_path / "X_mask.png")
    logs: list[str] = []
    with pytest.raises(InputError, match="--holdout names no annotated image: X_mask"):
        train_nuclei(
            tmp_path,
            [tmp_path],
            tmp_path / "out",
            mpp=0.25,
            holdout=["X_mask"],
            config=TrainConfig(steps=1, batch_size=2, eval_every=1, warmup=1),
            tile=64,
            decoder_channels=(16, 8, 8, 8, 8),
            log=logs.append,
            progress=False,
        )
    assert logs == []


# ------------------------------------------------------------------ kidney: Ignore* regions
def _feature(name: str, x0: int, y0: int, x1: int, y1: int) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "properties": {"classification": {"name": name}},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def test_kidney_ignore_class_is_not_trained_on(tmp_path: Path) -> None:
    """QuPath's Ignore* (and "ignore", "exclude") is 255, painted over the polygons around
    it whatever the file order, also with unannotated="other"; alone it trains nothing."""
    from shindan.kidney.labels import GLOMERULUS, TUBULE
    from shindan.kidney.training.user_annotations import CLASS_NAMES, load_annotated

    assert CLASS_NAMES["ignore*"] == CLASS_NAMES["ignore"] == CLASS_NAMES["exclude"] == IGNORE
    _touch_image(tmp_path / "s.png", 200)
    fc = {
        "type": "FeatureCollection",
        "features": [
            _feature("Ignore*", 60, 60, 80, 80),  # first in the file, inside the glomerulus
            _feature("Glomerulus", 40, 40, 120, 120),
            _feature("Tubule", 140, 40, 180, 80),
            _feature("exclude", 150, 50, 160, 60),
        ],
    }
    (tmp_path / "s.geojson").write_text(json.dumps(fc))
    args = (tmp_path / "s.png", tmp_path / "s.geojson", 1.0, 1.0, CLASS_NAMES)
    for unannotated in ("ignore", "other"):
        lab = load_annotated(*args, margin_um=0, unannotated=unannotated).label
        # box x 40..180, y 40..120; the Ignore* square at 20..40 in box coordinates
        assert (lab[20:40, 20:40] == IGNORE).all()
        assert (lab == GLOMERULUS).sum() == 80 * 80 - 20 * 20
        assert (lab[10:20, 110:120] == IGNORE).all() and (lab == TUBULE).sum() == 1600 - 100
    (tmp_path / "s.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": fc["features"][:1]})
    )
    with pytest.raises(InputError, match="no polygon with a known class"):
        load_annotated(*args)
