"""The analytic scene: where the tissue, glomeruli, vessels, tubules and loose nuclei are.

All positions and sizes are stored in level-0 pixels; biological sizes are set in µm
(``params.py``) and converted with the slide's µm/px. Nuclei belonging to structures are not
stored: they are derived at render time from hashes of the structure index (``nuclei.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shindan.errors import InputError
from shindan.slide_phantom.calibrate import (
    PointProbe,
    calibrate,
    place_inter_nuclei,
    sample_tissue,
)
from shindan.slide_phantom.index import GridIndex
from shindan.slide_phantom.layout import layout_cores, place_artifacts, place_circles, place_tubules
from shindan.slide_phantom.palette import make_palette
from shindan.slide_phantom.params import MAX_SCALE, SLOTS


@dataclass
class PhantomScene:
    """Analytic description of a synthetic kidney biopsy slide.

    Attributes
    ----------
    width, height : int
        Level-0 size in pixels.
    mpp : float
        Micrometres per level-0 pixel.
    fibrosis, inflammation, sclerosed_fraction : float
        Requested parameters (the realised values are in :func:`shindan.slide_phantom.truth`).
    stain : str
        ``"pas"`` or ``"he"``.
    artifacts : bool
        Whether dust and a pen mark lie on the glass.
    seed : int
    cores, glomeruli, vessels, tubules, inter_nuclei, dust, pen : dict of ndarray
        Structure tables, one row per item, level-0 pixels.
    shrink : float
        Slide-wide tubule shrink in [0, 1], calibrated so the interstitial fraction matches
        ``fibrosis``.
    palette : dict
        Optical densities per material (see ``palette.py``).
    index : dict of GridIndex
        Per-table spatial index for fast per-tile lookup.
    id_base : dict of int
        First nucleus id of each structure kind.
    """

    width: int
    height: int
    mpp: float
    fibrosis: float
    inflammation: float
    sclerosed_fraction: float
    stain: str
    artifacts: bool
    seed: int
    cores: dict[str, Any]
    glomeruli: dict[str, np.ndarray]
    vessels: dict[str, np.ndarray]
    tubules: dict[str, np.ndarray]
    inter_nuclei: dict[str, np.ndarray]
    dust: dict[str, np.ndarray]
    pen: dict[str, np.ndarray]
    shrink: float
    palette: dict[str, Any]
    index: dict[str, GridIndex] = field(repr=False)
    id_base: dict[str, int] = field(repr=False)

    def um(self, value: float) -> float:
        """Convert micrometres to level-0 pixels."""
        return value / self.mpp

    @property
    def params(self) -> dict[str, Any]:
        """The parameters the scene was made with."""
        return {
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "fibrosis": self.fibrosis,
            "inflammation": self.inflammation,
            "sclerosed_fraction": self.sclerosed_fraction,
            "stain": self.stain,
            "artifacts": self.artifacts,
            "seed": self.seed,
        }

    @property
    def max_nucleus_id(self) -> int:
        return int(self.id_base["end"])


def make_scene(
    width: int,
    height: int,
    mpp: float = 0.5,
    *,
    fibrosis: float = 0.3,
    inflammation: float = 0.03,
    sclerosed_fraction: float = 0.2,
    stain: str = "pas",
    artifacts: bool = False,
    seed: int = 0,
) -> PhantomScene:
    """Lay out a synthetic kidney biopsy: tissue cores, glomeruli, vessels, tubules, nuclei.

    Parameters
    ----------
    width, height : int
        Slide size in level-0 pixels.
    mpp : float
        Micrometres per level-0 pixel; all biological sizes are set in µm.
    fibrosis : float
        Target interstitial fraction, interstitium ÷ (tubule + interstitium) area, in [0, 1).
    inflammation : float
        Target interstitial nuclei area ÷ (tubule + interstitium) area, in [0, 1).
    sclerosed_fraction : float
        Share of glomeruli that are globally sclerosed, in [0, 1].
    stain : {"pas", "he"}
    artifacts : bool
        Put dust specks and a pen stroke on the glass (never labelled as tissue).
    seed : int
        Everything, including the slide's colour variation, follows from it.

    Returns
    -------
    PhantomScene
    """
    if width < 64 or height < 64:
        raise InputError(f"phantom size must be at least 64x64 pixels, got {width}x{height}")
    if not (np.isfinite(mpp) and 0.05 <= mpp <= 20):
        raise InputError(f"mpp must be in [0.05, 20] µm/px, got {mpp}")
    for name, val, hi in (
        ("fibrosis", fibrosis, 0.95),
        ("inflammation", inflammation, 0.5),
        ("sclerosed_fraction", sclerosed_fraction, 1.0),
    ):
        if not (0 <= val <= hi):
            raise InputError(f"{name} must be in [0, {hi}], got {val}")
    if stain not in ("pas", "he"):
        raise InputError(f"stain must be 'pas' or 'he', got {stain!r}")
    rng = np.random.default_rng([seed, 7919])
    w, h = int(width), int(height)
    cores = layout_cores(w, h, mpp, rng)
    glom, vessels = place_circles(cores, w, h, mpp, rng, sclerosed_fraction)
    circles = (
        np.concatenate([glom["x"], vessels["x"]]),
        np.concatenate([glom["y"], vessels["y"]]),
        np.concatenate([glom["r"], vessels["r"]]),
    )
    tub = place_tubules(cores, circles, w, h, mpp, rng)
    probe = PointProbe(cores, glom, vessels, tub, mpp)
    px, py, stride = sample_tissue(cores, w, h)
    t, _ = calibrate(probe, px, py, fibrosis)
    inter = place_inter_nuclei(probe, px, py, stride, t, inflammation, mpp, rng)
    if artifacts:
        dust, pen = place_artifacts(cores, w, h, mpp, rng)
    else:
        dust = {k: np.zeros(0) for k in ("x", "y", "r")}
        pen = {"x": np.zeros(0), "y": np.zeros(0), "hw": np.zeros(0)}
    cell = 256.0 / mpp
    pad = 2.0 / mpp
    ta = tub["a"] * MAX_SCALE
    index = {
        "tubule": GridIndex.build(
            tub["x"] - ta - pad,
            tub["y"] - ta - pad,
            tub["x"] + ta + pad,
            tub["y"] + ta + pad,
            w,
            h,
            cell,
        ),
        "glomerulus": GridIndex.build(
            glom["x"] - glom["r"] - pad,
            glom["y"] - glom["r"] - pad,
            glom["x"] + glom["r"] + pad,
            glom["y"] + glom["r"] + pad,
            w,
            h,
            cell,
        ),
        "vessel": GridIndex.build(
            vessels["x"] - vessels["r"] - pad,
            vessels["y"] - vessels["r"] - pad,
            vessels["x"] + vessels["r"] + pad,
            vessels["y"] + vessels["r"] + pad,
            w,
            h,
            cell,
        ),
        "inter": GridIndex.build(
            inter["x"] - inter["a"] - pad,
            inter["y"] - inter["a"] - pad,
            inter["x"] + inter["a"] + pad,
            inter["y"] + inter["a"] + pad,
            w,
            h,
            cell,
        ),
        "dust": GridIndex.build(
            dust["x"] - 2 * dust["r"],
            dust["y"] - 2 * dust["r"],
            dust["x"] + 2 * dust["r"],
            dust["y"] + 2 * dust["r"],
            w,
            h,
            cell,
        ),
    }
    nt, ng, nv = len(tub["x"]), len(glom["x"]), len(vessels["x"])
    base_g = 1 + nt * SLOTS["tubule"]
    base_v = base_g + ng * SLOTS["glomerulus"]
    base_i = base_v + nv * SLOTS["vessel"]
    id_base = {
        "tubule": 1,
        "glomerulus": base_g,
        "vessel": base_v,
        "inter": base_i,
        "end": base_i + len(inter["x"]),
    }
    return PhantomScene(
        width=w,
        height=h,
        mpp=float(mpp),
        fibrosis=float(fibrosis),
        inflammation=float(inflammation),
        sclerosed_fraction=float(sclerosed_fraction),
        stain=stain,
        artifacts=bool(artifacts),
        seed=int(seed),
        cores=cores,
        glomeruli=glom,
        vessels=vessels,
        tubules=tub,
        inter_nuclei=inter,
        dust=dust,
        pen=pen,
        shrink=float(t),
        palette=make_palette(stain, seed),
        index=index,
        id_base=id_base,
    )
