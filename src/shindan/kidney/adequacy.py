"""Banff-style specimen adequacy: glomeruli and arteries counted, with the verdict.

Rule (Banff 97, Racusen et al., Kidney Int 1999;55:713-723): a biopsy with at least 10
glomeruli and at least 2 arteries is *adequate*; 7 glomeruli and 1 artery is the *minimal*
sample; fewer is *unsatisfactory*. Glomeruli are those of the glomerulus table that need no
review (see :mod:`shindan.kidney.glomeruli`); arteries are vessel regions of the compartment
map at least :data:`ARTERY_MIN_DIAMETER_UM` across (equivalent diameter), smaller ones being
arterioles.
"""

from __future__ import annotations

import numpy as np

from shindan.kidney.scores import VESSEL

RULE = (
    "Banff 97 (Racusen et al., Kidney Int 1999;55:713-723): adequate >= 10 glomeruli and "
    ">= 2 arteries; minimal >= 7 glomeruli and >= 1 artery; below that unsatisfactory"
)
ADEQUATE = (10, 2)
MINIMAL = (7, 1)
# Equivalent diameter separating arteries from arterioles. On the AAPI H&E cut-outs (0.25
# µm/px) 60 µm puts 42 of 49 arteries (86%) above and 19 of 23 arterioles (83%) below.
ARTERY_MIN_DIAMETER_UM = 60.0


def count_arteries(
    labels: np.ndarray, mpp: float, min_diameter_um: float = ARTERY_MIN_DIAMETER_UM
) -> int:
    """Vessel regions (label :data:`~shindan.kidney.scores.VESSEL`) at least
    ``min_diameter_um`` across (equivalent diameter) in a label map at ``mpp`` µm/px.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((100, 100), np.uint8)
    >>> labels[5:45, 5:45] = 4  # 40 px = 80 µm at 2 µm/px: an artery
    >>> labels[70:80, 70:80] = 4  # 20 µm: an arteriole
    >>> count_arteries(labels, mpp=2.0)
    1
    """
    from skimage import measure

    lab = measure.label(np.asarray(labels) == VESSEL, connectivity=2)
    if lab.max() == 0:
        return 0
    areas = np.bincount(lab.ravel())[1:] * mpp * mpp
    diameters = 2 * np.sqrt(areas / np.pi)
    return int((diameters >= min_diameter_um).sum())


def adequacy(glomeruli: int, arteries: int) -> dict[str, object]:
    """The Banff verdict for ``glomeruli`` and ``arteries`` counts (see :data:`RULE`).

    Examples
    --------
    >>> adequacy(12, 2)["verdict"], adequacy(8, 1)["verdict"], adequacy(12, 0)["verdict"]
    ('adequate', 'minimal', 'unsatisfactory')
    """
    if glomeruli >= ADEQUATE[0] and arteries >= ADEQUATE[1]:
        verdict = "adequate"
    elif glomeruli >= MINIMAL[0] and arteries >= MINIMAL[1]:
        verdict = "minimal"
    else:
        verdict = "unsatisfactory"
    return {
        "glomeruli": int(glomeruli),
        "arteries": int(arteries),
        "verdict": verdict,
        "rule": RULE,
        "artery_min_diameter_um": ARTERY_MIN_DIAMETER_UM,
    }
