"""Watershed separation of touching nuclei and the AJI / Dice metrics."""

from __future__ import annotations

import numpy as np
import pytest

from shindan.nuclei.metrics import aji, dice
from shindan.nuclei.postprocess import instances_from_probs


def _two_touching_discs(shape=(64, 96), r=14, centres=((32, 34), (32, 60))):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        truth[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (truth == 0)] = i
    return truth


def _probs_from_instances(truth: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    boundary = find_boundaries(truth, mode="inner") & (truth > 0)
    p = np.zeros((3, *truth.shape), np.float32)
    p[0] = truth == 0
    p[1] = (truth > 0) & ~boundary
    p[2] = boundary
    return 0.9 * p + 0.1 / 3  # soft, as a network would give


def test_watershed_separates_touching_discs() -> None:
    truth = _two_touching_discs()
    # the discs overlap: as one binary blob they are a single connected component
    from scipy import ndimage

    assert ndimage.label(truth > 0)[1] == 1
    lab = instances_from_probs(_probs_from_instances(truth))
    assert lab.dtype == np.int32 and lab.max() == 2
    assert aji(truth, lab) > 0.85
    # each found nucleus sits on one true disc
    for i in (1, 2):
        assert len(np.unique(truth[lab == i])) == 1


def test_marker_h_splits_a_merged_seed() -> None:
    truth = _two_touching_discs(centres=((32, 36), (32, 58)))
    p = np.zeros((3, *truth.shape), np.float32)
    p[0], p[1] = truth == 0, truth > 0  # no boundary between the two: one seed
    p = 0.9 * p + 0.1 / 3
    assert instances_from_probs(p).max() == 1
    lab = instances_from_probs(p, marker_h=2.0)
    assert lab.max() == 2 and aji(truth, lab) > 0.8
    # a lone small seed without an h-maximum of its own is kept
    p2 = np.zeros((3, 20, 20), np.float32)
    p2[0] = 1
    p2[:, 8:12, 8:12] = [[[0.0]], [[1.0]], [[0.0]]]
    assert instances_from_probs(p2, marker_h=5.0, min_size_px=1).max() == 1


def test_core_class_seeds_touching_nuclei_apart() -> None:
    """With a fourth (core) channel, seeds come from the cores: two nuclei whose interiors
    run together (no predicted boundary between them) are still two."""
    truth = _two_touching_discs(centres=((32, 36), (32, 58)))
    yy, xx = np.mgrid[: truth.shape[0], : truth.shape[1]]
    core = ((yy - 32) ** 2 + (xx - 36) ** 2 < 36) | ((yy - 32) ** 2 + (xx - 58) ** 2 < 36)
    p = np.zeros((4, *truth.shape), np.float32)
    p[0], p[1], p[3] = truth == 0, (truth > 0) & ~core, core
    p = 0.9 * p + 0.1 / 4
    three = np.stack([p[0], p[1] + p[3], p[2]])
    assert instances_from_probs(three).max() == 1  # interior seeds: one merged nucleus
    lab = instances_from_probs(p)
    assert lab.max() == 2 and aji(truth, lab) > 0.8
    for i in (1, 2):  # each mostly on one disc (nothing marks where they meet)
        assert np.bincount(truth[lab == i]).max() > 0.9 * (lab == i).sum()


def test_watershed_empty_and_bad_shape() -> None:
    p = np.zeros((3, 10, 10), np.float32)
    p[0] = 1
    assert instances_from_probs(p).max() == 0
    with pytest.raises(ValueError):
        instances_from_probs(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError):
        instances_from_probs(np.zeros((5, 4, 4), np.float32))


def test_aji_cases() -> None:
    t = np.zeros((10, 10), np.int32)
    t[1:4, 1:4] = 1
    t[6:9, 6:9] = 2
    assert aji(t, t) == 1.0
    assert aji(t, t * 7) == 1.0  # label values do not matter
    merged = (t > 0).astype(np.int32)  # one prediction covering both nuclei
    # G1 matches S (C=9, U=18), G2 also picks S (C=9, U=18): AJI = 18/36
    assert aji(t, merged) == pytest.approx(0.5)
    half = t.copy()
    half[6:9, 6:9] = 0  # second nucleus missed: C=9, U=9+9
    assert aji(t, half) == pytest.approx(0.5)
    extra = t.copy()
    extra[0, 9] = 3  # a false positive adds its area to U
    assert aji(t, extra) == pytest.approx(18 / 19)
    assert aji(np.zeros_like(t), np.zeros_like(t)) == 1.0
    assert aji(t, np.zeros_like(t)) == 0.0


def test_dice() -> None:
    a = np.zeros((4, 4), int)
    a[:2] = 1
    b = np.zeros((4, 4), int)
    b[1:3] = 5
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_search_watershed_finds_parameters_that_split_touching_discs() -> None:
    from shindan.nuclei.postprocess import DEFAULTS
    from shindan.nuclei.train import search_watershed

    truth = _two_touching_discs()
    p = _probs_from_instances(truth)
    # a small false-positive speck: the search should learn to drop it (smallest nucleus)
    p[:, 5:9, 5:9] = np.array([0.1, 0.8, 0.1], np.float32)[:, None, None]
    best = search_watershed([(truth, p, 1.0)])
    assert set(best["params"]) == set(DEFAULTS)
    assert best["aji"] > 0.85
    params = best["params"]
    lab = instances_from_probs(
        p, **{k: (round(v) if k.endswith("_px") else v) for k, v in params.items()}
    )
    assert lab.max() == 2 and aji(truth, lab) == pytest.approx(best["aji"], abs=1e-3)


def test_every_label_of_a_slide_is_one_region():
    from shindan.nuclei.segment import largest_pieces

    lab = np.zeros((20, 20), np.int32)
    lab[2:6, 2:6] = 1
    lab[10:12, 10:12] = 1  # a second, smaller piece of label 1: dropped
    lab[14:18, 2:6] = 2
    out = largest_pieces(lab)
    assert (out[2:6, 2:6] == 1).all() and not out[10:12, 10:12].any()
    assert (out[14:18, 2:6] == 2).all() and lab[10, 10] == 1  # input untouched
