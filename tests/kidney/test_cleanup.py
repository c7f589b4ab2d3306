"""Small-region clean-up of compartment label maps."""

from __future__ import annotations

import numpy as np
import pytest

from shindan.kidney.cleanup import min_region_areas, remove_small_regions
from shindan.kidney.scores import GLOMERULUS, INTERSTITIUM, TUBULE


def test_specks_take_their_surroundings_and_big_regions_stay() -> None:
    lab = np.full((80, 80), TUBULE, np.uint8)
    lab[:, 60:] = INTERSTITIUM
    lab[10:40, 10:40] = GLOMERULUS  # 900 px at 2 µm/px = 3600 µm²: kept
    lab[50:53, 50:53] = GLOMERULUS  # 36 µm² inside tubule
    lab[70:74, 58:62] = GLOMERULUS  # 64 µm² on the tubule/interstitium border
    before = lab.copy()
    out = remove_small_regions(lab, 2.0, {GLOMERULUS: 2000.0})
    np.testing.assert_array_equal(lab, before)  # input untouched
    assert (out[10:40, 10:40] == GLOMERULUS).all()
    assert (out[50:53, 50:53] == TUBULE).all()
    assert set(np.unique(out[70:74, 58:62])) <= {TUBULE, INTERSTITIUM}
    assert (out == GLOMERULUS).sum() == 900
    # the same map at a finer scale: the big region is now too small as well
    assert (remove_small_regions(lab, 1.0, {GLOMERULUS: 2000.0}) != GLOMERULUS).all()
    # a class without a rule, or a map of one class only, is left alone
    np.testing.assert_array_equal(remove_small_regions(lab, 2.0, {}), lab)
    flat = np.full((8, 8), GLOMERULUS, np.uint8)
    np.testing.assert_array_equal(remove_small_regions(flat, 1.0, {GLOMERULUS: 1e6}), flat)


def test_min_region_areas_from_card() -> None:
    from shindan.errors import ModelError
    from shindan.models import ZOO_DIR, load_card
    from shindan.models.card import ModelCard

    card = load_card(ZOO_DIR / "kidney-compartments")
    assert min_region_areas(card) == {GLOMERULUS: 2000.0}
    data = {**card.data, "postprocess": {"min_region_um2": {"cortex": 10}}}
    with pytest.raises(ModelError, match="unknown class"):
        min_region_areas(ModelCard(data, card.directory))
    assert min_region_areas(ModelCard({**card.data, "postprocess": {}}, card.directory)) == {}


def test_blacked_out_areas_are_not_tissue() -> None:
    from shindan.io.slide import ImageSlide
    from shindan.kidney.cleanup import clear_black

    image = np.full((300, 200, 3), (215, 150, 190), np.uint8)
    image[40:100, 50:120] = 0  # blacked out
    image[200:210, 20:30] = (40, 20, 80)  # the darkest nucleus: stays
    labels = np.full((300, 200), INTERSTITIUM, np.uint8)
    out = clear_black(labels, ImageSlide.from_array(image, 0.5), 0.5, rows=64)
    assert (labels == INTERSTITIUM).all()  # input untouched
    assert not out[40:100, 50:120].any()
    assert (out == INTERSTITIUM).sum() == 300 * 200 - 60 * 70


@pytest.mark.slow
def test_black_painted_crop_scores_as_with_white(shared_data, tmp_path) -> None:
    from PIL import Image

    from shindan.kidney.pipeline import analyze

    # tubules of tile 11000_16000_0 (with blacked-out holes) and a black corner painted in;
    # with the black made white the same crop scores fibrosis 0.123
    tile = np.asarray(Image.open(shared_data / "kidney/tiles-aapi-he/11000_16000_0/image.jpg"))
    crop = tile[0:1024, 256:1280].copy()
    crop[:600, :600] = 0
    white = crop.copy()
    white[crop.max(axis=2) < 31] = 255
    Image.fromarray(crop).save(tmp_path / "black.png")
    Image.fromarray(white).save(tmp_path / "white.png")
    rb, rw = analyze([tmp_path / "black.png", tmp_path / "white.png"], tmp_path / "o", mpp=0.25,
                     progress=False)  # fmt: skip
    fb, fw = rb.scores["interstitial_fibrosis"], rw.scores["interstitial_fibrosis"]
    # kidney-compartments 1.3.0: 0.03 apart; 2.0.0: 0.151 vs 0.109 (it reads the tissue along
    # the black edge differently), so the black paint may move the score by at most 0.05
    assert fb is not None and abs(fb - fw) < 0.05, (fb, fw)
