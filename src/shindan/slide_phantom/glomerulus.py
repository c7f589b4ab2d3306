"""Glomerulus geometry: Bowman's capsule, an off-centre lobulated tuft and capillary loops.

Shared by the painter (grids) and the nucleus placement (points), so nuclei sit in the tuft's
walls and mesangium, never in an open capillary lumen.
"""

from __future__ import annotations

import numpy as np

from shindan.slide_phantom.noise import hash_uniform, worley_grid, worley_points
from shindan.slide_phantom.scene import PhantomScene

F32 = np.float32
CAPILLARY_UM = 12.0  # spacing of capillary loops
KEY_CAP = 91
SOLID_SHARE = 0.33  # cells of the pattern that are mesangium / collapsed, not open lumen


def capsule_thickness(scene: PhantomScene, gi) -> np.ndarray:
    return np.where(scene.glomeruli["sclerosed"][gi], F32(5.0 / scene.mpp), F32(2.2 / scene.mpp))


def inner_radius(scene: PhantomScene, gi) -> np.ndarray:
    """Inner radius of Bowman's capsule, level-0 px."""
    return scene.glomeruli["r"][gi].astype(F32) - capsule_thickness(scene, gi)


def tuft_sdf(scene: PhantomScene, gi, qx, qy) -> np.ndarray:
    """Approximate signed distance to the tuft, at offsets ``q`` from the glomerulus centre."""
    g, mpp = scene.glomeruli, scene.mpp
    rin = inner_radius(scene, gi)
    bowman = rin * (F32(1) - g["shrink"][gi].astype(F32)) + F32(3.0 / mpp)
    ang = g["pole"][gi].astype(F32) + F32(np.pi)
    shift = F32(0.8) * bowman
    dx, dy = qx - shift * np.cos(ang), qy - shift * np.sin(ang)
    rt0 = (rin - shift - F32(1.5 / mpp)) / F32(1.03)
    theta = np.arctan2(dy, dx)
    lob = F32(0)
    for m, amp in ((2, 0.015), (3, 0.025), (5, 0.025), (7, 0.02), (9, 0.015), (13, 0.01)):
        ph = F32(2 * np.pi) * hash_uniform(scene.seed, 201, gi, m)
        lob = lob + F32(amp) * np.sin(F32(m) * theta + ph)
    return np.sqrt(dx * dx + dy * dy) - rt0 * (F32(1) + lob)


def _lumen(f1, f2, cell, mpp):
    s = F32(CAPILLARY_UM / mpp)
    wall = (f2 - f1) * F32(0.5)
    u = (cell >> np.uint32(8)).astype(F32) * F32(1.0 / (1 << 24))
    # Round lumens of varied size, never closer than a thin wall to the neighbour's.
    radius = s * (F32(0.28) + F32(0.25) * np.abs(F32(2) * u - F32(1)))
    lumen_d = np.maximum(F32(1.0 / mpp) - wall, f1 - radius)
    return lumen_d, u < F32(SOLID_SHARE), u > F32(0.9)


def capillaries_grid(scene: PhantomScene, xs: np.ndarray, ys: np.ndarray):
    """Capillary lumen signed distance, solid-cell and red-cell flags on a grid (level-0 px)."""
    f1, f2, cell = worley_grid(xs, ys, CAPILLARY_UM / scene.mpp, KEY_CAP)
    return _lumen(f1, f2, cell, scene.mpp)


def capillaries_points(scene: PhantomScene, px: np.ndarray, py: np.ndarray):
    """:func:`capillaries_grid` at points."""
    f1, f2, cell = worley_points(px, py, CAPILLARY_UM / scene.mpp, KEY_CAP)
    return _lumen(f1, f2, cell, scene.mpp)
