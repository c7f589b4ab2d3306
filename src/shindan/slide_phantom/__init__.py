"""Synthetic kidney biopsy phantoms with exact ground truth (demo, tests, benchmarks).

A scene is an analytic description (tissue cores, glomeruli, tubules, vessels, nuclei) from
which any box renders at any downsample, tile by tile, with memory flat in slide size.

Examples
--------
>>> from shindan.slide_phantom import make_scene, render_rgb, render_labels
>>> scene = make_scene(1024, 1024, mpp=0.5, seed=1)
>>> render_rgb(scene, (0, 0, 512, 512)).shape
(512, 512, 3)
"""

from shindan.slide_phantom.api import render_labels, render_nuclei, render_rgb
from shindan.slide_phantom.scene import PhantomScene, make_scene
from shindan.slide_phantom.truth import truth, truth_maps
from shindan.slide_phantom.writer import write_phantom

__all__ = [
    "PhantomScene",
    "make_scene",
    "render_labels",
    "render_nuclei",
    "render_rgb",
    "truth",
    "truth_maps",
    "write_phantom",
]
