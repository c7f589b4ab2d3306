"""Regression: the shipped models on a `shindan demo` phantom score within ±0.05 of truth."""

from __future__ import annotations

import pytest

from shindan.kidney.demo import DEFAULT_SIZE, run_demo


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_shipped_models_match_phantom_truth(tmp_path, seed: int) -> None:
    result, true = run_demo(tmp_path / "demo", size=DEFAULT_SIZE, seed=seed, progress=False)
    s = result.scores
    assert abs(s["interstitial_fibrosis"] - true["interstitial_fibrosis"]) <= 0.05
    assert abs(s["inflammation"] - true["inflammation"]) <= 0.05
    assert (tmp_path / "demo" / "truth.json").is_file()
