"""From per-pixel probabilities (background / interior / boundary [/ core]) to nucleus instances.

Markers are the confident interiors (interior probability above a threshold, boundary pixels
excluded), or with a fourth "core" class the confident cores, and a marker-controlled
watershed (scikit-image) on the inverted interior (plus core) probability grows them over the
whole nucleus foreground, which separates touching nuclei along their predicted boundary.
Optionally (``marker_h`` > 0) a seed that still holds several nuclei is split at the h-maxima
of its distance transform.
"""

from __future__ import annotations

import numpy as np

DEFAULTS = {
    "interior_threshold": 0.5,
    "foreground_threshold": 0.5,
    "min_marker_px": 4,
    "min_size_px": 12,
    "marker_h": 0.0,
}


def instances_from_probs(
    probs: np.ndarray,
    *,
    interior_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    min_marker_px: int = 4,
    min_size_px: int = 12,
    marker_h: float = 0.0,
) -> np.ndarray:
    """Instance labels (int32, 0 background, 1..N) from (3, H, W) or (4, H, W) probabilities.

    Parameters
    ----------
    probs : ndarray (3, H, W) or (4, H, W)
        Softmax probabilities of background, nucleus interior, nucleus boundary, and
        optionally nucleus core (see :func:`shindan.nuclei.data.instance_targets`).
    interior_threshold : float
        Interior probability (core probability, with a core class) a pixel needs to seed a
        nucleus.
    foreground_threshold : float
        Nucleus probability (1 - background) a pixel needs to belong to any nucleus.
    min_marker_px, min_size_px : int
        Seeds and nuclei smaller than this (pixels of this grid) are dropped.
    marker_h : float
        When > 0, each seed is split into one marker per h-maximum of its distance
        transform (``h`` in pixels of this grid), which separates touching nuclei whose
        predicted boundary is incomplete; 0 keeps one marker per seed.
    """
    from scipy import ndimage
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    p = np.asarray(probs, np.float32)
    if p.ndim != 3 or p.shape[0] not in (3, 4):
        raise ValueError(f"expected probabilities of shape (3 or 4, H, W), got {p.shape}")
    fg = (1.0 - p[0]) > foreground_threshold
    if p.shape[0] == 4:  # seeds from the cores; flood from the centres outwards
        seeds = (p[3] > interior_threshold) & fg
        depth = p[1] + 2.0 * p[3]
    else:
        seeds = (p[1] > interior_threshold) & (p[1] > p[2]) & fg
        depth = p[1]
    seeds = remove_small_objects(seeds, max_size=max(0, min_marker_px - 1))
    markers, n = ndimage.label(seeds)
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    surface = -depth
    if marker_h > 0:
        markers, dist = _split_seeds(seeds, markers, marker_h)
        surface = surface - dist  # inside seeds, flood from the peaks outwards
    lab = watershed(surface, markers, mask=fg)
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


def _split_seeds(seeds: np.ndarray, markers: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """One marker per h-maximum of the seeds' distance transform (seeds too thin to hold an
    h-maximum keep their own marker), and that distance transform (pixels)."""
    from scipy import ndimage
    from skimage.morphology import h_maxima

    dist = ndimage.distance_transform_edt(seeds).astype(np.float32)
    peaks = h_maxima(dist, h).astype(bool) & seeds
    peak_lab, n = ndimage.label(peaks, structure=np.ones((3, 3), bool))
    has_peak = np.zeros(int(markers.max()) + 1, bool)
    has_peak[markers[peaks]] = True
    rest = seeds & ~has_peak[markers]
    rest_lab, _ = ndimage.label(rest)
    out = np.where(rest, rest_lab + n, peak_lab).astype(np.int32)
    return out, dist
