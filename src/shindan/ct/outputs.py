"""What the ``shindan ct`` commands write (light: the CLI checks ``--out`` without torch)."""

from __future__ import annotations

# The columns of ``ct predict``'s CSV (its header marks the file as shindan's).
PREDICTION_COLUMNS = (
    "case",
    "label",
    "prediction",
    "p_benign",
    "p_malignant",
    "age",
    "sex",
    "size_mm",
)
# What ``ct evaluate`` writes into its folder: a rerun replaces these, and nothing else.
EVALUATION_FILES = ("evaluation.json", "predictions.csv")
