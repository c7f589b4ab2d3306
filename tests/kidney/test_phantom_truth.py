"""The score arithmetic is exact on phantoms when the true label maps are fed in."""

import pytest

from shindan.kidney import kidney_scores
from shindan.slide_phantom import make_scene, truth, truth_maps


@pytest.mark.parametrize("mpp", [0.5, 1.0, 2.0])
def test_scores_equal_truth_on_true_maps(mpp):
    scene = make_scene(1536, 1024, mpp=0.5, fibrosis=0.35, inflammation=0.04, seed=3)
    labels, nuclei = truth_maps(scene, mpp)
    ours = kidney_scores(labels, mpp, nuclei)
    true = truth(scene, mpp)
    assert ours["interstitial_fibrosis"] == pytest.approx(true["interstitial_fibrosis"], abs=1e-12)
    assert ours["inflammation"] == pytest.approx(true["inflammation"], abs=1e-12)
    for name, area in true["areas_um2"].items():
        assert ours["areas_um2"][name] == pytest.approx(area, rel=1e-9, abs=1e-6)
    assert 0 < ours["interstitial_fibrosis"] < 1 and ours["inflammation"] > 0
