"""Tubule geometry shared by the renderer, the nucleus placement and the calibration.

A tubule is its Voronoi cell (bounded by the bisectors with its neighbours and by tangent
planes of nearby glomeruli and vessels), inset by an interstitial gap and rounded, intersected
with an ellipse; both shrink with the slide-wide ``shrink`` that sets the fibrosis.
"""

from __future__ import annotations

import numpy as np

from shindan.slide_phantom import shapes
from shindan.slide_phantom.noise import point_noise
from shindan.slide_phantom.params import GAP_MIN_UM, KEY_WOBBLE, MAX_SCALE, ROUND_UM, WOBBLE_UM

F32 = np.float32


def tubule_geometry(tub: dict, idx: np.ndarray, t: float, mpp: float) -> dict[str, np.ndarray]:
    """Per-tubule derived sizes at slide-wide shrink ``t`` (level-0 px; arrays over ``idx``)."""
    ti = shapes.tubule_params(t, tub["v"][idx])
    d = float(tub["spacing"])
    scale = F32(MAX_SCALE) - F32(MAX_SCALE - 0.5) * ti
    a, b = tub["a"][idx] * scale, tub["b"][idx] * scale
    gap = F32(GAP_MIN_UM / mpp) + ti * F32(0.2 * d)
    mt = F32(1.0 / mpp) + ti * F32(1.6 / mpp)  # thickened basement membrane in atrophy
    inner = np.minimum(b, F32(0.5 * d) - gap)  # rough inner radius
    distal = tub["distal"][idx]
    lum = tub["lum"][idx]
    share = np.where(distal, F32(0.35) + F32(0.2) * lum, F32(0.6) + F32(0.45) * lum)
    epi = inner * share * (F32(1) - F32(0.2) * ti)
    epi = np.minimum(epi, F32(16.0 / mpp))
    radius = np.minimum(F32(ROUND_UM / mpp) + ti * F32(6.0 / mpp), F32(0.8) * (F32(0.5 * d) - gap))
    return {"t": ti, "a": a, "b": b, "gap": gap, "mt": mt, "epi": epi, "radius": radius}


def tubule_frame(qx, qy, tub: dict, i):
    """Offsets ``q`` from tubule ``i``'s seed in its ellipse frame."""
    ang = tub["angle"][i]
    c, s = np.cos(ang).astype(F32), np.sin(ang).astype(F32)
    return qx * c + qy * s, qy * c - qx * s


def wobble_points(px, py, mpp: float) -> np.ndarray:
    """Outline irregularity of tubules at global points, level-0 px (added to the SDF)."""
    return F32(WOBBLE_UM[1] / mpp) * point_noise(px, py, WOBBLE_UM[0] / mpp, KEY_WOBBLE)


def tubule_sdf_parts(lx, ly, cell_sdf, geo: dict, j):
    """Tubule signed distance: its ellipse intersected with its rounded, inset Voronoi cell."""
    return np.maximum(shapes.ellipse_sdf(lx, ly, geo["a"][j], geo["b"][j]), cell_sdf)


def tubule_sdf(qx, qy, tub: dict, geo: dict, i: int | np.ndarray, j, n: int | None = None):
    """Signed distance to tubule ``i`` (row ``j`` of ``geo``) at offsets ``q`` from its seed."""
    lx, ly = tubule_frame(qx, qy, tub, i)
    cs = shapes.rounded_cell_sdf(
        qx, qy, tub["hp_ux"][i], tub["hp_uy"][i], tub["hp_h"][i], geo["gap"][j], geo["radius"][j], n
    )
    return tubule_sdf_parts(lx, ly, cs, geo, j)
