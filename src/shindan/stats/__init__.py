"""Statistics: classification metrics with confidence intervals, calibration, regression,
and cohort statistics (``shindan stats``: correlation, eGFR slopes, prognosis).

Names are imported on first use, so ``shindan --help`` loads no numpy/scikit-learn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bootstrap_auc", "calibration", "classification_report", "youden_cutoff"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from shindan.stats import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'shindan.stats' has no attribute {name!r}")
