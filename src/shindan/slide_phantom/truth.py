"""Exact ground truth of a phantom, computed by rendering its labels tile by tile."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shindan.slide_phantom import nuclei as nz
from shindan.slide_phantom.api import LABELS
from shindan.slide_phantom.render import render
from shindan.slide_phantom.scene import PhantomScene

TILE = 2048


def _downsample(scene: PhantomScene, mpp: float | None) -> tuple[float, float]:
    mpp = scene.mpp if mpp is None else float(mpp)
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be positive, got {mpp}")
    return mpp, mpp / scene.mpp


def truth_maps(scene: PhantomScene, mpp: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whole-slide compartment labels (uint8) and nucleus instances (int32) at ``mpp``.

    Only for small scenes: both arrays are held in memory. The grid is the one of
    ``render_labels(scene, (0, 0, width, height), mpp / scene.mpp)``.
    """
    _, ds = _downsample(scene, mpp)
    out = render(scene, (0, 0, scene.width, scene.height), ds, rgb=False, labels=True, nuclei=True)
    return out["labels"], out["nuclei"]


def truth(scene: PhantomScene, mpp: float | None = None) -> dict[str, Any]:
    """Areas, fractions and counts of what the phantom shows, measured on an analysis grid.

    Parameters
    ----------
    scene : PhantomScene
    mpp : float, optional
        Analysis grid in µm/px (default: the scene's); labels and nuclei are sampled at the
        pixel centres of that grid, streaming tile by tile (works for any slide size).

    Returns
    -------
    dict
        ``areas_um2`` per compartment, ``interstitial_fibrosis`` (interstitium ÷ (tubule +
        interstitium) area), ``inflammation`` (interstitial nucleus area ÷ (tubule +
        interstitium) area), ``glomeruli`` {``count``, ``sclerosed``}, ``nuclei`` {``count``,
        ``interstitial_count``}, ``mpp``, ``seed``, ``params`` (the scene parameters).
    """
    mpp, ds = _downsample(scene, mpp)
    counts = np.zeros(5, np.int64)
    inter_nuc_px = 0
    seen = np.zeros(scene.max_nucleus_id + 1, bool)
    seen_inter = np.zeros(scene.max_nucleus_id + 1, bool)
    glom_seen = np.zeros(len(scene.glomeruli["x"]), bool)
    out_w, out_h = math.ceil(scene.width / ds - 1e-9), math.ceil(scene.height / ds - 1e-9)
    for ty in range(0, out_h, TILE):
        for tx in range(0, out_w, TILE):
            tw, th = min(TILE, out_w - tx), min(TILE, out_h - ty)
            box = (tx * ds, ty * ds, tw * ds, th * ds)
            r = render(scene, box, ds, rgb=False, labels=True, nuclei=True, owners=True)
            lab, ids, own = r["labels"], r["nuclei"], r["owners"]
            counts += np.bincount(lab.ravel(), minlength=5)[:5]
            inter = lab == 1
            nuc = ids > 0
            inter_nuc_px += int(np.count_nonzero(nuc & inter))
            seen[ids[nuc]] = True
            seen_inter[ids[nuc & inter]] = True
            g = own[(lab == 2)]
            glom_seen[np.unique(g[g % 4 == nz.KIND_GLOM]) // 4] = True
    px_um2 = (ds * scene.mpp) ** 2
    ti = int(counts[1] + counts[3])
    areas = {LABELS[k]: float(counts[k] * px_um2) for k in range(5)}
    scl = scene.glomeruli["sclerosed"]
    return {
        "areas_um2": {
            k: areas[k] for k in ("interstitium", "glomerulus", "tubule", "vessel", "non_tissue")
        },
        "interstitial_fibrosis": float(counts[1] / ti) if ti else 0.0,
        "inflammation": float(inter_nuc_px / ti) if ti else 0.0,
        "glomeruli": {"count": int(glom_seen.sum()), "sclerosed": int((glom_seen & scl).sum())},
        "nuclei": {"count": int(seen.sum()), "interstitial_count": int(seen_inter.sum())},
        "mpp": mpp,
        "seed": scene.seed,
        "params": scene.params,
    }
