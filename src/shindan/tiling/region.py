"""Read regions of a slide on a target µm/px grid: best pyramid level, then resampling."""

from __future__ import annotations

import cv2
import numpy as np

from shindan.errors import InputError
from shindan.io.slide import Slide


def require_mpp(slide: Slide) -> float:
    """The slide's µm/px, or a one-line error telling the user to pass ``--mpp``."""
    if slide.mpp is None:
        raise InputError(f"{slide.path.name}: no µm/px in the file's metadata; pass --mpp")
    return slide.mpp


def require_colour(slide: Slide) -> None:
    """A one-line error for a greyscale image: the stain-colour models would give numbers
    that mean nothing (a grey copy of an H&E crop scored fibrosis 0.09 against 0.21)."""
    if slide.greyscale:
        raise InputError(f"{slide.path.name}: a greyscale image; give the stained tissue in colour")


def read_at_mpp(
    slide: Slide, location: tuple[int, int], size: tuple[int, int], mpp: float
) -> np.ndarray:
    """Read an RGB region on the grid of ``mpp`` µm/px.

    Parameters
    ----------
    slide : Slide
    location : (x, y)
        Top-left corner in pixels of the target grid (may be negative or beyond the slide:
        padded with white glass).
    size : (width, height)
        Output size in target-grid pixels.
    mpp : float
        Target µm/px.

    Returns
    -------
    ndarray of uint8, shape (height, width, 3)
    """
    scale = mpp / require_mpp(slide)  # level-0 px per target px
    level = slide.best_level_for_downsample(scale)
    ds = slide.level_downsamples[level]
    w, h = size
    x0, y0 = location[0] * scale, location[1] * scale  # level-0 origin (float)
    # Read whole level pixels covering the box, then resample onto the exact target grid.
    lx0, ly0 = int(np.floor(x0 / ds)), int(np.floor(y0 / ds))
    lx1, ly1 = int(np.ceil((x0 + w * scale) / ds)), int(np.ceil((y0 + h * scale) / ds))
    lw, lh = max(lx1 - lx0, 1), max(ly1 - ly0, 1)
    region = slide.read_region((int(round(lx0 * ds)), int(round(ly0 * ds))), level, (lw, lh))
    if (lw, lh) == (w, h) and abs(x0 / ds - lx0) < 1e-6 and abs(y0 / ds - ly0) < 1e-6:
        return region
    f = scale / ds  # level px per target px
    # Affine map from target pixel centres to level pixel centres (cv2 uses pixel centres).
    m = np.array([[f, 0, x0 / ds - lx0 + 0.5 * f - 0.5], [0, f, y0 / ds - ly0 + 0.5 * f - 0.5]])
    interp = cv2.INTER_AREA if f > 1 else cv2.INTER_LINEAR
    if f > 1:  # INTER_AREA is only honoured by resize: pre-shrink, then align with warpAffine
        small = cv2.resize(
            region,
            (max(int(round(lw / f)), 1), max(int(round(lh / f)), 1)),
            interpolation=cv2.INTER_AREA,
        )
        sx, sy = small.shape[1] / lw, small.shape[0] / lh
        m = np.array(
            [[f * sx, 0, (m[0, 2] + 0.5) * sx - 0.5], [0, f * sy, (m[1, 2] + 0.5) * sy - 0.5]]
        )
        region, interp = small, cv2.INTER_LINEAR
    return cv2.warpAffine(
        region,
        m,
        (w, h),
        flags=interp | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(255, 255, 255),
    )
