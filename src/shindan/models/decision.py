"""A classifier's calibrated probabilities and its decision rule, as its card states them.

Why: a network's softmax is rarely calibrated and the 0.5 cut-off of a two-class model
rarely travels to other labs. The card's ``decision`` section holds a temperature (fitted on
the validation split's logits) and, for two classes, a cut-off on the positive class's
calibrated probability chosen on the validation split by a stated rule (fitted by
:mod:`shindan.classify.calibrate`). Every caller
(``classify predict``/``evaluate``, the kidney glomerulus table, ``explain``) gets its
probabilities from :class:`shindan.engine.Predictor` (temperature applied) and its labels from
:meth:`Decision.labels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decision:
    """Temperature and (two classes) positive-class cut-off of a classifier.

    Parameters
    ----------
    temperature : float
        Logits are divided by it before the softmax (1 = as trained).
    positive : int or None
        Index of the positive class; ``None``: the label is the arg-max.
    threshold : float or None
        The positive class is the label when its calibrated probability is ``>= threshold``.

    Examples
    --------
    >>> d = Decision(temperature=2.0, positive=0, threshold=0.3)
    >>> p = d.calibrate(np.array([[0.8, 0.2], [0.2, 0.8]]))
    >>> np.round(p[:, 0], 3).tolist()
    [0.667, 0.333]
    >>> d.labels(p).tolist()
    [0, 0]
    """

    temperature: float = 1.0
    positive: int | None = None
    threshold: float | None = None

    @classmethod
    def from_card(cls, card: Any) -> Decision:
        """The decision of a :class:`~shindan.models.ModelCard` (or card dict); plain arg-max
        with temperature 1 when the card has no ``decision`` section."""
        data = card if isinstance(card, Mapping) else card.data
        d = data.get("decision") or {}
        classes = list(data.get("classes", []))
        pos = d.get("positive")
        if pos is not None and (pos not in classes or len(classes) != 2):
            from shindan.errors import ModelError

            raise ModelError(
                f"{data.get('name', 'card')}: decision.positive {pos!r} must be one of two "
                f"classes ({', '.join(classes)})"
            )
        return cls(
            temperature=float(d.get("temperature", 1.0)),
            positive=None if pos is None else classes.index(pos),
            threshold=None if d.get("threshold") is None else float(d["threshold"]),
        )

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities from plain softmax ones (same as ``softmax(z/T)``)."""
        return apply_temperature(probs, self.temperature)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Class index per row of calibrated probabilities (N, K)."""
        p = np.asarray(probs)
        if self.positive is None or self.threshold is None:
            return p.argmax(axis=1)
        other = 1 - self.positive
        return np.where(p[:, self.positive] >= self.threshold, self.positive, other)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)``: temperature scaling applied to probabilities.

    ``log p`` differs from the logits by a per-row constant, which the softmax ignores.

    Examples
    --------
    >>> np.round(apply_temperature(np.array([[0.9, 0.1]]), 2.0), 3).tolist()
    [[0.75, 0.25]]
    """
    p = np.asarray(probs, np.float64)
    if temperature == 1.0:
        return p.astype(np.asarray(probs).dtype, copy=True)
    out = softmax(np.log(np.maximum(p, 1e-12)) / temperature)
    return out.astype(np.asarray(probs).dtype)
