"""Signed distance functions of the phantom's structures (negative inside, level-0 pixels).

The same functions serve the renderer (on pixel grids, via broadcasting) and the scene builder
(at scattered points, for calibration and placement), so what is calibrated is what is drawn.
"""

from __future__ import annotations

import numpy as np

from shindan.slide_phantom.noise import grid_noise, point_noise

F32 = np.float32
FAR = F32(1e9)  # padding half-plane offset: never the nearest edge


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (rounds the corner where ``a`` and ``b`` cross over ``k``)."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(F32(k) - np.abs(a - b), F32(0)) * F32(1.0 / k)
    return np.minimum(a, b) - h * h * F32(k * 0.25)


def ellipse_sdf(lx: np.ndarray, ly: np.ndarray, a: np.ndarray | float, b: np.ndarray | float):
    """Approximate signed distance to an axis-aligned ellipse (exact on the boundary).

    ``lx, ly`` are coordinates in the ellipse frame; ``a, b`` its semi-axes (broadcastable).
    """
    ia, ib = F32(1) / np.asarray(a, F32), F32(1) / np.asarray(b, F32)
    ux, uy = lx * ia, ly * ib
    k0 = np.sqrt(ux * ux + uy * uy)
    vx, vy = ux * ia, uy * ib
    k1 = np.sqrt(vx * vx + vy * vy)
    # k0/k1 tends to a radius between b and a; the epsilons keep the centre finite and inside.
    eps = F32(1e-6)
    return (k0 - F32(1)) * ((k0 + eps) / (k1 + eps * np.minimum(ia, ib)))


def rotate(qx: np.ndarray, qy: np.ndarray, cos: float, sin: float):
    """Coordinates ``q`` expressed in a frame rotated by the angle with the given cos/sin."""
    return qx * F32(cos) + qy * F32(sin), qy * F32(cos) - qx * F32(sin)


# --- tubules -------------------------------------------------------------------------------


def cell_edges(qx, qy, ux, uy, h, j: int):
    """Distance of points ``q`` inside half-plane ``j`` (``q . u <= h``; last axis indexes j)."""
    return h[..., j] - (qx * ux[..., j] + qy * uy[..., j])


def rounded_cell_sdf(qx, qy, ux, uy, h, inset, radius, n: int | None = None):
    """Signed distance to a convex cell shrunk by ``inset`` with corners rounded by ``radius``.

    The cell is bounded by half-planes ``q . u <= h`` (on the last axis of ``ux, uy, h``;
    only the first ``n`` are used). Straight stretches of the boundary stay exactly ``inset``
    from the cell's edges; corners become arcs ("rounded box" construction).
    """
    n = ux.shape[-1] if n is None else n
    off = inset + radius
    o2 = qmax = None
    for j in range(n):
        q = off - cell_edges(qx, qy, ux, uy, h, j)
        p = np.maximum(q, F32(0))
        o2 = p * p if o2 is None else o2 + p * p
        qmax = q if qmax is None else np.maximum(qmax, q)
    return np.sqrt(o2) + np.minimum(qmax, F32(0)) - radius


def rounded_cell_sdf_from_edges(edges: np.ndarray, inset, radius):
    """:func:`rounded_cell_sdf` from precomputed edge distances ``(..., n)``."""
    q = (inset + radius)[..., None] - edges
    p = np.maximum(q, F32(0))
    return np.sqrt(np.sum(p * p, axis=-1)) + np.minimum(q.max(axis=-1), F32(0)) - radius


def tubule_params(t: float, v: np.ndarray, spread: float = 0.6) -> np.ndarray:
    """Per-tubule shrink in [0, 1] from the slide-wide shrink ``t`` and per-tubule draws ``v``."""
    return np.clip(F32(t) + F32(spread) * (np.asarray(v, F32) - F32(0.5)), F32(0), F32(1))


# --- tissue cores --------------------------------------------------------------------------


def core_frame(px, py, core: dict, i: int):
    """Core ``i``'s (along, across) coordinates of points, the across one minus the bend."""
    dx, dy = px - core["ox"][i], py - core["oy"][i]
    ux, uy = core["ux"][i], core["uy"][i]
    u = dx * ux + dy * uy
    v = dy * ux - dx * uy
    bend = core["bend_a"][i] * np.sin(u * core["bend_k"][i] + core["bend_p"][i])
    return u, v - bend


def core_sdf_raw(u, v, length: float, hw: float):
    """Capsule-shaped band of half-width ``hw`` along ``u`` in [0, length]."""
    du = np.maximum(np.maximum(-u, u - length), 0)
    return np.sqrt(du * du + v * v) - hw


def edge_noise_grid(xs, ys, core: dict, key: int, min_scale: float = 0.0) -> np.ndarray:
    """Irregular tissue border offset (level-0 px) on a grid."""
    s = core["edge_scale"]
    out = F32(core["edge_amp"][0]) * grid_noise(xs, ys, s[0], key)
    for j in (1, 2):
        if s[j] >= min_scale:
            out += F32(core["edge_amp"][j]) * grid_noise(xs, ys, s[j], key + j)
    return out


def edge_noise_points(px, py, core: dict, key: int) -> np.ndarray:
    s = core["edge_scale"]
    out = F32(core["edge_amp"][0]) * point_noise(px, py, s[0], key)
    for j in (1, 2):
        out += F32(core["edge_amp"][j]) * point_noise(px, py, s[j], key + j)
    return out


def tissue_sdf_points(px: np.ndarray, py: np.ndarray, core: dict, key: int) -> np.ndarray:
    """Signed distance to tissue (all cores) at points, level-0 px."""
    d = np.full(np.shape(px), FAR, F32)
    for i in range(len(core["ox"])):
        u, v = core_frame(px, py, core, i)
        d = np.minimum(d, core_sdf_raw(u, v, core["length"][i], core["hw"][i]).astype(F32))
    return d - edge_noise_points(px, py, core, key)
