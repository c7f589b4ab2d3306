"""The analytic scene: where the tissue, glomeruli, vessels, tubules and loose nuclei are.

All positions and sizes are stored in level-0 pixels; biological sizes are given in µm below and
converted with the slide's µm/px. Nuclei belonging to structures are not stored: they are
derived at render time from hashes of the structure index (see ``nuclei.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from shindan.errors import InputError
from shindan.phantom import shapes
from shindan.phantom.index import GridIndex
from shindan.phantom.noise import point_noise
from shindan.phantom.palette import make_palette

F32 = np.float32

# Biological sizes and densities (µm, per mm² of tissue).
TUBULE_SPACING_UM = 50.0
GLOM_RADIUS_UM = (75.0, 125.0)
GLOM_PER_MM2 = 2.2
ARTERY_RADIUS_UM = (40.0, 95.0)
ARTERY_PER_MM2 = 0.35
ARTERIOLE_RADIUS_UM = (10.0, 18.0)
ARTERIOLE_PER_MM2 = 1.5
CORE_HALF_WIDTH_UM = (380.0, 480.0)
LYMPHOCYTE_RADIUS_UM = (2.4, 3.2)
FIBROBLAST_AXES_UM = ((4.5, 7.0), (1.1, 1.6))
ROUND_UM = 9.0  # corner rounding of tubules squeezed into their Voronoi cells
GAP_MIN_UM = 0.8  # half the narrowest interstitial seam between two tubules
MAX_SCALE = 1.5  # tubule ellipse scale at no shrink (the Voronoi cell then bounds it)
KEY_EDGE = 11  # noise field keys (shared by renderer and calibration)
KEY_WOBBLE = 25
WOBBLE_UM = (9.0, 1.6)  # tubule outlines: irregularity scale and amplitude

# Nucleus id slots per structure (ids are base + index * slots + k).
SLOTS = {"tubule": 48, "glomerulus": 640, "vessel": 768}


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
        Requested parameters (the realised values are in :func:`shindan.phantom.truth`).
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
            "width": self.width, "height": self.height, "mpp": self.mpp,
            "fibrosis": self.fibrosis, "inflammation": self.inflammation,
            "sclerosed_fraction": self.sclerosed_fraction, "stain": self.stain,
            "artifacts": self.artifacts, "seed": self.seed,
        }

    @property
    def max_nucleus_id(self) -> int:
        return int(self.id_base["end"])


# --- layout --------------------------------------------------------------------------------


def _layout_cores(w: int, h: int, mpp: float, rng: np.random.Generator) -> dict[str, Any]:
    horizontal = w >= h
    long_px, short_px = (w, h) if horizontal else (h, w)
    n = int(np.clip((short_px * mpp) // 2600, 1, 6))
    lane = short_px / n
    rows: list[list[float]] = []
    for k in range(n):
        hw = min(rng.uniform(*CORE_HALF_WIDTH_UM) / mpp, 0.33 * lane)
        centre = (k + 0.5) * lane + rng.uniform(-0.06, 0.06) * lane
        if long_px * mpp > 4000:
            # A needle core, often broken into a few fragments with gaps between them.
            extent = rng.uniform(0.7, 0.9) * long_px
            first = rng.uniform(0.02 * long_px, long_px - extent)
            n_frag = 1 + min(rng.poisson(0.7), 2)
            gaps = rng.uniform(150, 600, n_frag - 1) / mpp
            share = rng.dirichlet(np.full(n_frag, 3.0)) * (extent - gaps.sum())
            starts = first + np.concatenate([[0], np.cumsum(share[:-1] + gaps)])
            pieces = [(st, max(sh - 2 * hw, hw)) for st, sh in zip(starts, share, strict=True)]
            pieces = [(st + hw, ln) for st, ln in pieces]
        else:  # small field: the band runs off both ends
            pieces = [(-3 * hw, long_px + 6 * hw)]
        angle0 = rng.uniform(-1, 1)
        for start, length in pieces:
            max_angle = min(0.08, 0.08 * lane / max(length, 1.0))
            angle = np.clip(angle0 * max_angle + rng.normal(0, 0.01), -max_angle, max_angle)
            c, s = np.cos(angle), np.sin(angle)
            ol, os_ = start, centre + np.tan(angle) * (start - long_px / 2) * 0.2
            ox, oy, ux, uy = (ol, os_, c, s) if horizontal else (os_, ol, s, c)
            hwi = hw * rng.uniform(0.85, 1.05)
            bend_a = rng.uniform(0.03, 0.2) * hwi
            bend_k = 2 * np.pi / (max(length, hwi) * rng.uniform(0.8, 2.5))
            rows.append([ox, oy, ux, uy, length, hwi, bend_a, bend_k, rng.uniform(0, 2 * np.pi)])
    arr = np.array(rows, np.float64)
    names = ["ox", "oy", "ux", "uy", "length", "hw", "bend_a", "bend_k", "bend_p"]
    cores: dict[str, Any] = {k: arr[:, i].copy() for i, k in enumerate(names)}
    mean_hw = float(arr[:, 5].mean())
    cores["edge_amp"] = np.array([0.2 * mean_hw, 10.0 / mpp, 2.0 / mpp])
    cores["edge_scale"] = np.array([500.0 / mpp, 55.0 / mpp, 11.0 / mpp])
    return cores


def _visible_core_points(cores: dict, i: int, w: int, h: int, step: float):
    """(u, x, y) samples of core ``i``'s centre line that fall inside the image."""
    u = np.arange(0.0, cores["length"][i] + step, step)
    bend = cores["bend_a"][i] * np.sin(u * cores["bend_k"][i] + cores["bend_p"][i])
    x = cores["ox"][i] + u * cores["ux"][i] - bend * cores["uy"][i]
    y = cores["oy"][i] + u * cores["uy"][i] + bend * cores["ux"][i]
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return u[keep], x[keep], y[keep]


def _core_point(cores: dict, i: int, u: np.ndarray, v: np.ndarray):
    bend = cores["bend_a"][i] * np.sin(u * cores["bend_k"][i] + cores["bend_p"][i])
    vv = v + bend
    return (cores["ox"][i] + u * cores["ux"][i] - vv * cores["uy"][i],
            cores["oy"][i] + u * cores["uy"][i] + vv * cores["ux"][i])


def _place_circles(cores, w, h, mpp, rng, sclerosed_fraction):
    """Glomeruli, arteries and arterioles as non-overlapping circles inside the tissue."""
    xs: list[float] = []
    ys: list[float] = []
    rs: list[float] = []
    kinds: list[int] = []
    gap = 12.0 / mpp

    def free(x: float, y: float, r: float) -> bool:
        if not xs:
            return True
        d = np.hypot(np.array(xs) - x, np.array(ys) - y) - np.array(rs)
        return bool(np.all(d > r + gap))

    def put(i: int, kind: int, r_um: tuple[float, float], depth: float) -> bool:
        us, _, _ = _visible_core_points(cores, i, w, h, 20 / mpp)
        if len(us) == 0:
            return False
        for _ in range(60):
            r = rng.uniform(*r_um) / mpp
            hw = cores["hw"][i]
            lim = hw - depth * r
            if lim <= 0:
                r = hw / (depth + 0.2)
                lim = hw - depth * r
            u = rng.uniform(us.min(), us.max())
            v = rng.uniform(-lim, lim)
            x, y = _core_point(cores, i, np.array([u]), np.array([v]))
            x, y = float(x[0]), float(y[0])
            if not (0.3 * r <= x <= w - 0.3 * r and 0.3 * r <= y <= h - 0.3 * r):
                continue
            if free(x, y, r):
                xs.append(x)
                ys.append(y)
                rs.append(r)
                kinds.append(kind)
                return True
        return False

    for i in range(len(cores["ox"])):
        us, _, _ = _visible_core_points(cores, i, w, h, 20 / mpp)
        area_mm2 = (np.ptp(us) if len(us) else 0.0) * 2 * cores["hw"][i] * mpp * mpp / 1e6
        n_glom = rng.poisson(area_mm2 * GLOM_PER_MM2)
        if cores["hw"][i] * mpp >= 70:
            n_glom = max(n_glom, 1)  # every piece of cortex shows at least one glomerulus
        for _ in range(n_glom):
            put(i, 0, GLOM_RADIUS_UM, 0.75)
        for _ in range(rng.poisson(area_mm2 * ARTERY_PER_MM2)):
            put(i, 1, ARTERY_RADIUS_UM, 0.9)
        for _ in range(rng.poisson(area_mm2 * ARTERIOLE_PER_MM2)):
            put(i, 2, ARTERIOLE_RADIUS_UM, 1.5)
    # Afferent arterioles beside about half of the glomeruli, at the vascular pole.
    n0 = len(xs)
    pole = rng.uniform(0, 2 * np.pi, n0)
    for j in range(n0):
        if kinds[j] == 0 and rng.random() < 0.5:
            r = rng.uniform(*ARTERIOLE_RADIUS_UM) / mpp
            dist = rs[j] + r + gap * 1.2
            x, y = xs[j] + dist * np.cos(pole[j]), ys[j] + dist * np.sin(pole[j])
            if free(x, y, r):
                xs.append(x)
                ys.append(y)
                rs.append(r)
                kinds.append(2)
    x, y, r, kind = (np.array(a, np.float64) for a in (xs, ys, rs, kinds))
    kind = kind.astype(np.int64)
    g = kind == 0
    n_g = int(g.sum())
    # Sclerosed share: a rounded count so small slides still get the requested fraction.
    n_s = int(np.floor(n_g * sclerosed_fraction + rng.random()))
    scl = np.zeros(n_g, bool)
    scl[rng.permutation(n_g)[:n_s]] = True
    glom = {
        "x": x[g], "y": y[g], "r": r[g], "sclerosed": scl,
        "pole": np.concatenate([pole, rng.uniform(0, 2 * np.pi, len(x) - n0)])[g],
        "shrink": np.where(scl, rng.uniform(0.6, 0.85, n_g), rng.uniform(0.9, 0.99, n_g)),
    }
    v = ~g
    nv = int(v.sum())
    vessels = {
        "x": x[v], "y": y[v], "r": r[v], "artery": kind[v] == 1,
        "aspect": rng.uniform(0.75, 1.0, nv), "angle": rng.uniform(0, np.pi, nv),
        "lumen": np.where(kind[v] == 1, rng.uniform(0.3, 0.5, nv), rng.uniform(0.2, 0.4, nv)),
    }
    return glom, vessels


def _stretch_table(start: float, end: float, d: float, rng: np.random.Generator):
    """A monotone map u' -> u whose slope (1 to ~2.3) elongates tubules in some stretches."""
    du = d / 8
    n = int((end - start) / du) + 2
    up = start + du * np.arange(n)
    key = int(rng.integers(1 << 30))
    slope = 1 + 1.3 * np.clip(1.6 * point_noise(up, np.zeros(n), 6 * d, key), 0, 1)
    u = start + np.concatenate([[0], np.cumsum(slope[:-1]) * du])
    return up, u, slope


def _place_tubules(cores, circles, w, h, mpp, rng) -> dict[str, np.ndarray]:
    d = TUBULE_SPACING_UM * rng.uniform(0.9, 1.1) / mpp  # slides differ a little
    pts, stretch, axis = [], [], []
    for i in range(len(cores["ox"])):
        us, _, _ = _visible_core_points(cores, i, w, h, d / 2)
        if len(us) == 0:
            continue
        vmax = cores["hw"][i] + cores["edge_amp"].sum() + 2 * d
        hw = cores["hw"][i] + cores["edge_amp"].sum()
        lo = max(us.min() - hw - 3 * d, -hw - 3 * d)
        hi = min(us.max() + hw + 3 * d, cores["length"][i] + hw + 3 * d)
        up, ut, slope = _stretch_table(lo, hi, d, rng)
        rows = np.arange(-vmax, vmax, d * np.sqrt(3) / 2)
        cols = np.arange(up[0], up[-1], d)
        uu = cols[None, :] + (np.arange(len(rows)) % 2)[:, None] * d / 2
        vv = np.broadcast_to(rows[:, None], uu.shape)
        uu = uu.ravel() + rng.uniform(-0.3, 0.3, uu.size) * d
        vv = vv.ravel() + rng.uniform(-0.3, 0.3, vv.size) * d
        st = np.interp(uu, up, slope)
        uu = np.interp(uu, up, ut)
        x, y = _core_point(cores, i, uu, vv)
        pts.append(np.stack([x, y], 1))
        stretch.append(st)
        axis.append(np.full(len(st), np.arctan2(cores["uy"][i], cores["ux"][i])))
    p = np.concatenate(pts) if pts else np.zeros((0, 2))
    st = np.concatenate(stretch) if pts else np.zeros(0)
    ax = np.concatenate(axis) if pts else np.zeros(0)
    # A few seeds dropped: neighbours fill in as larger, irregular tubules.
    inside = (p[:, 0] > -2 * d) & (p[:, 0] < w + 2 * d) & (p[:, 1] > -2 * d) & (p[:, 1] < h + 2 * d)
    inside &= rng.random(len(p)) > 0.08
    p, st, ax = p[inside], st[inside], ax[inside]
    tis = shapes.tissue_sdf_points(p[:, 0], p[:, 1], cores, KEY_EDGE)
    keep = tis < 0.7 * d
    p, st, ax = p[keep], st[keep], ax[keep]
    cx, cy, cr = circles
    if len(cx):
        tree = cKDTree(np.stack([cx, cy], 1))
        dist, j = tree.query(p, k=min(4, len(cx)))
        dist, j = dist.reshape(len(p), -1), j.reshape(len(p), -1)
        keep = np.all(dist > cr[j] + 0.3 * d, axis=1)
        p, st, ax = p[keep], st[keep], ax[keep]
    n = len(p)
    if n < 4:
        raise InputError("phantom too small to hold tubules; use a larger width/height")
    # Voronoi neighbours (Delaunay edges) bound each tubule by the perpendicular bisectors.
    tri = Delaunay(p)
    ptr, nb = tri.vertex_neighbor_vertices
    src = np.repeat(np.arange(n), np.diff(ptr))
    vec = p[nb] - p[src]
    dist = np.hypot(vec[:, 0], vec[:, 1])
    ux, uy, hh = vec[:, 0] / dist, vec[:, 1] / dist, dist / 2
    if len(cx):  # glomeruli and vessels: the tangent half-plane keeps tubules off the disc
        tree = cKDTree(p)
        near = tree.query_ball_point(np.stack([cx, cy], 1), cr + 1.6 * d)
        cj = np.repeat(np.arange(len(cx)), [len(a) for a in near])
        si = np.concatenate([np.asarray(a, np.int64) for a in near]) if len(cj) else cj
        cvec = np.stack([cx[cj] - p[si, 0], cy[cj] - p[si, 1]], 1)
        cd = np.hypot(cvec[:, 0], cvec[:, 1])
        src = np.concatenate([src, si])
        ux = np.concatenate([ux, cvec[:, 0] / cd])
        uy = np.concatenate([uy, cvec[:, 1] / cd])
        hh = np.concatenate([hh, cd - cr[cj]])
    order = np.argsort(src, kind="stable")
    src, ux, uy, hh = src[order], ux[order], uy[order], hh[order]
    counts = np.bincount(src, minlength=n)
    k = int(counts.max())
    slot = np.arange(len(src)) - np.repeat(np.cumsum(counts) - counts, counts)
    hp = np.zeros((3, n, k), F32)
    hp[2] = shapes.FAR
    hp[0, src, slot], hp[1, src, slot], hp[2, src, slot] = ux, uy, hh
    # Elongated tubules lie along the stretch; round-ish ones at any angle.
    a = d * rng.uniform(0.6, 0.74, n) * st
    b = d * rng.uniform(0.5, 0.62, n)
    swap = b > a
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    angle = np.where(st > 1.25, ax + rng.normal(0, 0.15, n), rng.uniform(0, np.pi, n))
    return {
        "x": p[:, 0], "y": p[:, 1], "a": a.astype(F32), "b": b.astype(F32),
        "angle": angle.astype(F32),
        "v": rng.random(n).astype(F32), "distal": rng.random(n) < 0.35,
        "lum": rng.random(n).astype(F32), "spacing": np.float64(d),
        "hp_ux": hp[0], "hp_uy": hp[1], "hp_h": hp[2], "nh": counts.astype(np.int64),
    }


# --- tubule geometry shared with the renderer -----------------------------------------------


def tubule_geometry(tub: dict, idx: np.ndarray, t: float, mpp: float) -> dict[str, np.ndarray]:
    """Per-tubule derived sizes at slide-wide shrink ``t`` (level-0 px; arrays over ``idx``)."""
    ti = shapes.tubule_params(t, tub["v"][idx])
    d = float(tub["spacing"])
    scale = F32(MAX_SCALE) - F32(MAX_SCALE - 0.5) * ti
    a, b = tub["a"][idx] * scale, tub["b"][idx] * scale
    gap = F32(GAP_MIN_UM / mpp) + ti * F32(0.2 * d)
    mt = F32(1.0 / mpp) + ti * F32(1.6 / mpp)  # thickened basement membrane in atrophy
    inner = np.minimum(b, F32(0.5 * d) - gap)  # rough inner radius
    distal = tub["distal"][idx]
    lum = tub["lum"][idx]
    share = np.where(distal, F32(0.35) + F32(0.2) * lum, F32(0.6) + F32(0.45) * lum)
    epi = inner * share * (F32(1) - F32(0.2) * ti)
    epi = np.minimum(epi, F32(16.0 / mpp))
    radius = np.minimum(F32(ROUND_UM / mpp) + ti * F32(6.0 / mpp),
                        F32(0.8) * (F32(0.5 * d) - gap))
    return {"t": ti, "a": a, "b": b, "gap": gap, "mt": mt, "epi": epi, "radius": radius}


def tubule_frame(qx, qy, tub: dict, i):
    """Offsets ``q`` from tubule ``i``'s seed in its ellipse frame."""
    ang = tub["angle"][i]
    c, s = np.cos(ang).astype(F32), np.sin(ang).astype(F32)
    return qx * c + qy * s, qy * c - qx * s


def wobble_points(px, py, mpp: float) -> np.ndarray:
    """Outline irregularity of tubules at global points, level-0 px (added to the SDF)."""
    return F32(WOBBLE_UM[1] / mpp) * point_noise(px, py, WOBBLE_UM[0] / mpp, KEY_WOBBLE)


def tubule_sdf_parts(lx, ly, cell_sdf, geo: dict, j):
    """Tubule signed distance: its ellipse intersected with its rounded, inset Voronoi cell."""
    return np.maximum(shapes.ellipse_sdf(lx, ly, geo["a"][j], geo["b"][j]), cell_sdf)


def tubule_sdf(qx, qy, tub: dict, geo: dict, i: int | np.ndarray, j, n: int | None = None):
    """Signed distance to tubule ``i`` (row ``j`` of ``geo``) at offsets ``q`` from its seed."""
    lx, ly = tubule_frame(qx, qy, tub, i)
    cs = shapes.rounded_cell_sdf(qx, qy, tub["hp_ux"][i], tub["hp_uy"][i], tub["hp_h"][i],
                                 geo["gap"][j], geo["radius"][j], n)
    return tubule_sdf_parts(lx, ly, cs, geo, j)


# --- point queries (calibration, placement) ---------------------------------------------------


class _PointProbe:
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


def _sample_tissue(cores, w, h, n_max=400_000):
    """Pixel-centre samples on a regular grid over the tissue, and the grid stride."""
    stride = max(1.0, np.sqrt(w * h / n_max))
    xs = np.arange(stride / 2, w, stride)
    ys = np.arange(stride / 2, h, stride)
    px, py = np.meshgrid(xs, ys)
    px, py = px.ravel(), py.ravel()
    d = shapes.tissue_sdf_points(px, py, cores, KEY_EDGE)
    keep = d <= 0
    return px[keep], py[keep], stride


def _calibrate(probe: _PointProbe, px, py, fibrosis: float) -> tuple[float, np.ndarray]:
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


def _place_inter_nuclei(probe, px, py, stride, t, inflammation, mpp, rng):
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
    if len(ipx) == 0:
        return empty
    out: dict[str, list[np.ndarray]] = {k: [] for k in empty}
    area = 0.0
    mean_area = np.pi * (np.mean(LYMPHOCYTE_RADIUS_UM) / mpp) ** 2
    max_a = max(LYMPHOCYTE_RADIUS_UM[1], FIBROBLAST_AXES_UM[0][1]) / mpp
    placed: list[np.ndarray] = []
    n = int(np.clip(target / mean_area / 8, 4096, 250_000))  # ~10 batches whatever the size
    for _ in range(200):
        clustered = rng.random(n) < 0.6
        base = rng.integers(0, len(ipx), n)
        # Clusters: a few dozen around a centre, spread 10-40 µm.
        centre = rng.integers(0, len(ipx), max(1, n // 40))
        which = centre[rng.integers(0, len(centre), n)]
        spread = rng.uniform(10, 40, n) / mpp
        cxs = np.where(clustered, ipx[which] + rng.normal(0, 1, n) * spread,
                       ipx[base] + rng.uniform(-0.5, 0.5, n) * stride)
        cys = np.where(clustered, ipy[which] + rng.normal(0, 1, n) * spread,
                       ipy[base] + rng.uniform(-0.5, 0.5, n) * stride)
        fibro = ~clustered & (rng.random(n) < 0.45)
        r = rng.uniform(*LYMPHOCYTE_RADIUS_UM, n) / mpp
        a = np.where(fibro, rng.uniform(*FIBROBLAST_AXES_UM[0], n) / mpp, r)
        b = np.where(fibro, rng.uniform(*FIBROBLAST_AXES_UM[1], n) / mpp,
                     r * rng.uniform(0.82, 1.0, n))
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
                near = np.hypot(cxs[cand[pairs[:, 0]]] - cxs[cand[pairs[:, 1]]],
                                cys[cand[pairs[:, 0]]] - cys[cand[pairs[:, 1]]])
                clash = near < a[cand[pairs[:, 0]]] + a[cand[pairs[:, 1]]]
                drop = np.zeros(len(cand), bool)
                drop[pairs[clash, 1]] = True
                cand = cand[~drop]
        ok = np.zeros(n, bool)
        ok[cand] = True
        if not ok.any():
            continue
        cum = area + np.cumsum(np.pi * a[ok] * b[ok])
        take = np.flatnonzero(ok)[: int(np.searchsorted(cum, target)) + 1]
        for k, val in (("x", cxs), ("y", cys), ("a", a), ("b", b),
                       ("angle", rng.uniform(0, np.pi, n)), ("kind", fibro.astype(F32))):
            out[k].append(val[take])
        area += float(np.sum(np.pi * a[take] * b[take]))
        placed.append(np.stack([cxs[take], cys[take]], 1))
        if area >= target:
            break
    res = {k: np.concatenate(v).astype(np.float64 if k in "xy" else F32) for k, v in out.items()}
    return res


def _place_artifacts(cores, w, h, mpp, rng):
    dust = {k: np.zeros(0) for k in ("x", "y", "r")}
    pen = {"x": np.zeros(0), "y": np.zeros(0), "hw": np.zeros(0)}
    n = 4096
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    d = shapes.tissue_sdf_points(cx, cy, cores, KEY_EDGE)
    area_mm2 = w * h * mpp * mpp / 1e6
    nd = int(max(4, rng.poisson(area_mm2 * 0.4)))
    r = rng.uniform(3, 22, n) / mpp
    ok = np.flatnonzero(d > r * 2 + 20 / mpp)[:nd]
    dust = {"x": cx[ok], "y": cy[ok], "r": r[ok]}
    # Pen stroke: a bent line through the widest stretch of glass.
    hw = min(180 / mpp, 0.03 * min(w, h))
    good = d > hw * 1.5 + 40 / mpp
    if good.any():
        k = int(np.argmax(np.where(good, d, -np.inf)))
        length = min(0.35 * max(w, h), 4000 / mpp)
        ang = rng.uniform(0, np.pi)
        s = np.linspace(-0.5, 0.5, 24) * length
        bend = 0.08 * length * np.sin(np.linspace(0, np.pi, 24) * rng.uniform(0.8, 2))
        x = cx[k] + s * np.cos(ang) - bend * np.sin(ang)
        y = cy[k] + s * np.sin(ang) + bend * np.cos(ang)
        # Keep the stroke on glass: cut it where it would come close to tissue.
        dd = shapes.tissue_sdf_points(x, y, cores, KEY_EDGE)
        run = dd > hw * 1.5 + 40 / mpp
        lab = np.cumsum(~run)
        mine = lab == lab[12]
        sel = run & mine
        if sel.sum() >= 2:
            pen = {"x": x[sel], "y": y[sel], "hw": np.full(int(sel.sum()), hw)}
    return dust, pen


# --- public -------------------------------------------------------------------------------


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
    for name, val, hi in (("fibrosis", fibrosis, 0.95), ("inflammation", inflammation, 0.5),
                          ("sclerosed_fraction", sclerosed_fraction, 1.0)):
        if not (0 <= val <= hi):
            raise InputError(f"{name} must be in [0, {hi}], got {val}")
    if stain not in ("pas", "he"):
        raise InputError(f"stain must be 'pas' or 'he', got {stain!r}")
    rng = np.random.default_rng([seed, 7919])
    w, h = int(width), int(height)
    cores = _layout_cores(w, h, mpp, rng)
    glom, vessels = _place_circles(cores, w, h, mpp, rng, sclerosed_fraction)
    circles = (np.concatenate([glom["x"], vessels["x"]]), np.concatenate([glom["y"], vessels["y"]]),
               np.concatenate([glom["r"], vessels["r"]]))
    tub = _place_tubules(cores, circles, w, h, mpp, rng)
    probe = _PointProbe(cores, glom, vessels, tub, mpp)
    px, py, stride = _sample_tissue(cores, w, h)
    t, _ = _calibrate(probe, px, py, fibrosis)
    inter = _place_inter_nuclei(probe, px, py, stride, t, inflammation, mpp, rng)
    if artifacts:
        dust, pen = _place_artifacts(cores, w, h, mpp, rng)
    else:
        dust = {k: np.zeros(0) for k in ("x", "y", "r")}
        pen = {"x": np.zeros(0), "y": np.zeros(0), "hw": np.zeros(0)}
    cell = 256.0 / mpp
    pad = 2.0 / mpp
    ta = tub["a"] * MAX_SCALE
    index = {
        "tubule": GridIndex.build(tub["x"] - ta - pad, tub["y"] - ta - pad,
                                  tub["x"] + ta + pad, tub["y"] + ta + pad, w, h, cell),
        "glomerulus": GridIndex.build(glom["x"] - glom["r"] - pad, glom["y"] - glom["r"] - pad,
                                      glom["x"] + glom["r"] + pad, glom["y"] + glom["r"] + pad,
                                      w, h, cell),
        "vessel": GridIndex.build(vessels["x"] - vessels["r"] - pad,
                                  vessels["y"] - vessels["r"] - pad,
                                  vessels["x"] + vessels["r"] + pad,
                                  vessels["y"] + vessels["r"] + pad, w, h, cell),
        "inter": GridIndex.build(inter["x"] - inter["a"] - pad, inter["y"] - inter["a"] - pad,
                                 inter["x"] + inter["a"] + pad, inter["y"] + inter["a"] + pad,
                                 w, h, cell),
        "dust": GridIndex.build(dust["x"] - 2 * dust["r"], dust["y"] - 2 * dust["r"],
                                dust["x"] + 2 * dust["r"], dust["y"] + 2 * dust["r"], w, h, cell),
    }
    nt, ng, nv = len(tub["x"]), len(glom["x"]), len(vessels["x"])
    base_g = 1 + nt * SLOTS["tubule"]
    base_v = base_g + ng * SLOTS["glomerulus"]
    base_i = base_v + nv * SLOTS["vessel"]
    id_base = {"tubule": 1, "glomerulus": base_g, "vessel": base_v, "inter": base_i,
               "end": base_i + len(inter["x"])}
    return PhantomScene(
        width=w, height=h, mpp=float(mpp), fibrosis=float(fibrosis),
        inflammation=float(inflammation), sclerosed_fraction=float(sclerosed_fraction),
        stain=stain, artifacts=bool(artifacts), seed=int(seed), cores=cores, glomeruli=glom,
        vessels=vessels, tubules=tub, inter_nuclei=inter, dust=dust, pen=pen, shrink=float(t),
        palette=make_palette(stain, seed), index=index, id_base=id_base,
    )
