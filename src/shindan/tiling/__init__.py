"""Tiling: tissue detection, tile grids and reading regions at a target µm/px."""

from shindan.tiling.grid import TileGrid
from shindan.tiling.region import read_at_mpp, require_colour, require_mpp
from shindan.tiling.tissue import TissueMask, detect_tissue

__all__ = [
    "TileGrid",
    "TissueMask",
    "detect_tissue",
    "read_at_mpp",
    "require_colour",
    "require_mpp",
]
