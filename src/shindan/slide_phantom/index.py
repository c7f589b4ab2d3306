"""A uniform grid spatial index: which items' bounding boxes touch a box."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GridIndex:
    """Items bucketed by the grid cells their bounding boxes overlap (CSR layout).

    Attributes
    ----------
    cell : float
        Cell size in level-0 pixels.
    nx, ny : int
        Grid size in cells; the grid starts at level-0 (0, 0); items beyond are clamped in.
    ptr, idx : ndarray of int64
        Items of cell ``c = cy * nx + cx`` are ``idx[ptr[c]:ptr[c + 1]]``.
    """

    cell: float
    nx: int
    ny: int
    ptr: np.ndarray
    idx: np.ndarray

    @classmethod
    def build(
        cls,
        x0: np.ndarray,
        y0: np.ndarray,
        x1: np.ndarray,
        y1: np.ndarray,
        width: int,
        height: int,
        cell: float,
    ) -> GridIndex:
        """Index items with level-0 bounding boxes ``[x0, x1] x [y0, y1]``."""
        nx, ny = max(1, int(np.ceil(width / cell))), max(1, int(np.ceil(height / cell)))
        cx0 = np.clip(np.floor(np.asarray(x0) / cell), 0, nx - 1).astype(np.int64)
        cx1 = np.clip(np.floor(np.asarray(x1) / cell), 0, nx - 1).astype(np.int64)
        cy0 = np.clip(np.floor(np.asarray(y0) / cell), 0, ny - 1).astype(np.int64)
        cy1 = np.clip(np.floor(np.asarray(y1) / cell), 0, ny - 1).astype(np.int64)
        wx, wy = cx1 - cx0 + 1, cy1 - cy0 + 1
        n = wx * wy
        item = np.repeat(np.arange(len(n)), n)
        # Position of each (item, cell) pair within its item's block of cells.
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        cells = (cy0[item] + k // wx[item]) * nx + cx0[item] + k % wx[item]
        order = np.argsort(cells, kind="stable")
        counts = np.bincount(cells, minlength=nx * ny)
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(float(cell), nx, ny, ptr, item[order].astype(np.int64))

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Sorted unique indices of items whose cells touch the level-0 box [x0, x1] x [y0, y1]."""
        cx0 = int(np.clip(np.floor(x0 / self.cell), 0, self.nx - 1))
        cx1 = int(np.clip(np.floor(x1 / self.cell), 0, self.nx - 1))
        cy0 = int(np.clip(np.floor(y0 / self.cell), 0, self.ny - 1))
        cy1 = int(np.clip(np.floor(y1 / self.cell), 0, self.ny - 1))
        parts = []
        for cy in range(cy0, cy1 + 1):
            a, b = self.ptr[cy * self.nx + cx0], self.ptr[cy * self.nx + cx1 + 1]
            if b > a:
                parts.append(self.idx[a:b])
        if not parts:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate(parts))
