"""Resample a series onto another grid (another phase's, or a small grid around a lesion)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from shindan.ct.dicom import Grid, Series

__all__ = ["AIR_HU", "resample", "resample_array"]

AIR_HU = -1000.0  # what lies outside a scanned volume


def resample(series: Series, grid: Grid, *, order: int = 1, cval: float = AIR_HU) -> np.ndarray:
    """Values of ``series`` (HU) at the voxel centres of ``grid``; see :func:`resample_array`."""
    return resample_array(series.hu, series.grid, grid, order=order, cval=cval)


def resample_array(
    volume: np.ndarray, source: Grid, grid: Grid, *, order: int = 1, cval: float = AIR_HU
) -> np.ndarray:
    """Values of ``volume`` (on ``source``) at the voxel centres of ``grid`` (patient mm).

    Parameters
    ----------
    volume : ndarray (Z, Y, X)
        Source values (not modified), ``source.shape``.
    source : Grid
        Where ``volume``'s voxels sit.
    grid : Grid
        Target planes; may differ in orientation, spacing, extent and slice positions.
    order : int
        Spline order for :func:`scipy.ndimage.map_coordinates` (1 = trilinear, 0 = nearest,
        e.g. for masks).
    cval : float
        Value for target voxels outside the source volume (HU; air by default).

    Returns
    -------
    ndarray (Z, Y, X) float32
        ``grid.shape``; a new array (the source is not modified).
    """
    nz, ny, nx = grid.shape
    out = np.empty(grid.shape, dtype=np.float32)
    src = np.asarray(volume, dtype=np.float32)
    upper = np.asarray(src.shape, dtype=np.float64) - 1
    rr, cc = np.meshgrid(
        np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij"
    )
    # One target plane at a time keeps the coordinate arrays small for whole volumes.
    for k in range(nz):
        index = np.stack([np.full_like(rr, k), rr, cc], axis=-1)
        src_idx = source.world_to_index(grid.index_to_world(index))  # (Y, X, 3)
        inside = np.all((src_idx >= -0.5) & (src_idx <= upper + 0.5), axis=-1)
        coords = np.clip(src_idx, 0, upper).transpose(2, 0, 1)
        plane = ndimage.map_coordinates(src, coords, order=order, mode="nearest", output=np.float32)
        out[k] = np.where(inside, plane, np.float32(cval))
    return out
