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
