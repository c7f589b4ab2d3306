"""Kidney biopsy quantification: compartments, interstitial nuclei, fibrosis and inflammation."""

from typing import Any

# Loaded on first use: `shindan.kidney.cli` runs this file at every start, and the scores
# need numpy only when a command computes them.
_EXPORTS = ("COMPARTMENTS", "ScoreAccumulator", "kidney_scores")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from shindan.kidney import scores

        return getattr(scores, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMPARTMENTS", "ScoreAccumulator", "kidney_scores"]
