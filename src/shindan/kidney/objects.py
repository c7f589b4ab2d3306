"""Glomeruli scored as objects: found, missed, and false glomeruli per mm² of tissue.

Pixel Dice on crops centred on a glomerulus hides over-calling: a model that also calls
tubule clusters "glomerulus" loses little there, but on a whole image it reports glomeruli
that are not there, and the glomerulus table counts them. On whole images where every
glomerulus is outlined (HuBMAP), each predicted glomerulus region is matched to the outlines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from skimage import measure

from shindan.io.annotations import IGNORE
from shindan.kidney.glomeruli import MIN_GLOMERULUS_UM2
from shindan.kidney.labels import GLOMERULUS, NON_TISSUE

# A predicted region is a real glomerulus when at least this share of it lies on an outline
# (or on the unscored rim around one): a true glomerulus with a wide margin still counts.
HIT_SHARE = 0.2
# An outlined glomerulus is found when at least this share of it is predicted glomerulus.
FOUND_SHARE = 0.5


def glomerulus_objects(
    labels: np.ndarray,
    truth: np.ndarray,
    mpp: float,
    *,
    min_area_um2: float = MIN_GLOMERULUS_UM2,
) -> dict[str, float]:
    """Object counts of one image's predicted glomeruli against its outlines.

    Parameters
    ----------
    labels : (H, W) integer array
        Predicted classes (after the model's clean-up), at ``mpp`` µm/px. Not modified.
    truth : (H, W) integer array
        Known glomeruli (:data:`~shindan.kidney.labels.GLOMERULUS`), glass
        (:data:`~shindan.kidney.labels.NON_TISSUE`), unscored pixels (255) and other tissue (any
        other code), on the same grid. Every glomerulus of the image must be outlined.
    mpp : float
        µm per pixel.
    min_area_um2 : float
        Predicted regions smaller than this are not glomeruli (the glomerulus table's floor).

    Returns
    -------
    dict
        ``true``: outlined glomeruli; ``found``: those at least :data:`FOUND_SHARE` predicted;
        ``predicted``: predicted regions of at least ``min_area_um2``; ``false``: predicted
        regions with under :data:`HIT_SHARE` of their pixels on an outline or its unscored
        rim; ``tissue_mm2``: area that is not glass.

    Examples
    --------
    >>> truth = np.full((200, 200), 254, np.uint8)
    >>> truth[20:80, 20:80] = GLOMERULUS
    >>> pred = np.zeros_like(truth)
    >>> pred[25:80, 20:80] = GLOMERULUS  # the outlined one, found
    >>> pred[120:180, 120:180] = GLOMERULUS  # on tubules: a false glomerulus
    >>> r = glomerulus_objects(pred, truth, 1.0)
    >>> r["true"], r["found"], r["predicted"], r["false"]
    (1, 1, 2, 1)
    """
    glom = truth == GLOMERULUS
    near = glom | (truth == IGNORE)
    regions = measure.label(labels == GLOMERULUS, connectivity=2)
    predicted = false = 0
    for r in measure.regionprops(regions):
        if r.area * mpp * mpp < min_area_um2:
            continue
        predicted += 1
        rows, cols = r.coords[:, 0], r.coords[:, 1]
        if near[rows, cols].mean() < HIT_SHARE:
            false += 1
    outlined = measure.label(glom, connectivity=2)
    hit = labels == GLOMERULUS
    found = sum(
        hit[o.coords[:, 0], o.coords[:, 1]].mean() >= FOUND_SHARE
        for o in measure.regionprops(outlined)
    )
    return {
        "true": int(outlined.max()),
        "found": int(found),
        "predicted": predicted,
        "false": false,
        "tissue_mm2": float((truth != NON_TISSUE).sum() * mpp * mpp / 1e6),
    }


def summarise_objects(per_image: Iterable[Mapping[str, float]]) -> dict[str, Any]:
    """Totals of :func:`glomerulus_objects` over images, with false glomeruli per mm² of
    tissue and the share of outlined glomeruli found.

    Examples
    --------
    >>> a = {"true": 3, "found": 2, "predicted": 4, "false": 1, "tissue_mm2": 1.0}
    >>> summarise_objects([a, a])["false_per_mm2"]
    1.0
    """
    rows = list(per_image)
    tot = {k: sum(r[k] for r in rows) for k in ("true", "found", "predicted", "false")}
    mm2 = sum(r["tissue_mm2"] for r in rows)
    return {
        "glomeruli_true": tot["true"],
        "glomeruli_found": tot["found"],
        "glomeruli_predicted": tot["predicted"],
        "false_glomeruli": tot["false"],
        "tissue_mm2": round(mm2, 3),
        "false_per_mm2": round(tot["false"] / mm2, 3) if mm2 else None,
        "found_share": round(tot["found"] / tot["true"], 4) if tot["true"] else None,
    }
