"""Compartment training data: real AAPI/HuBMAP loaders, composites, user annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.io.annotations import IGNORE
from shindan.kidney.labels import GLOMERULUS, NOT_GLOMERULUS, TUBULE, VESSEL
from shindan.kidney.training.builtin_sets import (
    aidpath_lab,
    cutout_class,
    glass_mask,
    load_aapi_tile,
    load_aidpath,
    load_hubmap,
)
from shindan.kidney.training.labelled import Cutout, LabelledImage, split_columns
from shindan.kidney.training.sampler import (
    CompartmentData,
    add_glass_edge,
    composite,
    make_compartment_sampler,
)


def test_cutout_class_from_name() -> None:
    assert cutout_class("FFPE PostRep 004_glomerulus_8") == GLOMERULUS
    assert cutout_class("tubule_HE_002_glom_2") == GLOMERULUS  # the last class word counts
    assert cutout_class("artery_HE_001_artery_1") == VESSEL
    assert cutout_class("13600_18000_0_proximal_tubule_3") == TUBULE
    assert cutout_class("FFPE PostRep 004_tubules_21") == TUBULE
    assert cutout_class("FFPE PostRep 005_arteriole_2") == VESSEL
    assert cutout_class("something_else") is None


def _bg(size: int = 96) -> LabelledImage:
    img = np.full((size, size, 3), (230, 180, 210), np.uint8)
    lab = np.ones((size, size), np.uint8)
    img[30:60, 30:60] = 0  # a blacked-out hole
    lab[30:60, 30:60] = IGNORE
    return LabelledImage("bg", img, lab, "H&E", 1.0)


def _cut(code: int) -> Cutout:
    m = np.zeros((20, 20), bool)
    m[4:16, 4:16] = True
    return Cutout("c", np.full((20, 20, 3), 120, np.uint8), m, code, 1.0)


def test_composite_pastes_structures_with_labels() -> None:
    rng = np.random.default_rng(0)
    bg = _bg()
    bg.image[bg.label == 1] = (245, 235, 240)  # pale: too little tissue to match colours to
    img, lab = composite(bg, [_cut(GLOMERULUS), _cut(TUBULE)], 64, rng, n_paste=(8, 9))
    assert img.shape == (64, 64, 3) and lab.shape == (64, 64)
    assert {GLOMERULUS, TUBULE} & set(np.unique(lab).tolist())
    # pasted pixels carry the cut-out colour exactly where the label says so
    pasted = (lab == GLOMERULUS) | (lab == TUBULE)
    assert (img[pasted] == 120).all()


def test_match_colours() -> None:
    from shindan.kidney.training.stain_transfer import match_colours

    rng = np.random.default_rng(0)
    ref = np.clip(rng.normal((200, 120, 180), 10, (500, 3)), 0, 255).astype(np.uint8)
    src = np.clip(rng.normal((120, 60, 160), 15, (300, 3)), 0, 255).astype(np.uint8)
    out = match_colours(src, ref)
    assert out.shape == src.shape and out.dtype == np.uint8
    assert np.abs(out.mean(0) - ref.mean(0)).max() < 8


def test_glass_edge_and_mask() -> None:
    rng = np.random.default_rng(3)
    img = np.full((64, 64, 3), (200, 120, 180), np.uint8)
    lab = np.full((64, 64), 3, np.uint8)
    out, olab = add_glass_edge(img, lab, rng)
    assert (olab == 0).any() and (olab == 3).any()
    assert glass_mask(out, min_area_px=50)[olab == 0].mean() > 0.9
    assert not glass_mask(img).any()
    assert (img == (200, 120, 180)).all()  # input untouched


def test_split_and_sampler_shapes() -> None:
    left, right = split_columns(_bg(100), 0.75)
    assert left.image.shape[1] == 75 and right.label.shape == (100, 25)
    pas_lab = np.full((80, 80), NOT_GLOMERULUS, np.uint8)
    pas_lab[20:40, 20:40] = GLOMERULUS
    pas = LabelledImage("p", np.full((80, 80, 3), 150, np.uint8), pas_lab, "PAS", 1.0)
    data = CompartmentData([left], [_bg()], [_cut(VESSEL)], [pas])
    s = make_compartment_sampler(data, 48)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        img, lab = s(rng)
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8 and lab.shape == (48, 48)
        seen |= set(np.unique(lab).tolist())
    assert seen <= {0, 1, 2, 3, 4, NOT_GLOMERULUS, IGNORE}
    assert NOT_GLOMERULUS in seen


def test_glomerulus_focus_puts_crops_on_glomeruli() -> None:
    lab = np.full((400, 400), NOT_GLOMERULUS, np.uint8)
    lab[300:320, 40:60] = GLOMERULUS  # 0.25% of the image
    pas = LabelledImage("p", np.full((400, 400, 3), 150, np.uint8), lab, "PAS", 1.0)
    data = CompartmentData([], [], [], [pas])
    rng = np.random.default_rng(0)

    def hit_rate(focus: float) -> float:
        s = make_compartment_sampler(
            data, 64, mix=(0, 0, 1, 0), glass_edge=0, glomerulus_focus=focus
        )
        return float(np.mean([(s(rng)[1] == GLOMERULUS).any() for _ in range(40)]))

    assert hit_rate(1.0) == 1.0
    assert hit_rate(0.0) < 0.3


def test_pas_draws_split_between_images_and_crops() -> None:
    """With glomerulus crops, half the PAS draws come from them; without, none change."""
    lab = np.full((200, 200), NOT_GLOMERULUS, np.uint8)
    pas = LabelledImage("p", np.full((200, 200, 3), 150, np.uint8), lab, "PAS", 1.0)
    crop_lab = np.full((40, 40), GLOMERULUS, np.uint8)
    crop = LabelledImage("c", np.full((40, 40, 3), 90, np.uint8), crop_lab, "PAS", 1.0)

    def draws(data: CompartmentData, share: float = 0.5) -> list[np.ndarray]:
        s = make_compartment_sampler(data, 64, mix=(0, 0, 1, 0), glass_edge=0, crop_share=share)
        rng = np.random.default_rng(1)
        return [s(rng)[1] for _ in range(60)]

    mixed = draws(CompartmentData([], [], [], [pas], crops=[crop]))
    from_crops = np.mean([(d == GLOMERULUS).any() for d in mixed])
    assert 0.3 < from_crops < 0.7
    rare = draws(CompartmentData([], [], [], [pas], crops=[crop]), share=0.1)
    assert 0 < np.mean([(d == GLOMERULUS).any() for d in rare]) < 0.25
    # a crop smaller than the tile is padded with "unknown", never with a class
    assert all(
        set(np.unique(d[(d != NOT_GLOMERULUS)]).tolist()) <= {GLOMERULUS, IGNORE} for d in mixed
    )
    only_crops = draws(CompartmentData([], [], [], [], crops=[crop]))
    assert all((d == GLOMERULUS).any() for d in only_crops)
    assert all((d == NOT_GLOMERULUS).all() for d in draws(CompartmentData([], [], [], [pas])))


def test_aidpath_labs(tmp_path: Path) -> None:
    from shindan.errors import InputError
    from shindan.kidney.training.builtin_recipe import builtin_data

    assert aidpath_lab("SESCAM_1_0-32") == "SESCAM"
    assert aidpath_lab("aidpath-nonGS-SAS_21937_001-4") == "SAS"
    assert aidpath_lab("aidpath-GS-VUHSK_1352-24") == "VUHSK"
    for bad in (["SAS", "SESCAM", "VUHSK"], ["NOPE"]):  # a lab must be left to test on
        with pytest.raises(InputError, match="AIDPATH training labs"):
            builtin_data(tmp_path, 1.0, aidpath_train_labs=bad)


def test_real_aidpath_lab_filter(shared_data: Path) -> None:
    root = shared_data / "kidney"
    crops = load_aidpath(root, 0.9, 1.0, labs=["VUHSK"])
    assert len(crops) == 375 and {aidpath_lab(c.name) for c in crops} == {"VUHSK"}
    every5 = load_aidpath(root, 0.9, 1.0, labs=["VUHSK"], every=5)
    assert [c.name for c in every5] == [c.name for c in crops[::5]]
    c = crops[0]
    assert abs(c.label.shape[0] - 202) <= 1  # 224 px at 0.9 µm/px → ≈202 at 1 µm/px
    assert set(np.unique(c.label).tolist()) <= {GLOMERULUS, NOT_GLOMERULUS}


def test_real_aapi_tile_and_hubmap(shared_data: Path) -> None:
    root = shared_data / "kidney"
    t = load_aapi_tile(root, "HE_001", 1.0)
    assert t.image.shape[:2] == t.label.shape
    assert abs(t.label.shape[0] - 749) <= 1  # 2996 px at 0.25 µm/px → ≈749 at 1 µm/px
    assert {1, 2, 3, 4} <= set(np.unique(t.label).tolist())
    (h,) = load_hubmap(
        root,
        "test",
        1.0,
        names=[sorted(p.stem for p in (root / "glomeruli-hubmap-pas/test").glob("*.json"))[0]],
    )
    assert GLOMERULUS in h.label and NOT_GLOMERULUS in h.label
    assert h.stain == "PAS"


def test_user_annotations_partly_annotated(tmp_path: Path) -> None:
    """A GeoJSON with one glomerulus and one tubule: only the annotated box is read, the
    unannotated pixels inside it are unknown (255)."""
    from shindan.io.inputs import pair_annotations
    from shindan.kidney.training.user_annotations import CLASS_NAMES, load_annotated

    img = np.full((400, 600, 3), 200, np.uint8)
    Image.fromarray(img).save(tmp_path / "slide1.png")
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"classification": {"name": "Glomerulus"}},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[100, 100], [200, 100], [200, 200], [100, 200], [100, 100]]],
                },
            },
            {
                "type": "Feature",
                "properties": {"classification": {"name": "Tubule"}},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[300, 100], [340, 100], [340, 140], [300, 140], [300, 100]]],
                },
            },
        ],
    }
    (tmp_path / "slide1.geojson").write_text(json.dumps(fc))
    (pair,) = pair_annotations([tmp_path / "slide1.png"], [tmp_path])
    li = load_annotated(*pair, target_mpp=1.0, mpp=0.5, classes=CLASS_NAMES, margin_um=10)
    # box: x 80..360, y 80..220 level-0 px (margin 20 px) → 140x70 px at 1 µm/px
    assert li.label.shape == (70, 140)
    assert (li.label == GLOMERULUS).sum() == 50 * 50
    assert (li.label == TUBULE).sum() == 20 * 20
    assert (li.label == IGNORE).sum() == 70 * 140 - 2500 - 400


def test_user_annotations_errors(tmp_path: Path) -> None:
    from shindan.errors import InputError
    from shindan.kidney.training.user_annotations import CLASS_NAMES, load_annotated

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((10, 10), 9, np.uint8)).save(tmp_path / "a_mask.png")
    with pytest.raises(InputError, match="label codes"):
        load_annotated(tmp_path / "a.png", tmp_path / "a_mask.png", 1.0, 1.0, CLASS_NAMES)
    (tmp_path / "a.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"classification": {"name": "Weird"}},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[1, 1], [5, 1], [5, 5], [1, 1]]],
                        },
                    }
                ],
            }
        )
    )
    with pytest.raises(InputError, match="no polygon with a known class"):
        load_annotated(tmp_path / "a.png", tmp_path / "a.geojson", 1.0, 1.0, CLASS_NAMES)
    with pytest.raises(InputError, match="give --mpp"):
        load_annotated(tmp_path / "a.png", tmp_path / "a_mask.png", 1.0, None, CLASS_NAMES)


def test_composite_uses_harmonised_copy() -> None:
    c = _cut(GLOMERULUS)
    c.harmonised = np.full_like(c.image, 77)
    bg = _bg()
    img, lab = composite(bg, [c], 64, np.random.default_rng(0), n_paste=(6, 7), harmonised_prob=1.0)
    assert (lab == GLOMERULUS).any() and (img[lab == GLOMERULUS] == 77).all()
    img, lab = composite(bg, [c], 64, np.random.default_rng(0), n_paste=(6, 7), harmonised_prob=0.0)
    assert (img[lab == GLOMERULUS] == 120).all()


def test_builtin_data_rejects_unknown_test_tile(tmp_path: Path) -> None:
    from shindan.errors import InputError
    from shindan.kidney.training.builtin_recipe import builtin_data

    for bad in ("11000_16000_0", "nope"):  # the first tile always trains
        with pytest.raises(InputError, match="test tile"):
            builtin_data(tmp_path, 1.0, test_tile=bad)


def test_transfer_stain_recolours_tissue_not_glass() -> None:
    from shindan.kidney.training.stain_transfer import (
        colour_stats,
        stain_references,
        transfer_stain,
    )

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal((190, 110, 170), 12, (40, 40, 3)), 0, 255).astype(np.uint8)
    img[:10] = 245  # glass
    target = np.clip(rng.normal((150, 90, 190), 12, (500, 3)), 0, 255).astype(np.uint8)
    out = transfer_stain(img, colour_stats(target))
    assert (out[:10] == 245).all()
    assert np.abs(out[10:].reshape(-1, 3).mean(0) - target.mean(0)).max() < 10
    assert (img[:10] == 245).all() and out is not img
    assert (transfer_stain(np.full((8, 8, 3), 250, np.uint8), colour_stats(target)) == 250).all()
    refs = stain_references(
        [_cut(GLOMERULUS)],
        [_bg(), LabelledImage("p", img, np.full((40, 40), NOT_GLOMERULUS, np.uint8), "PAS", 1.0)],
        min_pixels=200,
    )
    assert set(refs) == {"H&E", "PAS"} and len(refs["H&E"]) == 1  # the cut-out is too small
    data = CompartmentData([_bg()], [], [], [], stain_refs=refs)
    s = make_compartment_sampler(data, 32, transfer=1.0)
    assert s(np.random.default_rng(1))[0].shape == (32, 32, 3)


def test_crops_keep_their_stain_under_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    """With crops_keep_stain, a PAS crop is re-coloured only to PAS references; other draws
    still reach H&E ones."""
    import shindan.kidney.training.sampler as kd

    refs = {"H&E": [(np.zeros(3), np.ones(3))], "PAS": [(np.ones(3), np.ones(3))]}
    used: list[str] = []
    real = kd.transfer_stain

    def spy(image, reference, rng=None):
        used.append("PAS" if reference[0][0] == 1 else "H&E")
        return real(image, reference, rng)

    crop_lab = np.full((40, 40), GLOMERULUS, np.uint8)
    crop = LabelledImage("c", np.full((40, 40, 3), 90, np.uint8), crop_lab, "PAS", 1.0)
    monkeypatch.setattr(kd, "transfer_stain", spy)
    for keep, crops_only_pas in ((True, True), (False, False)):
        used.clear()
        data = CompartmentData([_bg()], [], [], [], crops=[crop], stain_refs=refs)
        s = make_compartment_sampler(
            data, 32, mix=(0, 0, 1, 0), transfer=1.0, transfer_pas=0.3, crops_keep_stain=keep
        )
        rng = np.random.default_rng(0)
        for _ in range(30):
            s(rng)
        assert len(used) == 30 and (set(used) == {"PAS"}) is crops_only_pas
        # real tiles are not crops: they go on reaching both stains
        tiles = make_compartment_sampler(
            data, 32, mix=(1, 0, 0, 0), transfer=1.0, transfer_pas=0.3, crops_keep_stain=keep
        )
        used.clear()
        for _ in range(30):
            tiles(rng)
        assert set(used) == {"H&E", "PAS"}


def test_dice_summary_means() -> None:
    from shindan.kidney.training.scoring import dice_summary

    cm = np.zeros((5, 5), np.int64)
    cm[1, 1], cm[3, 3], cm[3, 1] = 400, 500, 100  # interstitium and tubule: the bulk
    cm[4, 3] = 5  # a sliver of vessel, all missed (0.5% of pixels)
    out = dice_summary(cm, 1)
    assert set(out["dice"]) == {"interstitium", "tubule", "vessel"}
    assert out["dice"]["vessel"] == 0.0
    assert out["dice"]["interstitium"] == pytest.approx(800 / 900, abs=1e-4)
    assert out["mean_dice"] == pytest.approx((800 / 900 + 1000 / 1105) / 3, abs=1e-4)
    assert out["mean_dice_classes_over_1pct"] == pytest.approx(
        (800 / 900 + 1000 / 1105) / 2, abs=1e-4
    )
    assert out["pixels"]["vessel"] == 5
