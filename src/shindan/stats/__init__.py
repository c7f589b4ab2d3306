"""Statistics: classification metrics with confidence intervals, calibration, regression."""

from shindan.stats.metrics import bootstrap_auc, calibration, classification_report, youden_cutoff

__all__ = ["bootstrap_auc", "calibration", "classification_report", "youden_cutoff"]
