"""Kidney biopsy quantification: compartments, interstitial nuclei, fibrosis and inflammation."""

from shindan.kidney.scores import COMPARTMENTS, ScoreAccumulator, kidney_scores

__all__ = ["COMPARTMENTS", "ScoreAccumulator", "kidney_scores"]
