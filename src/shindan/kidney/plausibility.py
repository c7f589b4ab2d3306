"""Does the analysed tissue look like kidney? Warnings for the headline of a case.

A compartment model scores any tissue as kidney; these checks say when its map does not look
like kidney cortex, so a non-kidney slide or a failed segmentation is not read as a biopsy:

* regions called glomerulus but marked for review (wider than a glomerulus): not counted;
* no glomerulus at all;
* glomeruli covering more than :data:`MAX_GLOMERULUS_SHARE` of the tissue (kidney cortex: a
  few per cent to about 15%);
* tubule regions whose median equivalent diameter lies outside :data:`TUBULE_DIAMETER_UM`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from shindan.kidney.scores import TUBULE

# Glomerulus area over tissue area above this is not kidney cortex (typical: 5-15%).
MAX_GLOMERULUS_SHARE = 0.3
# Median equivalent diameter of tubule regions in kidney: single tubules 30-80 µm, touching
# ones more; outside this range the "tubules" are something else.
TUBULE_DIAMETER_UM = (30.0, 300.0)
# Tubule regions smaller than this (µm²) are specks, not counted in the median.
MIN_TUBULE_UM2 = 300.0


def tubule_diameter_um(labels: np.ndarray, mpp: float) -> float | None:
    """Median equivalent diameter (µm) of tubule regions of at least :data:`MIN_TUBULE_UM2`
    in a label map at ``mpp`` µm/px (None when there is none).

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((60, 60), np.uint8)
    >>> labels[10:30, 10:30] = 3  # 20 px at 2 µm/px
    >>> round(tubule_diameter_um(labels, 2.0))
    45
    """
    from skimage import measure

    lab = measure.label(np.asarray(labels) == TUBULE, connectivity=1)
    if lab.max() == 0:
        return None
    areas = np.bincount(lab.ravel())[1:] * mpp * mpp
    areas = areas[areas >= MIN_TUBULE_UM2]
    if areas.size == 0:
        return None
    return float(np.median(2 * np.sqrt(areas / np.pi)))


def plausibility_warnings(
    areas_um2: Mapping[str, float],
    glomeruli: Sequence[Mapping[str, object]],
    tubule_diameter: float | None,
) -> list[str]:
    """Headline warnings for a case (empty when it looks like kidney cortex).

    Parameters
    ----------
    areas_um2 : compartment name -> area (``scores.json`` ``areas_um2``)
    glomeruli : the glomerulus table (each with ``review``: None or why)
    tubule_diameter : :func:`tubule_diameter_um`

    Examples
    --------
    >>> areas = {"interstitium": 40e3, "glomerulus": 380e3, "tubule": 165e3, "vessel": 64e3}
    >>> for w in plausibility_warnings(areas, [{"review": "wider"}], 25.0):
    ...     print(w)  # doctest: +ELLIPSIS
    1 region called glomerulus needs review (wider) and is not counted
    no glomerulus found: not kidney cortex, or not segmented as kidney
    glomeruli cover 59% of the tissue (kidney cortex: about 5-15%): ...
    tubule regions measure 25 µm across (median; kidney: 30-300 µm): ...
    """
    warnings = []
    review = [g for g in glomeruli if g.get("review")]
    if review:
        reasons = sorted({str(g["review"]) for g in review})
        n = len(review)
        warnings.append(
            f"{n} region{'s' if n > 1 else ''} called glomerulus need{'s' if n == 1 else ''} "
            f"review ({'; '.join(reasons)}) and {'is' if n == 1 else 'are'} not counted"
        )
    if len(glomeruli) == len(review):
        warnings.append("no glomerulus found: not kidney cortex, or not segmented as kidney")
    tissue = sum(v for k, v in areas_um2.items() if k != "non_tissue")
    share = areas_um2.get("glomerulus", 0.0) / tissue if tissue > 0 else 0.0
    if share > MAX_GLOMERULUS_SHARE:
        warnings.append(
            f"glomeruli cover {share:.0%} of the tissue (kidney cortex: about 5-15%): "
            "not kidney, or not segmented as kidney"
        )
    lo, hi = TUBULE_DIAMETER_UM
    if tubule_diameter is not None and not lo <= tubule_diameter <= hi:
        warnings.append(
            f"tubule regions measure {tubule_diameter:.0f} µm across (median; kidney: "
            f"{lo:.0f}-{hi:.0f} µm): not kidney tubules"
        )
    return warnings
