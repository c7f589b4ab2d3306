"""Point queries on a layout: fibrosis calibration and interstitial nucleus placement."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from shindan.slide_phantom import shapes
from shindan.slide_phantom.params import FIBROBLAST_AXES_UM, KEY_EDGE, LYMPHOCYTE_RADIUS_UM
from shindan.slide_phantom.tubule import (
    tubule_frame,
    tubule_geometry,
    tubule_sdf,
    tubule_sdf_parts,
    wobble_points,
)

F32 = np.float32


class PointProbe:
    """Evaluates labels and clearances at scattered points for a fixed structure layout."""

    def __init__(self, cores, glom, vessels, tub, mpp):
        self.cores, self.glom, self.vessels, self.tub, self.mpp = cores, glom, vessels, tub, mpp
        self.tree = cKDTree(np.stack([tub["x"], tub["y"]], 1))
        cx = np.concatenate([glom["x"], vessels["x"]])
        cy = np.concatenate([glom["y"], vessels["y"]])
        self.cr = np.concatenate([glom["r"], vessels["r"]])
        self.ctree = cKDTree(np.stack([cx, cy], 1)) if len(cx) else None

    def circle_sdf(self, px, py):
        if self.ctree is None:
            return np.full(len(px), np.inf)
        k = min(3, len(self.cr))
        dist, j = self.ctree.query(np.stack([px, py], 1), k=k)
        dist, j = dist.reshape(len(px), k), j.reshape(len(px), k)
        return np.min(dist - self.cr[j], axis=1)

    def tubule_sdf(self, px, py, t: float, k: int = 1):
        """Smallest tubule signed distance over the ``k`` nearest tubule seeds."""
        _, j = self.tree.query(np.stack([px, py], 1), k=k)
        j = j.reshape(len(px), k)
        out = np.full(len(px), np.inf, F32)
        for c in range(k):
            i = j[:, c]
            geo = tubule_geometry(self.tub, i, t, self.mpp)
            qx = (px - self.tub["x"][i]).astype(F32)
            qy = (py - self.tub["y"][i]).astype(F32)
            d = tubule_sdf(qx, qy, self.tub, geo, i, slice(None)) + wobble_points(px, py, self.mpp)
            out = np.minimum(out, d)
        return out


def sample_tissue(cores, w, h, n_max=120_000):
    """Pixel-centre samples on a regular grid over the tissue, and the grid stride."""
    stride = max(1.0, np.sqrt(w * h / n_max))
    xs = np.arange(stride / 2, w, stride)
    ys = np.arange(stride / 2, h, stride)
    px, py = np.meshgrid(xs, ys)
    px, py = px.ravel(), py.ravel()
    d = shapes.tissue_sdf_points(px, py, cores, KEY_EDGE)
    keep = d <= 0
    return px[keep], py[keep], stride


def calibrate(probe: PointProbe, px, py, fibrosis: float) -> tuple[float, np.ndarray]:
    """Bisect the slide-wide shrink so interstitium / (tubule + interstitium) = ``fibrosis``."""
    free = probe.circle_sdf(px, py) > 0
    px, py = px[free], py[free]
    if len(px) == 0:
        return 0.5, free
    _, j = probe.tree.query(np.stack([px, py], 1))
    tub = probe.tub
    qx, qy = (px - tub["x"][j]).astype(F32), (py - tub["y"][j]).astype(F32)
    lx, ly = tubule_frame(qx, qy, tub, j)
    wob = wobble_points(px, py, probe.mpp)
    edges = tub["hp_h"][j] - (qx[:, None] * tub["hp_ux"][j] + qy[:, None] * tub["hp_uy"][j])

    def frac(t: float) -> float:
        geo = tubule_geometry(tub, j, t, probe.mpp)
        cs = shapes.rounded_cell_sdf_from_edges(edges, geo["gap"], geo["radius"])
        return float(np.mean(tubule_sdf_parts(lx, ly, cs, geo, slice(None)) + wob > 0))

    lo, hi = -0.4, 1.4  # beyond [0, 1] every tubule's own shrink is clipped
    if frac(lo) >= fibrosis:
        return lo, free
    if frac(hi) <= fibrosis:
        return hi, free
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        if frac(mid) < fibrosis:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi), free


def place_inter_nuclei(probe, px, py, stride, t, inflammation, mpp, rng):
    """Lymphocytes (scattered and in clusters) and fibroblasts, only in the interstitium."""
    empty = {k: np.zeros(0, F32) for k in ("x", "y", "a", "b", "angle", "kind")}
    if inflammation <= 0 or len(px) == 0:
        return empty
    free = probe.circle_sdf(px, py) > 0
    px, py = px[free], py[free]
    ts = probe.tubule_sdf(px, py, t)
    inter = ts > 0
    target = inflammation * len(px) * stride * stride  # nucleus area in level-0 px²
    ipx, ipy = px[inter], py[inter]
    roomy = ts[inter] > LYMPHOCYTE_RADIUS_UM[0] / mpp + 0.6 / mpp  # a nucleus fits here
    if roomy.sum() > 100:  # seed candidates where they can succeed
        ipx, ipy = ipx[roomy], ipy[roomy]
    if len(ipx) == 0:
        return empty
    out: dict[str, list[np.ndarray]] = {k: [] for k in empty}
    area = 0.0
    mean_area = np.pi * (np.mean(LYMPHOCYTE_RADIUS_UM) / mpp) ** 2
    max_a = max(LYMPHOCYTE_RADIUS_UM[1], FIBROBLAST_AXES_UM[0][1]) / mpp
    placed: list[np.ndarray] = []
    # Batches sized so about ten of them reach the target (most candidates fail clearance).
    n = int(np.clip(target / mean_area, 4096, 400_000))
    for attempt in range(200):
        clustered = rng.random(n) < 0.6
        base = rng.integers(0, len(ipx), n)
        # Clusters: a few dozen around a centre, spread 10-40 µm.
        centre = rng.integers(0, len(ipx), max(1, n // 40))
        which = centre[rng.integers(0, len(centre), n)]
        spread = rng.uniform(10, 40, n) / mpp
        cxs = np.where(
            clustered,
            ipx[which] + rng.normal(0, 1, n) * spread,
            ipx[base] + rng.uniform(-0.5, 0.5, n) * stride,
        )
        cys = np.where(
            clustered,
            ipy[which] + rng.normal(0, 1, n) * spread,
            ipy[base] + rng.uniform(-0.5, 0.5, n) * stride,
        )
        fibro = ~clustered & (rng.random(n) < 0.45)
        r = rng.uniform(*LYMPHOCYTE_RADIUS_UM, n) / mpp
        a = np.where(fibro, rng.uniform(*FIBROBLAST_AXES_UM[0], n) / mpp, r)
        b = np.where(
            fibro, rng.uniform(*FIBROBLAST_AXES_UM[1], n) / mpp, r * rng.uniform(0.82, 1.0, n)
        )
        clear = a + 0.6 / mpp
        ok = shapes.tissue_sdf_points(cxs, cys, probe.cores, KEY_EDGE) < -clear
        ok &= probe.circle_sdf(cxs, cys) > clear
        ok[ok] &= probe.tubule_sdf(cxs[ok], cys[ok], t, k=3) > clear[ok]
        # No overlaps (with earlier batches or within this one): a touching pair would merge
        # into one blob, and the requested nucleus area would be lost to the overlap.
        cand = np.flatnonzero(ok)
        if len(cand) and placed:
            dist, _ = cKDTree(np.concatenate(placed)).query(np.stack([cxs[cand], cys[cand]], 1))
            cand = cand[dist > a[cand] + max_a]
        if len(cand) > 1:
            tree = cKDTree(np.stack([cxs[cand], cys[cand]], 1))
            pairs = tree.query_pairs(2 * max_a, output_type="ndarray")
            if len(pairs):
                near = np.hypot(
                    cxs[cand[pairs[:, 0]]] - cxs[cand[pairs[:, 1]]],
                    cys[cand[pairs[:, 0]]] - cys[cand[pairs[:, 1]]],
                )
                clash = near < a[cand[pairs[:, 0]]] + a[cand[pairs[:, 1]]]
                drop = np.zeros(len(cand), bool)
                drop[pairs[clash, 1]] = True
                cand = cand[~drop]
        ok = np.zeros(n, bool)
        ok[cand] = True
        if not ok.any():
            if attempt >= 8:
                break
            continue
        cum = area + np.cumsum(np.pi * a[ok] * b[ok])
        take = np.flatnonzero(ok)[: int(np.searchsorted(cum, target)) + 1]
        for k, val in (
            ("x", cxs),
            ("y", cys),
            ("a", a),
            ("b", b),
            ("angle", rng.uniform(0, np.pi, n)),
            ("kind", fibro.astype(F32)),
        ):
            out[k].append(val[take])
        area += float(np.sum(np.pi * a[take] * b[take]))
        placed.append(np.stack([cxs[take], cys[take]], 1))
        if area >= target or (attempt >= 8 and len(take) < 0.005 * n):
            break  # reached, or the interstitium is full
    res = {k: np.concatenate(v).astype(np.float64 if k in "xy" else F32) for k, v in out.items()}
    return res
