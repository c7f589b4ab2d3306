"""Stain colours as optical densities (Beer-Lambert): RGB = 255 * exp(-sum(amount * OD)).

Materials are what the scene paints (cytoplasm, PAS-positive matrix, chromatin, collagen,
red cells, ink); a stain maps each to an optical-density vector. Values were matched by eye and
by k-means colour centres to the PAS (HuBMAP) and H&E (AAPI) reference tiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MATERIALS = ("cyto", "matrix", "chromatin", "collagen", "rbc")


def _od(rgb: tuple[float, float, float]) -> np.ndarray:
    return -np.log(np.asarray(rgb, np.float64) / 255.0)


# Colour of one unit of each material on white, per stain.
_BASE = {
    "pas": {
        "cyto": (172, 92, 178),
        "matrix": (140, 30, 140),
        "chromatin": (80, 75, 160),
        "collagen": (200, 150, 205),
        "rbc": (215, 110, 120),
        "glass": (243, 241, 245),
    },
    "he": {
        "cyto": (225, 135, 195),
        "matrix": (220, 125, 190),
        "chromatin": (105, 80, 160),
        "collagen": (246, 226, 238),
        "rbc": (220, 75, 90),
        "glass": (244, 243, 246),
    },
}


def make_palette(stain: str, seed: int) -> dict[str, Any]:
    """Per-slide optical densities: the stain's base colours, slightly varied by ``seed``.

    Returns
    -------
    dict
        ``od``: float32 (n_materials, 3); ``glass``: float32 (3,) glass optical density.
    """
    rng = np.random.default_rng([seed, 104729])
    base = _BASE[stain]
    od = np.stack([_od(base[m]) for m in MATERIALS])
    # Stain batches differ in strength (per material) and a little in hue (per channel).
    od *= rng.uniform(0.88, 1.12, (len(od), 1)) * rng.uniform(0.95, 1.05, (len(od), 3))
    glass = _od(base["glass"]) * rng.uniform(0.7, 1.3)
    # Eosin shows cytoplasmic granularity more than PAS does.
    texture = {"pas": 1.0, "he": 1.7}[stain]
    return {
        "od": od.astype(np.float32),
        "glass": glass.astype(np.float32),
        "texture": texture,
        "blur_um": float(rng.uniform(0.3, 0.55)),
    }
