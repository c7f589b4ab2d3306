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
