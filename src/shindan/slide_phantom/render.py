"""Tile renderer: RGB, compartment labels and nucleus instances on any box at any downsample.

Every value is a function of the pixel centre's global position (hashed noise, analytic shapes),
so tiles agree with each other exactly. Edges are anti-aliased analytically from signed
distances, textures finer than two output pixels are left out (band-limited) and the optical
blur is computed on a padded tile, hence no seams and no jaggies at pyramid levels.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from shindan.slide_phantom.canvas import CHROM, COLL, CYTO, MATRIX, RBC, Canvas, Grid, cov
from shindan.slide_phantom.noise import grid_noise, hash_uniform
from shindan.slide_phantom.scene import PhantomScene

F32 = np.float32
GRAIN_PERIOD = 509  # prime: the grain pattern does not line up with tiles


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with plain array arithmetic (bit-identical whatever the tile)."""
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(F32)
    h, w = img.shape[:2]
    tmp = img[:, r : w - r] * k[r]
    for j in range(1, r + 1):
        tmp += (img[:, r - j : w - r - j] + img[:, r + j : w - r + j]) * k[r + j]
    out = tmp[r : h - r] * k[r]
    for j in range(1, r + 1):
        out += (tmp[r - j : h - r - j] + tmp[r + j : h - r + j]) * k[r + j]
    return out


def _artifacts(scene: PhantomScene, g: Grid, od_crop: np.ndarray, crop) -> None:
    od = np.zeros(g.shape + (3,), F32)
    _draw_artifacts(scene, g, od)
    od_crop += od[crop]


def _draw_artifacts(scene: PhantomScene, g: Grid, od: np.ndarray) -> None:
    d = scene.dust
    if len(d["x"]):
        for i in scene.index["dust"].query(*g.query_box(0)):
            r = float(d["r"][i])
            win = g.window(
                d["x"][i] - 2 * r, d["y"][i] - 2 * r, d["x"][i] + 2 * r, d["y"][i] + 2 * r
            )
            if win is None:
                continue
            qx, qy = g.local(win, d["x"][i], d["y"][i])
            n = grid_noise(g.xs[win[1]], g.ys[win[0]], max(r * 0.6, 1.0), 61 + int(i))
            dist = np.sqrt(qx * qx + qy * qy) - F32(r) * (F32(1) + F32(0.45) * n)
            c = cov(dist, max(g.ds, 1.0)) * F32(0.9)
            od[win] += c[..., None] * np.array([0.9, 0.95, 1.0], F32)
    p = scene.pen
    if len(p["x"]) >= 2:
        hw = float(p["hw"][0])
        x0, y0, x1, y1 = g.query_box(hw)
        if p["x"].max() < x0 or p["x"].min() > x1 or p["y"].max() < y0 or p["y"].min() > y1:
            return
        qx = g.xs.astype(np.float64)[None, :]
        qy = g.ys.astype(np.float64)[:, None]
        dist = np.full(g.shape, np.inf)
        for k in range(len(p["x"]) - 1):
            ax, ay, bx, by = p["x"][k], p["y"][k], p["x"][k + 1], p["y"][k + 1]
            vx, vy = bx - ax, by - ay
            t = np.clip(((qx - ax) * vx + (qy - ay) * vy) / (vx * vx + vy * vy), 0, 1)
            dist = np.minimum(dist, np.hypot(qx - ax - t * vx, qy - ay - t * vy))
        n = grid_noise(g.xs, g.ys, 40 / scene.mpp, 71)
        c = cov((dist - hw * (1 + 0.15 * n)).astype(F32), max(g.ds, 2.0))
        streak = F32(0.75) + F32(0.25) * grid_noise(g.xs, g.ys, 12 / scene.mpp, 72)
        od += (c * streak)[..., None] * np.array([1.2, 0.55, 0.25], F32)


def render(
    scene: PhantomScene,
    box: tuple[int, int, int, int],
    downsample: float = 1.0,
    *,
    rgb: bool = True,
    labels: bool = False,
    nuclei: bool = False,
    owners: bool = False,
) -> dict[str, np.ndarray]:
    """Render what is asked of one box (see the public wrappers in ``shindan.slide_phantom``)."""
    ds = float(downsample)
    if not (ds > 0 and math.isfinite(ds)):
        raise ValueError(f"downsample must be positive, got {downsample}")
    sigma = scene.palette["blur_um"] / scene.mpp / ds
    pad = int(math.ceil(2.5 * sigma)) if rgb and sigma >= 0.3 else 0
    g = Grid(box, ds, pad)
    cv = Canvas(scene, g, rgb, labels)
    out: dict[str, np.ndarray] = {}
    crop = (slice(pad, pad + g.h), slice(pad, pad + g.w))
    ids = np.zeros(g.shape, np.int64) if nuclei else None
    ncov = np.zeros(g.shape, F32) if rgb else None
    nchrom = np.zeros(g.shape, F32) if rgb else None
    if cv.has_tissue:
        if rgb:
            cv.interstitium()
        gi = cv.glomeruli()
        vi = cv.vessels()
        ti = cv.tubules()
        if rgb or nuclei:
            cv.nuclei(ti, gi, vi, ids, ncov, nchrom)
    if labels:
        out["labels"] = cv.lab[crop].copy()
    if owners:
        out["owners"] = cv.own[crop].copy()
    if nuclei:
        out["nuclei"] = ids[crop].astype(np.int32)
    if rgb:
        out["rgb"] = _compose(scene, g, cv, ncov, nchrom, sigma, pad)
    return out


@functools.lru_cache(maxsize=4)
def _grain_table(seed: int) -> np.ndarray:
    """A periodic field of sensor-like grain (optical density), indexed by output pixel."""
    r = np.arange(GRAIN_PERIOD)
    g = hash_uniform(seed, 85, r[:, None], r[None, :]) - F32(0.5)
    # A touch of correlation between neighbours, like a real camera after demosaicing.
    g = (g + np.roll(g, 1, 0) + np.roll(g, 1, 1)) * F32(1 / 3)
    return (g * F32(0.02)).astype(F32)


def _glass_od(scene: PhantomScene, xs: np.ndarray, ys: np.ndarray, ds: float) -> np.ndarray:
    pal = scene.palette
    tab = _grain_table(scene.seed)
    cols = np.floor(xs / ds).astype(np.int64) % GRAIN_PERIOD
    rows = np.floor(ys / ds).astype(np.int64) % GRAIN_PERIOD
    grain = tab[np.ix_(rows, cols)]
    shade = F32(1) + F32(0.25) * grid_noise(xs, ys, 2000 / scene.mpp, 82)
    od = np.empty((len(ys), len(xs), 3), F32)
    for c in range(3):
        od[..., c] = F32(pal["glass"][c]) * shade + grain
    return od


def _compose(scene, g, cv, ncov, nchrom, sigma, pad) -> np.ndarray:
    crop = (slice(pad, pad + g.h), slice(pad, pad + g.w))
    od = _glass_od(scene, g.xs[crop[1]], g.ys[crop[0]], g.ds)
    if cv.has_tissue:
        od_tab = scene.palette["od"]
        mat = cv.mat
        under = F32(1) - F32(0.7) * ncov
        for m in (CYTO, MATRIX, COLL, RBC):
            mat[m] *= under
        mat[CHROM] = mat[CHROM] * (F32(1) - ncov) + nchrom
        tcov = cov(cv.tissue_d, g.ds)
        shade = F32(1) + F32(0.1) * grid_noise(g.xs, g.ys, 300 / scene.mpp, 83)
        # Sections are a little thinner, hence paler, along the cut edge.
        edge = np.clip(-cv.tissue_d / F32(25 / scene.mpp), F32(0), F32(1))
        tcov = tcov * shade * (F32(0.8) + F32(0.2) * edge)
        for c in range(3):
            acc = mat[0] * od_tab[0, c]
            for m in range(1, 5):
                acc += mat[m] * od_tab[m, c]
            acc *= tcov
            # Optical blur of the tissue only (glass is flat): padded, so tiles agree.
            od[..., c] += _blur(acc, sigma) if pad else acc
    if scene.artifacts:
        _artifacts(scene, g, od, crop)
    img = np.exp(-od)
    img *= F32(255)
    img += F32(0.5)
    return np.clip(img, 0, 255).astype(np.uint8)
