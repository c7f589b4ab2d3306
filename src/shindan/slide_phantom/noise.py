"""Coordinate-hashed noise: a global position always yields the same value.

Every random quantity drawn at render time comes from an integer hash of global lattice
indices (or structure indices), never from a per-tile random generator, so a tile rendered
alone equals the same area cut from a larger render.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint32(0x9E3779B1)
_M1 = np.uint32(0x85EBCA6B)
_M2 = np.uint32(0xC2B2AE35)
_INV24 = np.float32(1.0 / (1 << 24))


def _mix(h: np.ndarray) -> np.ndarray:
    # murmur3 finaliser: good avalanche with only shifts, xors and wrapping multiplies
    h = h ^ (h >> np.uint32(16))
    h = h * _M1
    h = h ^ (h >> np.uint32(13))
    h = h * _M2
    return h ^ (h >> np.uint32(16))


def hash32(*keys: np.ndarray | int) -> np.ndarray:
    """Hash integer arrays (broadcast together) to uint32.

    Parameters
    ----------
    *keys : int or ndarray of int
        Any integers (negative ones wrap); the result broadcasts their shapes.

    Returns
    -------
    ndarray of uint32
    """
    with np.errstate(over="ignore"):
        h = np.atleast_1d(np.uint32(0x1234567))
        for k in keys:
            k = np.atleast_1d(np.asarray(k)).astype(np.int64).astype(np.uint32)
            h = _mix(h ^ (k * _GOLDEN + np.uint32(0x7F4A7C15) + (h << np.uint32(6))))
    return h


def hash_uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform float32 in [0, 1) from integer keys (see :func:`hash32`)."""
    return (hash32(*keys) >> np.uint32(8)).astype(np.float32) * _INV24


def _smooth(f: np.ndarray) -> np.ndarray:
    return f * f * (np.float32(3.0) - np.float32(2.0) * f)


def grid_noise(xs: np.ndarray, ys: np.ndarray, scale: float, key: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] on the grid ``ys x xs`` (level-0 pixel coordinates).

    Parameters
    ----------
    xs, ys : ndarray of float64, shape (w,) and (h,)
        Pixel-centre coordinates in level-0 pixels.
    scale : float
        Lattice spacing in level-0 pixels (the feature size).
    key : int
        Distinguishes independent noise fields.

    Returns
    -------
    ndarray of float32, shape (h, w)
    """
    gx, gy = xs / scale, ys / scale
    ix, iy = np.floor(gx), np.floor(gy)
    sx = _smooth((gx - ix).astype(np.float32))
    sy = _smooth((gy - iy).astype(np.float32))[:, None]
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    c0, r0 = int(ix.min()), int(iy.min())
    cols = np.arange(c0, int(ix.max()) + 2)
    rows = np.arange(r0, int(iy.max()) + 2)
    lat = hash_uniform(rows[:, None], cols[None, :], key) * np.float32(2.0) - np.float32(1.0)
    jx = ix - c0
    # Interpolate along x on the lattice rows, then along y: same arithmetic as point_noise.
    lx = lat[:, jx] * (np.float32(1.0) - sx) + lat[:, jx + 1] * sx
    jy = iy - r0
    return lx[jy] * (np.float32(1.0) - sy) + lx[jy + 1] * sy


def point_noise(x: np.ndarray, y: np.ndarray, scale: float, key: int) -> np.ndarray:
    """The same field as :func:`grid_noise`, at arbitrary points (arrays of equal shape)."""
    gx, gy = np.asarray(x, np.float64) / scale, np.asarray(y, np.float64) / scale
    ix, iy = np.floor(gx), np.floor(gy)
    sx = _smooth((gx - ix).astype(np.float32))
    sy = _smooth((gy - iy).astype(np.float32))
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)

    def lat(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return hash_uniform(r, c, key) * np.float32(2.0) - np.float32(1.0)

    one = np.float32(1.0)
    top = lat(iy, ix) * (one - sx) + lat(iy, ix + 1) * sx
    bot = lat(iy + 1, ix) * (one - sx) + lat(iy + 1, ix + 1) * sx
    return (top * (one - sy) + bot * sy).reshape(np.shape(x))


def grid_fbm(
    xs: np.ndarray, ys: np.ndarray, scale: float, key: int, octaves: int = 3, min_scale: float = 0.0
) -> np.ndarray:
    """Fractal sum of :func:`grid_noise` octaves (halving scale, halving amplitude).

    Octaves finer than ``min_scale`` (level-0 px, e.g. twice the output pixel size) are left
    out, which band-limits the texture at coarse pyramid levels instead of aliasing it.
    """
    out = np.zeros((len(ys), len(xs)), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        s = scale / (2**o)
        if s < min_scale:
            break
        out += np.float32(amp) * grid_noise(xs, ys, s, key * 131 + o)
        total += amp
        amp *= 0.5
    return out / np.float32(total) if total else out


def _feature(r: np.ndarray, c: np.ndarray, scale: float, key: int, jitter: float):
    """Feature point (level-0 px) of lattice cell (r, c): jittered cell centre."""
    jx = hash_uniform(r, c, key, 1) - np.float32(0.5)
    jy = hash_uniform(r, c, key, 2) - np.float32(0.5)
    return ((c + 0.5 + jitter * jx) * scale, (r + 0.5 + jitter * jy) * scale)


def worley_grid(
    xs: np.ndarray, ys: np.ndarray, scale: float, key: int, jitter: float = 0.9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cellular noise on a grid: distances to the nearest and second-nearest feature points.

    Parameters
    ----------
    xs, ys : ndarray of float64
        Pixel-centre coordinates (level-0 px).
    scale : float
        Mean spacing of feature points, level-0 px.

    Returns
    -------
    f1, f2 : ndarray of float32, shape (h, w)
        Distances in level-0 px (``f2 - f1`` is about twice the distance to the cell wall).
    cell : ndarray of uint32, shape (h, w)
        A hash of the nearest feature point (to vary cells individually).
    """
    ix = np.floor(xs / scale).astype(np.int64)
    iy = np.floor(ys / scale).astype(np.int64)
    c0, r0 = int(ix.min()) - 1, int(iy.min()) - 1
    cols = np.arange(c0, int(ix.max()) + 2)
    rows = np.arange(r0, int(iy.max()) + 2)
    fx, fy = _feature(rows[:, None], cols[None, :], scale, key, jitter)
    cid = hash32(rows[:, None], cols[None, :], key, 3)
    jx, jy = ix - c0, iy - r0
    shape = (len(ys), len(xs))
    f1 = np.full(shape, np.inf, np.float32)
    f2 = np.full(shape, np.inf, np.float32)
    cell = np.zeros(shape, np.uint32)
    for dy in (-1, 0, 1):
        rr = (jy + dy)[:, None]
        for dx in (-1, 0, 1):
            cc = (jx + dx)[None, :]
            ddx = (xs[None, :] - fx[rr, cc]).astype(np.float32)
            ddy = (ys[:, None] - fy[rr, cc]).astype(np.float32)
            dist = np.sqrt(ddx * ddx + ddy * ddy)
            closer = dist < f1
            f2 = np.where(closer, f1, np.minimum(f2, dist))
            cell = np.where(closer, cid[rr, cc], cell)
            f1 = np.where(closer, dist, f1)
    return f1, f2, cell


def worley_points(x: np.ndarray, y: np.ndarray, scale: float, key: int, jitter: float = 0.9):
    """:func:`worley_grid` at arbitrary points (arrays of equal shape): ``f1, f2, cell``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ix, iy = np.floor(x / scale).astype(np.int64), np.floor(y / scale).astype(np.int64)
    f1 = np.full(x.shape, np.inf, np.float32)
    f2 = np.full(x.shape, np.inf, np.float32)
    cell = np.zeros(x.shape, np.uint32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            fx, fy = _feature(iy + dy, ix + dx, scale, key, jitter)
            ddx, ddy = (x - fx).astype(np.float32), (y - fy).astype(np.float32)
            dist = np.sqrt(ddx * ddx + ddy * ddy)
            closer = dist < f1
            f2 = np.where(closer, f1, np.minimum(f2, dist))
            cell = np.where(closer, hash32(iy + dy, ix + dx, key, 3).reshape(x.shape), cell)
            f1 = np.where(closer, dist, f1)
    return f1, f2, cell
