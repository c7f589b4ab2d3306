"""Tissue detection with black borders: scanner padding and blacked-out areas are not tissue,
and must not turn the stained tissue into glass."""

import numpy as np
import pytest

from shindan.tiling.tissue import tissue_mask_from_rgb


@pytest.mark.parametrize("border", [0.1, 0.4])
def test_black_border_leaves_the_tissue_tissue(border):
    rng = np.random.default_rng(0)
    img = np.full((200, 300, 3), 242, np.uint8)
    img[40:160, 60:280] = (215, 150, 185)  # pale H&E-like tissue
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    img[:, : int(300 * border)] = 0
    mask = tissue_mask_from_rgb(img, mpp=8.0)
    assert mask[45:155, 130:275].mean() > 0.95
    assert not mask[:, : int(300 * border) - 3].any()


def test_real_tile_with_blacked_out_edges(shared_data):
    from PIL import Image

    # the AAPI tile HE_001 has blacked-out holes at its edges (structures without cut-outs)
    img = np.asarray(Image.open(shared_data / "kidney/tiles-aapi-he/HE_001/image.jpg").reduce(32))
    assert tissue_mask_from_rgb(img, mpp=8.0).mean() > 0.5


def _tubules(shape=(64, 64), seed=0):
    """Tissue with no glass at all: pale pink tubules with white lumina on pinker interstitium,
    as in a crop taken inside a biopsy (8 µm/px, as tissue detection reads it)."""
    rng = np.random.default_rng(seed)
    img = np.empty((*shape, 3), np.float32)
    img[:] = (205, 120, 170)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(60):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(3, 6)
        d = np.hypot(yy - cy, xx - cx)
        img[d < r] = (225, 170, 200)  # pale tubule epithelium
        img[d < r / 3] = (238, 226, 232)  # lumen
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("black", ["left-third", "corner", "block"])
def test_tissue_filled_crop_with_black_areas_stays_tissue(black):
    # A crop full of tubules with a blacked-out area was "non-tissue": Otsu split the tissue
    # (there is no glass), and the black cut what was left into dust-sized pieces.
    img = _tubules()
    region = {
        "left-third": np.s_[:, :21],
        "corner": np.s_[:38, :38],
        "block": np.s_[20:44, 20:44],
    }[black]
    img[region] = 0
    mask = tissue_mask_from_rgb(img, mpp=8.0)
    painted = np.zeros(mask.shape, bool)
    painted[region] = True
    assert mask[~painted].mean() > 0.9
    assert not mask[painted].any()


def test_real_tubule_crop_with_black_corner(shared_data):
    from PIL import Image

    from shindan.io.slide import ImageSlide
    from shindan.tiling import detect_tissue

    # 1024 px (256 µm) of tile 11000_16000_0 where tubules cover 61%: it already has blacked-out
    # holes; a black corner painted in made the whole crop non-tissue
    tile = Image.open(shared_data / "kidney/tiles-aapi-he/11000_16000_0/image.jpg")
    crop = np.asarray(tile.convert("RGB"))[0:1024, 256:1280].copy()
    crop[:600, :600] = 0
    mask = detect_tissue(ImageSlide.from_array(crop, mpp=0.25, name="crop.png")).mask
    assert mask.mean() > 0.35  # 66% of the crop is not painted black
    assert not mask[:18, :18].any()  # the painted corner (75 px of 8 µm) is not tissue


def test_blacked_out_background_tiles_keep_their_interstitium(shared_data):
    from PIL import Image

    from shindan.io.slide import ImageSlide
    from shindan.tiling import detect_tissue

    # every structure painted black: the interstitium left between them is tissue
    path = shared_data / "kidney/compartments-aapi-he/background/13600_18000_0_background.jpg"
    img = np.asarray(Image.open(path).convert("RGB"))
    mask = detect_tissue(ImageSlide.from_array(img, mpp=0.25, name="bg.png")).mask
    assert mask.mean() > 0.1  # 22% of the tile is not black
