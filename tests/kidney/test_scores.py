import numpy as np
import pytest

from shindan.kidney import ScoreAccumulator, kidney_scores


def test_scores_by_hand():
    labels = np.array([[0, 1, 1, 1], [3, 3, 3, 3], [2, 2, 4, 1]], np.uint8)
    nuclei = np.array([[0, 5, 0, 0], [7, 0, 0, 0], [0, 0, 0, 9]])
    s = kidney_scores(labels, mpp=0.5, nuclei=nuclei)
    # interstitium 4 px, tubule 4 px; nuclei pixels in interstitium: (0,1) and (2,3) = 2 px
    assert s["interstitial_fibrosis"] == pytest.approx(4 / 8)
    assert s["inflammation"] == pytest.approx(2 / 8)
    assert s["areas_um2"] == {
        "non_tissue": 0.25,
        "interstitium": 1.0,
        "glomerulus": 0.5,
        "tubule": 1.0,
        "vessel": 0.25,
    }
    assert s["interstitial_nuclei_um2"] == pytest.approx(0.5)


def test_blocks_add_up_to_whole():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (64, 80)).astype(np.uint8)
    whole = kidney_scores(labels, 0.7)
    acc = ScoreAccumulator()
    for r in range(0, 64, 17):
        for c in range(0, 80, 23):
            acc.add_labels(labels[r : r + 17, c : c + 23], 0.7)
    assert acc.scores()["interstitial_fibrosis"] == pytest.approx(whole["interstitial_fibrosis"])


def test_no_tubule_or_interstitium_gives_none():
    s = kidney_scores(np.zeros((4, 4), np.uint8), 1.0)
    assert s["interstitial_fibrosis"] is None and s["inflammation"] is None


def test_inputs_not_mutated():
    labels = np.ones((5, 5), np.uint8)
    nuclei = np.eye(5, dtype=np.int32)
    before = labels.copy(), nuclei.copy()
    kidney_scores(labels, 1.0, nuclei)
    assert np.array_equal(labels, before[0]) and np.array_equal(nuclei, before[1])
