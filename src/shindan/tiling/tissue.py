"""Tissue detection at low resolution for PAS, H&E and trichrome; ignores glass, dust and pen."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology

from shindan.io.slide import Slide
from shindan.tiling.region import read_at_mpp, require_mpp

# Bounds of the Otsu threshold on the stain score max(saturation, 1 - value): glass on a
# white-balanced scan stays below MIN_THRESHOLD, pale stained tissue above MAX_THRESHOLD.
MIN_THRESHOLD, MAX_THRESHOLD = 0.08, 0.2


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask and its µm/px."""

    mask: np.ndarray
    mpp: float

    def fraction(self, box: tuple[float, float, float, float], mpp: float) -> float:
        """Tissue fraction inside ``box`` = (x, y, w, h) given in pixels of the ``mpp`` grid."""
        f = mpp / self.mpp
        x, y, w, h = box
        r0, r1 = int(np.floor(y * f)), int(np.ceil((y + h) * f))
        c0, c1 = int(np.floor(x * f)), int(np.ceil((x + w) * f))
        r0, c0 = max(r0, 0), max(c0, 0)
        sub = self.mask[r0 : max(r1, r0), c0 : max(c1, c0)]
        return float(sub.mean()) if sub.size else 0.0


def tissue_mask_from_rgb(
    image: np.ndarray,
    mpp: float,
    *,
    min_area_um2: float = 20_000.0,
    min_hole_um2: float = 5_000.0,
) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB image.

    Tissue is stained, so it is saturated or dark compared with glass; Otsu on a stain score
    (saturation + darkness) separates them. Pen ink (strongly saturated blue/green/black, far
    from any stain) is removed, and objects smaller than ``min_area_um2`` (dust) are dropped.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
    mpp : float
        µm/px of ``image``.
    min_area_um2, min_hole_um2 : float
        Smallest tissue piece kept and largest hole filled, in µm².
    """
    # uint8 HSV from OpenCV (H in 0..179): a whole-slide thumbnail stays 3 bytes a pixel.
    hsv = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0].astype(np.float32) * 2
    sat = hsv[..., 1].astype(np.float32) / 255
    val = hsv[..., 2].astype(np.float32) / 255
    score = np.maximum(sat, 1.0 - val)
    # Near-black: scanner padding and blacked-out areas. Neither tissue nor glass: they are
    # left out of the threshold and may lie between pieces of tissue without cutting them.
    # Next to black, pixels mix with it (resampling, JPEG): there darkness says nothing, but
    # saturation, which darkening keeps, still tells stained tissue from grey glass.
    black = val < 0.12
    rim = ndi.binary_dilation(black, morphology.disk(2)) & ~black
    score = np.where(rim, sat, score)
    # Marker ink: green/blue hues more saturated than trichrome's aniline blue.
    ink = (hue > 70) & (hue < 260) & (sat > 0.6) & (val < 0.8)
    pen = ndi.binary_dilation(ink, morphology.disk(2)) | black
    # Otsu without ink and black: with a black border in the histogram it would split black
    # from everything else and call the stained tissue glass. Capped at MAX_THRESHOLD: an
    # image with no glass (a crop full of tissue) has no glass mode, and Otsu would split
    # the tissue itself.
    rest = score[~(pen | rim)]
    otsu = filters.threshold_otsu(rest) if rest.size and np.ptp(rest) > 0 else 1.0
    thr = min(max(otsu, MIN_THRESHOLD), MAX_THRESHOLD)
    tissue = (score > thr) & ~pen
    px_area = mpp * mpp
    tissue = ndi.binary_closing(tissue, morphology.disk(1))
    tissue = morphology.remove_small_holes(tissue, max_size=int(min_hole_um2 / px_area))
    # Size a piece with the tissue it touches across black areas: black painted over a
    # tissue-filled crop must not cut it into fragments that each look like dust.
    groups, n = ndi.label(tissue | ndi.binary_dilation(black, morphology.disk(3)))
    sizes = np.bincount(groups[tissue], minlength=n + 1)
    tissue &= sizes[groups] >= min_area_um2 / px_area
    # Holes are filled (lumina, fat), but a black area inside tissue stays out.
    return (ndi.binary_fill_holes(tissue) & ~black) if tissue.any() else tissue


def detect_tissue(slide: Slide, mpp: float = 8.0, max_size: int = 2048) -> TissueMask:
    """Tissue mask of a whole slide at ``mpp`` µm/px, coarser when the mask would be wider
    than ``max_size`` px (memory stays bounded for any slide).

    Examples
    --------
    >>> from shindan.io import open_slide
    >>> from shindan.tiling import detect_tissue
    >>> tm = detect_tissue(open_slide("CMU-1-Small-Region.svs"))  # doctest: +SKIP
    >>> tm.mask.mean() > 0.2  # doctest: +SKIP
    True
    """
    w0, h0 = slide.dimensions
    s_mpp = require_mpp(slide)
    mpp = max(mpp, s_mpp, max(w0, h0) * s_mpp / max_size)
    w, h = max(int(round(w0 * s_mpp / mpp)), 1), max(int(round(h0 * s_mpp / mpp)), 1)
    # Read in strips: the pyramid level it resamples from can be several times larger.
    thumb = np.concatenate(
        [read_at_mpp(slide, (0, y), (w, min(512, h - y)), mpp) for y in range(0, h, 512)]
    )
    return TissueMask(tissue_mask_from_rgb(thumb, mpp), mpp)
