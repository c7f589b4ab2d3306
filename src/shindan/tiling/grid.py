"""A grid of overlapping tiles over an image on the target µm/px grid."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``size`` px overlapping by ``overlap`` px over a ``width`` x ``height`` image.

    Tile (row, col) has its top-left corner at ``(col * stride - overlap // 2,
    row * stride - overlap // 2)`` so every image pixel lies in some tile's inner part and
    the grid is the same wherever a sub-region of it is processed.
    """

    width: int
    height: int
    size: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0 or not 0 <= self.overlap < self.size:
            raise ValueError(f"bad tile size/overlap: {self.size}/{self.overlap}")

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def offset(self) -> int:
        return -(self.overlap // 2)

    def _count(self, extent: int) -> int:
        return max(1, math.ceil((extent - self.offset - self.size) / self.stride) + 1)

    @property
    def rows(self) -> int:
        return self._count(self.height)

    @property
    def cols(self) -> int:
        return self._count(self.width)

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left (x, y) of a tile in image pixels (may be negative)."""
        return col * self.stride + self.offset, row * self.stride + self.offset

    def cols_touching(self, x0: int, x1: int) -> range:
        """Tile columns whose footprint intersects image columns [x0, x1)."""
        first = max(0, math.floor((x0 - self.offset - self.size) / self.stride) + 1)
        last = min(self.cols - 1, math.floor((x1 - 1 - self.offset) / self.stride))
        return range(first, last + 1)

    def __len__(self) -> int:
        return self.rows * self.cols
