"""The per-glomerulus table from a label map."""

import numpy as np
from skimage.draw import disk

from shindan.kidney.glomeruli import find_glomeruli


def test_table_sizes_drops_fragments_and_flags_giants():
    labels = np.full((400, 900), 3, np.uint8)  # tubule, at 2 µm/px
    labels[disk((100, 100), 40)] = 2  # 160 µm across: a glomerulus
    labels[300:310, 50:60] = 2  # 400 µm²: a fragment, dropped
    labels[150:390, 300:880] = 2  # 580 x 240 px: far wider than any glomerulus
    table = find_glomeruli(labels, mpp=2.0, slide_mpp=0.5)
    assert len(table) == 2
    small, giant = sorted(table, key=lambda g: g.area_um2)
    assert abs(small.diameter_um - 160) < 4 and small.review is None
    assert (small.centroid_x, small.centroid_y) == (402.0, 402.0)  # level-0 px (x4)
    assert giant.review and "wider than a glomerulus" in giant.review
    assert giant.as_dict()["review"] == giant.review
