"""From per-pixel probabilities (background / interior / boundary) to nucleus instances.

Markers are the confident interiors (interior probability above a threshold, boundary pixels
excluded), and a marker-controlled watershed (scikit-image) on the inverted interior
probability grows them over the whole nucleus foreground, which separates touching nuclei
along their predicted boundary.
"""

from __future__ import annotations

import numpy as np

DEFAULTS = {"interior_threshold": 0.5, "foreground_threshold": 0.5, "min_marker_px": 4,
            "min_size_px": 12}


def instances_from_probs(
    probs: np.ndarray,
    *,
    interior_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    min_marker_px: int = 4,
    min_size_px: int = 12,
) -> np.ndarray:
    """Instance labels (int32, 0 background, 1..N) from (3, H, W) probabilities.

    Parameters
    ----------
    probs : ndarray (3, H, W)
        Softmax probabilities of background, nucleus interior, nucleus boundary.
    interior_threshold : float
        Interior probability a pixel needs to seed a nucleus.
    foreground_threshold : float
        ``interior + boundary`` probability a pixel needs to belong to any nucleus.
    min_marker_px, min_size_px : int
        Seeds and nuclei smaller than this (pixels of this grid) are dropped.
    """
    from scipy import ndimage
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    p = np.asarray(probs, np.float32)
    if p.ndim != 3 or p.shape[0] != 3:
        raise ValueError(f"expected probabilities of shape (3, H, W), got {p.shape}")
    fg = (p[1] + p[2]) > foreground_threshold
    seeds = (p[1] > interior_threshold) & (p[1] > p[2]) & fg
    seeds = remove_small_objects(seeds, max_size=max(0, min_marker_px - 1))
    markers, n = ndimage.label(seeds)
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    lab = watershed(-p[1], markers, mask=fg)
    if min_size_px > 1:
        sizes = np.bincount(lab.ravel())
        small = sizes < min_size_px
        small[0] = False
        lab[small[lab]] = 0
    # renumber 1..N consecutively
    ids = np.unique(lab)
    ids = ids[ids > 0]
    lut = np.zeros(int(lab.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[lab]
