"""Label-map clean-up after the compartment model: specks of a class too small to be real.

A network that votes per pixel leaves specks: a few dozen pixels called glomerulus inside a
tubule, say. A glomerulus is never that small (the glomerulus table already ignores regions
under 2,000 µm²), and such a speck takes its area from the fibrosis and inflammation
denominators. The model card lists, per class, the smallest region that is kept
(``postprocess.min_region_um2``); smaller regions take the class that surrounds them most.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage import measure

from shindan.models.card import ModelCard


def min_region_areas(card: ModelCard) -> dict[int, float]:
    """Class index → smallest kept region (µm²), from ``postprocess.min_region_um2`` of a card.

    Raises
    ------
    ModelError
        If the card names a class it does not have.
    """
    from shindan.errors import ModelError

    rules = card.data.get("postprocess", {}).get("min_region_um2", {})
    unknown = set(rules) - set(card.classes)
    if unknown:
        raise ModelError(f"{card.name}: min_region_um2 names unknown class(es) {sorted(unknown)}")
    return {card.classes.index(name): float(area) for name, area in rules.items()}


def remove_small_regions(
    labels: np.ndarray, mpp: float, min_area_um2: Mapping[int, float]
) -> np.ndarray:
    """Relabel regions smaller than their class's minimum area to their most common neighbour.

    Parameters
    ----------
    labels : (H, W) integer array
        Class per pixel, at ``mpp`` µm/px. Not modified.
    mpp : float
        µm per pixel of ``labels``.
    min_area_um2 : mapping
        Class index → smallest region (µm², 8-connected) that is kept.

    Returns
    -------
    (H, W) array of the same dtype: regions below their minimum take the class most common in
    the one-pixel ring around them (unchanged when the ring is empty).

    Examples
    --------
    >>> lab = np.full((50, 50), 3, np.uint8)
    >>> lab[10:13, 10:13] = 2  # 9 px at 2 µm/px = 36 µm²
    >>> int(remove_small_regions(lab, 2.0, {2: 100.0}).max())
    3
    """
    out = labels.copy()
    px_area = mpp * mpp
    for cls, min_area in min_area_um2.items():
        regions = measure.label(labels == cls, connectivity=2)
        for r in measure.regionprops(regions):
            if r.area * px_area >= min_area:
                continue
            r0, c0, r1, c1 = r.bbox
            box = (slice(max(r0 - 1, 0), r1 + 1), slice(max(c0 - 1, 0), c1 + 1))
            comp = regions[box] == r.label
            ring = ndi.binary_dilation(comp, np.ones((3, 3), bool)) & ~comp
            around = out[box][ring]
            around = around[around != cls]
            if around.size:
                out[box][comp] = np.bincount(around).argmax()
    return out


# Near-black (every channel below this): blacked-out areas and scanner padding. Stained
# tissue is never this dark at biopsy resolution (dense nuclei keep a channel above 60).
BLACK_LEVEL = 31


def clear_black(labels: np.ndarray, slide, mpp: float, *, rows: int = 1024) -> np.ndarray:
    """``labels`` (on the slide's grid at ``mpp`` µm/px) with near-black pixels of the slide
    set to non-tissue (0): the compartment model files blacked-out areas under interstitium.
    The slide is read in strips of ``rows``; ``labels`` is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> from shindan.io.slide import ImageSlide
    >>> image = np.full((4, 4, 3), 200, np.uint8)
    >>> image[:2, :2] = 0  # blacked out
    >>> clear_black(np.ones((4, 4), np.uint8), ImageSlide.from_array(image, 1.0), 1.0)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [1, 1, 1, 1],
           [1, 1, 1, 1]], dtype=uint8)
    """
    from shindan.tiling import read_at_mpp

    out = np.array(labels, copy=True)
    h, w = out.shape
    for y in range(0, h, rows):
        n = min(rows, h - y)
        rgb = read_at_mpp(slide, (0, y), (w, n), mpp)
        out[y : y + n][rgb[..., :3].max(axis=-1) < BLACK_LEVEL] = 0
    return out
