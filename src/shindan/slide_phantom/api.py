"""Public rendering functions: RGB, compartment labels and nucleus instances of a box."""

from __future__ import annotations

import numpy as np

from shindan.slide_phantom.render import render
from shindan.slide_phantom.scene import PhantomScene

Box = tuple[int, int, int, int]

LABELS = {0: "non_tissue", 1: "interstitium", 2: "glomerulus", 3: "tubule", 4: "vessel"}


def render_rgb(scene: PhantomScene, box: Box, downsample: float = 1.0) -> np.ndarray:
    """Render the slide's colours in a box.

    Parameters
    ----------
    scene : PhantomScene
    box : (x, y, w, h)
        Level-0 pixels; may extend beyond the slide (more glass).
    downsample : float
        Level-0 pixels per output pixel (rendered directly, not resized).

    Returns
    -------
    ndarray of uint8, shape (ceil(h / downsample), ceil(w / downsample), 3)
    """
    return render(scene, box, downsample, rgb=True)["rgb"]


def render_labels(scene: PhantomScene, box: Box, downsample: float = 1.0) -> np.ndarray:
    """Compartment labels at pixel centres, same grid as :func:`render_rgb`.

    Returns
    -------
    ndarray of uint8
        0 non-tissue, 1 interstitium, 2 glomerulus, 3 tubule (lumen included),
        4 vessel (lumen included).
    """
    return render(scene, box, downsample, rgb=False, labels=True)["labels"]


def render_nuclei(scene: PhantomScene, box: Box, downsample: float = 1.0) -> np.ndarray:
    """Nucleus instance labels at pixel centres, same grid as :func:`render_rgb`.

    Returns
    -------
    ndarray of int32
        0 background; every nucleus has one id, unique across the whole slide.
    """
    return render(scene, box, downsample, rgb=False, nuclei=True)["nuclei"]
