"""``train_nuclei`` inputs: scale of a fine-tune, refused annotation files (checked before
training), partly annotated images (regions, bounding box)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.engine.train_segmenter import TrainConfig
from shindan.errors import InputError, ShindanError
from shindan.io.annotations import IGNORE, Annotation, read_geojson, write_geojson
from shindan.nuclei.data import load_sample
from shindan.nuclei.train import train_nuclei

TINY = {
    "config": TrainConfig(steps=1, batch_size=2, eval_every=1, warmup=1),
    "tile": 64,
    "decoder_channels": (16, 8, 8, 8, 8),
    "progress": False,
}


def _square(x0: float, y0: float, size: float) -> np.ndarray:
    return np.array([[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size]], float)


def _image(path: Path, size: int = 64) -> None:
    Image.fromarray(np.full((size, size, 3), 200, np.uint8)).save(path)


def _mask_pair(folder: Path, name: str, size: int = 64) -> None:
    """img/``name``.png with a binary mask ann/``name``.png of two nuclei."""
    for d in ("img", "ann"):
        (folder / d).mkdir(exist_ok=True)
    _image(folder / f"img/{name}.png", size)
    m = np.zeros((size, size), np.uint8)
    m[10:18, 10:18] = m[30:38, 40:48] = 255
    Image.fromarray(m).save(folder / f"ann/{name}.png")


def _feature_collection(features: list[dict]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": features})


POINT = {
    "type": "Feature",
    "properties": {"classification": {"name": "Nucleus"}},
    "geometry": {"type": "Point", "coordinates": [10, 10]},
}


# ------------------------------------------------------------------- 1: scale of --init
@pytest.mark.slow
def test_fine_tune_reads_data_at_the_init_models_scale(tmp_path: Path) -> None:
    from shindan.models import build_network, load_card, save_model
    from shindan.nuclei.train import nuclei_card

    base_card = nuclei_card(0.5, decoder_channels=TINY["decoder_channels"])
    save_model(build_network(base_card), base_card, tmp_path / "base", onnx=False)
    _mask_pair(tmp_path, "a")
    logs: list[str] = []
    train_nuclei(
        tmp_path / "img/a.png",
        [tmp_path / "ann"],
        tmp_path / "ft",
        mpp=0.25,
        target_mpp=0.4,  # the default: overruled by the starting model's scale
        init=str(tmp_path / "base"),
        log=logs.append,
        **TINY,
    )
    assert load_card(tmp_path / "ft").data["input"]["mpp"] == 0.5
    (line,) = [s for s in logs if s.startswith("loaded ")]
    assert "at 0.5 µm/px (the µm/px of --init" in line


# ------------------------------------------------------- 2: files without nucleus polygons
@pytest.mark.parametrize("features", [[], [POINT]], ids=["empty", "points-only"])
def test_annotation_without_polygons_is_refused(tmp_path: Path, features: list) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "a.geojson").write_text(_feature_collection(features))
    with pytest.raises(InputError, match=r"a\.geojson: no nucleus polygon"):
        train_nuclei(tmp_path / "a.png", [tmp_path], tmp_path / "out", mpp=0.25, **TINY)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------- 3: every pair checked before training
@pytest.mark.parametrize("bad", ["not json", _feature_collection([POINT])])
def test_bad_holdout_annotation_stops_before_training(tmp_path: Path, bad: str) -> None:
    _mask_pair(tmp_path, "a")
    _image(tmp_path / "img/b.png")
    (tmp_path / "ann/b.geojson").write_text(bad)
    with pytest.raises(ShindanError, match=r"b\.geojson"):
        train_nuclei(
            tmp_path / "img", [tmp_path / "ann"], tmp_path / "out", mpp=0.25, holdout=["b"], **TINY
        )
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------- 6: partly annotated images
def test_region_polygons_bound_the_annotated_area(tmp_path: Path) -> None:
    """Nuclei in the top-left corner of a 400x400 image and a Region* rectangle around them:
    outside the rectangle is unknown, the rectangle is no nucleus."""
    _image(tmp_path / "a.png", 400)
    nuclei = [Annotation(_square(x, y, 10), "Nucleus") for x, y in ((20, 20), (60, 30))]
    region = Annotation(_square(0, 0, 100), "Region*")
    write_geojson([region, *nuclei], tmp_path / "a.geojson")
    s = load_sample(tmp_path / "a.png", tmp_path / "a.geojson", 0.25, 0.25)
    assert s.instances is not None and s.instances.max() == 2
    assert (s.target[:100, :100] != IGNORE).all()  # the annotated area is all known...
    assert (s.target[100:] == IGNORE).all() and (s.target[:, 100:] == IGNORE).all()
    assert s.target[90, 90] == 0 and s.target[25, 25] == 1  # ...and the region no nucleus
    for name in ("region", "ROI", "Annotated region", "tissue"):
        write_geojson([Annotation(region.polygon, name), *nuclei], tmp_path / "a.geojson")
        t = load_sample(tmp_path / "a.png", tmp_path / "a.geojson", 0.25, 0.5).target
        assert t.shape == (200, 200) and (t[:50, :50] != IGNORE).all()
        assert (t[50:] == IGNORE).all()


def test_ignore_polygons_are_not_nuclei_and_not_trained(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 100)
    nuclei = [Annotation(_square(20, 20, 10), "Nucleus")]
    write_geojson([*nuclei, Annotation(_square(50, 50, 30), "Ignore*")], tmp_path / "a.geojson")
    s = load_sample(tmp_path / "a.png", tmp_path / "a.geojson", 0.25, 0.25)
    assert s.instances is not None and s.instances.max() == 1
    assert (s.target[52:78, 52:78] == IGNORE).all() and s.target[25, 25] == 1


def test_without_regions_the_nuclei_box_plus_50_um_is_annotated(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 400)
    nuclei = [Annotation(_square(x, y, 10), "Nucleus") for x, y in ((20, 20), (60, 30))]
    write_geojson(nuclei, tmp_path / "a.geojson")
    # 50 µm = 200 px at 0.25 µm/px: the box is x 0..270, y 0..240
    s = load_sample(tmp_path / "a.png", tmp_path / "a.geojson", 0.25, 0.25)
    known = s.target != IGNORE
    assert known[:240, :270].all() and not known[240:].any() and not known[:, 270:].any()
    # the margin is in µm, whatever the model's scale: 100 px at 0.5 µm/px
    t = load_sample(tmp_path / "a.png", tmp_path / "a.geojson", 0.25, 0.5).target
    assert (t[:120, :135] != IGNORE).all() and (t[120:] == IGNORE).all()
    # a binary mask is complete: no unknown pixels
    _mask_pair(tmp_path, "m")
    m = load_sample(tmp_path / "img/m.png", tmp_path / "ann/m.png", 0.25, 0.25)
    assert not (m.target == IGNORE).any()


@pytest.mark.slow
def test_real_monuseg_partly_annotated_and_full_files(shared_data: Path, tmp_path: Path) -> None:
    """The auditor's case: a MoNuSeg file cut down to the nuclei inside (0,0)-(250,250) plus
    a Region* rectangle; and the full files keep (nearly) every pixel labelled."""
    from shindan.io.inputs import IMAGE_SUFFIXES, VECTOR_SUFFIXES, pair_annotations

    base = shared_data / "nuclei/monuseg-train"
    name = "TCGA-A7-A13E-01Z-00-DX1"
    anns = read_geojson(base / f"annotations/{name}.geojson")
    inside = [a for a in anns if (a.polygon.max(0) <= 250).all()]
    assert 10 < len(inside) < len(anns)
    region = Annotation(_square(0, 0, 250), "Region*")
    write_geojson([*inside, region], tmp_path / f"{name}.geojson")
    s = load_sample(base / f"images/{name}.jpg", tmp_path / f"{name}.geojson", 0.2527, 0.4)
    assert s.instances is not None and s.instances.max() == len(inside)
    side = round(250 * 0.2527 / 0.4)
    known = s.target != IGNORE
    assert abs(int(known.sum()) - side * side) <= 2 * side + 1
    assert not known[side + 1 :].any() and not known[:, side + 1 :].any()
    pairs = pair_annotations(
        [base / "images"], [base / "annotations", base / "masks"], suffixes=IMAGE_SUFFIXES
    )
    for img, ann in pairs:
        if ann.suffix.lower() in VECTOR_SUFFIXES:
            t = load_sample(img, ann, 0.2527, 0.4).target
            assert (t != IGNORE).mean() >= 0.97, img.name


@pytest.mark.slow
def test_nuclei_train_cli_refuses_a_folder_with_users_files(tmp_path: Path) -> None:
    from tests.nuclei.test_cli import _shindan

    _mask_pair(tmp_path, "a")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = _shindan(
        "nuclei", "train", str(tmp_path / "img"), "-a", str(tmp_path / "ann"),
        "--out", str(tmp_path / "mine"), "--mpp", "0.25",
    )  # fmt: skip
    assert r.returncode == 2 and "notes.txt" in r.stderr and len(r.stderr.splitlines()) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_card_states_domain_and_scale(tmp_path: Path) -> None:
    _mask_pair(tmp_path, "a")
    train_nuclei(
        tmp_path / "img/a.png", [tmp_path / "ann"], tmp_path / "m", mpp=0.25,
        stains=["H&E"], tissue="test tissue", **TINY,
    )  # fmt: skip
    from shindan.models import load_card

    card = load_card(tmp_path / "m").data
    assert card["domain"] == {"stains": ["H&E"], "mpp": 0.25, "tissue": "test tissue"}
    assert card["training"]["scales"][0]["mpp"] == 0.25
    assert card["training"]["scales"][0]["source"] == "given with --mpp"
