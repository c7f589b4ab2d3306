"""Glomeruli scored as objects: found, missed and false glomeruli per mm²."""

from __future__ import annotations

import numpy as np

from shindan.io.annotations import IGNORE
from shindan.kidney.labels import GLOMERULUS, NON_TISSUE, NOT_GLOMERULUS, TUBULE
from shindan.kidney.objects import glomerulus_objects, summarise_objects


def _truth() -> np.ndarray:
    truth = np.full((300, 400), NOT_GLOMERULUS, np.uint8)
    truth[:, 300:] = NON_TISSUE  # glass: not counted as tissue
    truth[18:82, 18:82] = IGNORE  # unscored rim around the outline
    truth[20:80, 20:80] = GLOMERULUS
    truth[150:210, 150:210] = GLOMERULUS
    return truth


def test_false_found_and_missed_glomeruli_are_counted() -> None:
    truth = _truth()
    pred = np.full(truth.shape, TUBULE, np.uint8)
    pred[10:90, 10:90] = GLOMERULUS  # outline 1 with a wide margin: found, not false
    pred[20:80, 220:280] = GLOMERULUS  # on tubules: false
    pred[160:170, 160:170] = GLOMERULUS  # 100 µm² on outline 2: under the floor, not found
    before = pred.copy()
    r = glomerulus_objects(pred, truth, 2.0)
    np.testing.assert_array_equal(pred, before)  # input untouched
    assert (r["true"], r["found"], r["predicted"], r["false"]) == (2, 1, 2, 1)
    assert abs(r["tissue_mm2"] - 300 * 300 * 4 / 1e6) < 1e-9
    # the floor is in µm²: at 0.5 µm/px the 3,600 px false region is 900 µm², not counted
    assert glomerulus_objects(pred, truth, 0.5)["predicted"] == 0


def test_a_region_mostly_off_its_glomerulus_is_false() -> None:
    truth = _truth()
    pred = np.zeros(truth.shape, np.uint8)
    pred[20:80, 76:200] = GLOMERULUS  # 6 of its 124 columns on outline 1 (and rim): < 20%
    r = glomerulus_objects(pred, truth, 2.0)
    assert (r["predicted"], r["false"], r["found"]) == (1, 1, 0)


def test_summary_per_mm2_and_empty_input() -> None:
    a = {"true": 4, "found": 3, "predicted": 6, "false": 2, "tissue_mm2": 0.5}
    s = summarise_objects([a, {**a, "false": 0}])
    assert s["false_glomeruli"] == 2 and s["false_per_mm2"] == 2.0 and s["found_share"] == 0.75
    empty = summarise_objects([])
    assert empty["false_per_mm2"] is None and empty["found_share"] is None
