"""Where things go: tissue cores, glomeruli and vessels (circles), tubule seeds, glass artifacts.

Everything is drawn from one random generator in a fixed order, so a seed fixes the layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from shindan.errors import InputError
from shindan.slide_phantom import shapes
from shindan.slide_phantom.noise import point_noise
from shindan.slide_phantom.params import (
    ARTERIOLE_PER_MM2,
    ARTERIOLE_RADIUS_UM,
    ARTERY_PER_MM2,
    ARTERY_RADIUS_UM,
    CORE_HALF_WIDTH_UM,
    GLOM_PER_MM2,
    GLOM_RADIUS_UM,
    KEY_EDGE,
    TUBULE_SPACING_UM,
)

F32 = np.float32


def layout_cores(w: int, h: int, mpp: float, rng: np.random.Generator) -> dict[str, Any]:
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
    return (
        cores["ox"][i] + u * cores["ux"][i] - vv * cores["uy"][i],
        cores["oy"][i] + u * cores["uy"][i] + vv * cores["ux"][i],
    )


def place_circles(cores, w, h, mpp, rng, sclerosed_fraction):
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
        "x": x[g],
        "y": y[g],
        "r": r[g],
        "sclerosed": scl,
        "pole": np.concatenate([pole, rng.uniform(0, 2 * np.pi, len(x) - n0)])[g],
        "shrink": np.where(scl, rng.uniform(0.6, 0.85, n_g), rng.uniform(0.9, 0.99, n_g)),
    }
    v = ~g
    nv = int(v.sum())
    vessels = {
        "x": x[v],
        "y": y[v],
        "r": r[v],
        "artery": kind[v] == 1,
        "aspect": rng.uniform(0.75, 1.0, nv),
        "angle": rng.uniform(0, np.pi, nv),
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


def place_tubules(cores, circles, w, h, mpp, rng) -> dict[str, np.ndarray]:
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
        "x": p[:, 0],
        "y": p[:, 1],
        "a": a.astype(F32),
        "b": b.astype(F32),
        "angle": angle.astype(F32),
        "v": rng.random(n).astype(F32),
        "distal": rng.random(n) < 0.35,
        "lum": rng.random(n).astype(F32),
        "spacing": np.float64(d),
        "hp_ux": hp[0],
        "hp_uy": hp[1],
        "hp_h": hp[2],
        "nh": counts.astype(np.int64),
    }


def place_artifacts(cores, w, h, mpp, rng):
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
