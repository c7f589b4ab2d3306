"""The compartment label codes: the contract's five classes, and the partial-label codes that
training uses where an image's truth is incomplete.

Codes: 0 non-tissue, 1 interstitium, 2 glomerulus, 3 tubule, 4 vessel (the contract's, as in
``compartments.png``); 255 (:data:`~shindan.io.annotations.IGNORE`) unknown, no loss;
254 :data:`NOT_GLOMERULUS` on images where only glomeruli were outlined (the loss says such a
pixel is one of :data:`LABEL_SETS`); 200 + a bit mask (:func:`other_code`) for "none of the
classes annotated in this image".

Examples
--------
>>> from shindan.kidney.labels import CLASSES, GLOMERULUS
>>> CLASSES[GLOMERULUS]
'glomerulus'
"""

from __future__ import annotations

from collections.abc import Sequence

from shindan.io.annotations import IGNORE

NON_TISSUE, INTERSTITIUM, GLOMERULUS, TUBULE, VESSEL = range(5)
CLASSES = ["non-tissue", "interstitium", "glomerulus", "tubule", "vessel"]
NOT_GLOMERULUS = 254
# "Not glomerulus" leaves vessel out: vessels are a few % of cortex, and with vessel allowed
# the model learnt to file all PAS tissue under vessel (free under the partial label), which
# then leaked into pale H&E tubules.
LABEL_SETS = {NOT_GLOMERULUS: [NON_TISSUE, INTERSTITIUM, TUBULE]}
# User annotations with ``--unannotated other``: an image's unannotated pixels are "none of the
# classes annotated in it", written as OTHER_BASE + the bit mask of the classes still allowed.
OTHER_BASE = 200


def other_code(annotated: Sequence[int]) -> int:
    """The partial-label code of "none of ``annotated``" (IGNORE when that rules out every
    class, and so says nothing).

    Examples
    --------
    >>> other_code([GLOMERULUS]) - OTHER_BASE == 0b11011  # any class but glomerulus
    True
    >>> other_code(range(5)) == IGNORE
    True
    """
    allowed = sum(1 << c for c in range(len(CLASSES)) if c not in set(annotated))
    return OTHER_BASE + allowed if allowed else IGNORE


def other_label_sets(codes: Sequence[int]) -> dict[int, list[int]]:
    """The classes each :func:`other_code` in ``codes`` allows (other codes are skipped)."""
    top = OTHER_BASE + (1 << len(CLASSES))
    return {
        int(c): [k for k in range(len(CLASSES)) if (int(c) - OTHER_BASE) >> k & 1]
        for c in codes
        if OTHER_BASE < c < top
    }
