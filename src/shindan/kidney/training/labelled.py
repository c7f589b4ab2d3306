"""Labelled images and cut-outs: the one in-memory form of every compartment training source.

Label codes are :mod:`shindan.kidney.labels`'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LabelledImage:
    """An image and its label map at the training µm/px (``mpp``)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    stain: str
    mpp: float


@dataclass
class Cutout:
    """One structure: RGB crop, its mask, its class code, at ``mpp``."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    code: int
    mpp: float
    harmonised: np.ndarray | None = None


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(rows, cols) of ``shape`` scaled by ``factor``, at least 1 each."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def split_columns(img: LabelledImage, at: float) -> tuple[LabelledImage, LabelledImage]:
    """Left and right parts of an image cut at fraction ``at`` of its width (spatial hold-out)."""
    c = int(round(img.label.shape[1] * at))
    return (
        LabelledImage(
            f"{img.name}-left", img.image[:, :c].copy(), img.label[:, :c].copy(), img.stain, img.mpp
        ),
        LabelledImage(
            f"{img.name}-right",
            img.image[:, c:].copy(),
            img.label[:, c:].copy(),
            img.stain,
            img.mpp,
        ),
    )
