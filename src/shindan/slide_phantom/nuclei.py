"""Nuclei: derived per structure from hashes of its index, and rasterised in batches.

Structure nuclei are never stored: the k-th candidate of tubule i always lands at the same
place with the same shape, so any tile can regenerate exactly the nuclei it overlaps.
Ids are ``id_base[kind] + index * SLOTS[kind] + k``: unique across the slide.
"""

from __future__ import annotations

import numpy as np

from shindan.slide_phantom import shapes
from shindan.slide_phantom.noise import hash_uniform
from shindan.slide_phantom.params import SLOTS
from shindan.slide_phantom.scene import PhantomScene
from shindan.slide_phantom.tubule import tubule_sdf, wobble_points

F32 = np.float32
FIELDS = ("x", "y", "a", "b", "ca", "sa", "dens", "style", "owner", "id")

# Chromatin look per style: (base, rim, granularity). Epithelial nuclei are vesicular (pale
# centre, dark rim, coarse granules); lymphocytes dense and dark; spindle cells in between.
EPITHELIAL, GLOMERULAR, LYMPHOCYTE, SPINDLE = range(4)
STYLES = np.array(
    [[0.45, 0.65, 0.5], [0.8, 0.45, 0.4], [1.25, 0.25, 0.25], [1.0, 0.25, 0.3]], np.float32
)

# Structure keys in the per-pixel owner map: 4 * index + kind (0 = interstitium, -1 = glass).
KIND_TUBULE, KIND_GLOM, KIND_VESSEL = 1, 2, 3


def _empty() -> dict[str, np.ndarray]:
    types = {"x": np.float64, "y": np.float64, "style": np.int64, "owner": np.int64, "id": np.int64}
    return {k: np.zeros(0, types.get(k, F32)) for k in FIELDS}


def _pack(mask, x, y, a, b, ang, dens, style, owner, ids) -> dict[str, np.ndarray]:
    m = np.broadcast_to(mask, np.broadcast_shapes(mask.shape, np.shape(x)))

    def take(v, dtype):
        return np.broadcast_to(np.asarray(v), m.shape)[m].astype(dtype)

    ang = take(ang, F32)
    return {
        "x": take(x, np.float64),
        "y": take(y, np.float64),
        "a": take(a, F32),
        "b": take(b, F32),
        "ca": np.cos(ang),
        "sa": np.sin(ang),
        "dens": take(dens, F32),
        "style": take(style, np.int64),
        "owner": take(owner, np.int64),
        "id": take(ids, np.int64),
    }


def tubule_nuclei(scene: PhantomScene, idx: np.ndarray, geo: dict) -> dict[str, np.ndarray]:
    """Epithelial nuclei of tubules ``idx`` (``geo`` rows match ``idx``)."""
    if len(idx) == 0:
        return _empty()
    tub, mpp, kt = scene.tubules, scene.mpp, SLOTS["tubule"]
    i = idx[:, None]
    k = np.arange(kt)[None, :]
    j = np.arange(len(idx))[:, None]

    def u(c: int) -> np.ndarray:
        return hash_uniform(scene.seed, 101, i, k, c)

    mt, epi = geo["mt"][j], geo["epi"][j]
    distal = tub["distal"][i]
    ang = tub["angle"][i]
    # Outline radius along kt rays (sphere tracing from inside), then its perimeter.
    theta = np.arange(kt, dtype=F32)[None, :] * F32(2 * np.pi / kt) + ang
    cth, sth = np.cos(theta), np.sin(theta)
    rho = F32(0.3) * geo["b"][j]
    for _ in range(7):
        rho = np.maximum(rho - tubule_sdf(rho * cth, rho * sth, tub, geo, i, j), F32(0))
    seg = np.sqrt(
        rho * rho
        + np.roll(rho, -1, 1) ** 2
        - F32(2) * rho * np.roll(rho, -1, 1) * F32(np.cos(2 * np.pi / kt))
    )
    perim = seg.sum(axis=1, keepdims=True)
    spacing = np.where(distal, F32(6.0 / mpp), F32(7.5 / mpp))
    n = np.clip(np.floor(perim / spacing), 3, kt)
    phase = hash_uniform(scene.seed, 102, i)
    t = (k + F32(0.6) * (u(0) - F32(0.5))) / n + phase  # in turns
    pos = (t % F32(1)) * F32(kt)
    k0 = np.floor(pos).astype(np.int64) % kt
    w = pos - np.floor(pos)
    rows = np.arange(len(idx))[:, None]
    radius = rho[rows, k0] * (F32(1) - w) + rho[rows, (k0 + 1) % kt] * w
    phi = F32(2 * np.pi) * t + ang
    r = (np.where(distal, F32(2.5), F32(2.8)) + F32(0.7) * u(1)) / F32(mpp)
    na = r * (F32(1.0) + F32(0.25) * u(2))
    nb = np.minimum(r * (F32(0.8) + F32(0.2) * u(3)), F32(0.42) * epi + F32(0.3 / mpp))
    depth = np.where(distal, F32(0.5), F32(0.4)) + F32(0.45) * (u(5) - F32(0.5))
    depth = mt + np.maximum(depth * epi, nb + F32(0.4 / mpp))
    cph, sph = np.cos(phi), np.sin(phi)
    qx, qy = (radius - depth) * cph, (radius - depth) * sph
    d = tubule_sdf(qx, qy, tub, geo, i, j) + wobble_points(tub["x"][i] + qx, tub["y"][i] + qy, mpp)
    ok = (k < n) & (d < -(mt + F32(0.5) * nb)) & (d > -(mt + epi)) & (u(6) > F32(0.35))
    dens = np.where(distal, F32(1.35), F32(1.15)) * (F32(0.85) + F32(0.3) * u(4))
    tangent = phi + F32(np.pi / 2)
    ids = scene.id_base["tubule"] + i * kt + k
    return _pack(
        ok,
        tub["x"][i] + qx,
        tub["y"][i] + qy,
        na,
        nb,
        tangent,
        dens,
        EPITHELIAL,
        4 * i + KIND_TUBULE,
        ids,
    )


def glomerulus_nuclei(scene: PhantomScene, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Tuft nuclei (in walls and mesangium, not in open lumens) and parietal nuclei."""
    from shindan.slide_phantom import glomerulus as gm

    if len(idx) == 0:
        return _empty()
    g, mpp, kg = scene.glomeruli, scene.mpp, SLOTS["glomerulus"]
    npar = 96
    i = idx[:, None]
    k = np.arange(kg)[None, :]

    def u(c: int) -> np.ndarray:
        return hash_uniform(scene.seed, 203, i, k, c)

    scl = g["sclerosed"][i]
    rin = gm.inner_radius(scene, i)
    n_par = np.minimum(np.floor(F32(2 * np.pi) * rin / F32(30 / mpp)), npar)
    area = F32(np.pi) * rin * rin
    n_tuft = np.where(scl, F32(18), np.minimum(area / F32(110 / mpp**2), kg - npar))
    parietal = k >= kg - npar
    kp = k - (kg - npar)
    theta = np.where(
        parietal,
        F32(2 * np.pi) * (kp + F32(0.4) * u(0)) / np.maximum(n_par, 1),
        F32(2 * np.pi) * u(0),
    )
    r_n = (F32(2.2) + F32(0.9) * u(1)) / F32(mpp)
    rad = np.where(parietal, rin - F32(1.0 / mpp), rin * np.sqrt(u(2)))
    x, y = rad * np.cos(theta), rad * np.sin(theta)
    inside = gm.tuft_sdf(scene, i, x, y) < -F32(0.6) * r_n
    lumen_d, solid, _ = gm.capillaries_points(scene, g["x"][i] + x, g["y"][i] + y)
    in_wall = solid | (lumen_d > -F32(0.4) * r_n) | scl
    ok_t = ~parietal & (k < n_tuft) & inside & in_wall
    ok_p = parietal & (kp < n_par) & ~(scl & (u(5) < 0.5))
    na = np.where(parietal, F32(4.5 / mpp), r_n * (F32(1) + F32(0.25) * u(3)))
    nb = np.where(parietal, F32(1.3 / mpp), r_n * (F32(0.8) + F32(0.15) * u(4)))
    ang = np.where(parietal, theta + F32(np.pi / 2), F32(np.pi) * u(4))
    dens = np.where(parietal, F32(0.9), F32(1.05) * (F32(0.8) + F32(0.4) * u(6)))
    dens = np.where(scl & ~parietal, dens * F32(0.8), dens)
    ids = scene.id_base["glomerulus"] + i * kg + k
    style = np.where(parietal, SPINDLE, GLOMERULAR)
    return _pack(
        ok_t | ok_p, g["x"][i] + x, g["y"][i] + y, na, nb, ang, dens, style, 4 * i + KIND_GLOM, ids
    )


def vessel_nuclei(scene: PhantomScene, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Smooth-muscle (circumferential) and endothelial nuclei of vessels ``idx``."""
    if len(idx) == 0:
        return _empty()
    v, mpp, kv = scene.vessels, scene.mpp, SLOTS["vessel"]
    i = idx[:, None]
    k = np.arange(kv)[None, :]

    def u(c: int) -> np.ndarray:
        return hash_uniform(scene.seed, 301, i, k, c)

    r = v["r"][i].astype(F32) * F32(0.97)  # the painted outline (see render._paint_vessel)
    lum = v["lumen"][i].astype(F32)
    asp = v["aspect"][i].astype(F32)
    n_endo = np.minimum(np.floor(F32(2 * np.pi) * lum * r / F32(14 / mpp)), 64)
    media_area = F32(np.pi) * r * r * asp * (F32(0.85) ** 2 - (lum + F32(0.08)) ** 2)
    n_smc = np.minimum(media_area / F32(22 / mpp**2), kv - 64)
    endo = k >= kv - 64
    ke = k - (kv - 64)
    theta = np.where(
        endo, F32(2 * np.pi) * (ke + F32(0.4) * u(0)) / np.maximum(n_endo, 1), F32(2 * np.pi) * u(0)
    )
    rho = np.where(
        endo,
        lum + F32(1.2 / mpp) / r,
        lum + F32(0.07) + (F32(0.83) - lum - F32(0.07)) * np.sqrt(u(1)),
    )
    lx, ly = rho * r * np.cos(theta), rho * r * asp * np.sin(theta)
    ang0 = v["angle"][i].astype(F32)
    ca, sa = np.cos(ang0), np.sin(ang0)
    x, y = lx * ca - ly * sa, lx * sa + ly * ca
    ok = np.where(endo, ke < n_endo, k < n_smc)
    na = np.where(endo, F32(4.0 / mpp), (F32(4.5) + F32(2.5) * u(2)) / F32(mpp))
    nb = np.where(endo, F32(1.1 / mpp), (F32(1.2) + F32(0.5) * u(3)) / F32(mpp))
    tangent = ang0 + np.arctan2(asp * np.cos(theta), -np.sin(theta))
    dens = F32(0.95) * (F32(0.85) + F32(0.3) * u(4))
    ids = scene.id_base["vessel"] + i * kv + k
    return _pack(
        ok, v["x"][i] + x, v["y"][i] + y, na, nb, tangent, dens, SPINDLE, 4 * i + KIND_VESSEL, ids
    )


def inter_nuclei(scene: PhantomScene, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Stored interstitial nuclei ``idx`` (lymphocytes dark and round, fibroblasts thin)."""
    if len(idx) == 0:
        return _empty()
    s = scene.inter_nuclei
    fib = s["kind"][idx] > 0
    dens = np.where(fib, F32(1.0), F32(1.2)) * (
        F32(0.9) + F32(0.2) * hash_uniform(scene.seed, 401, idx)
    )
    return _pack(
        np.ones(len(idx), bool),
        s["x"][idx],
        s["y"][idx],
        s["a"][idx],
        s["b"][idx],
        s["angle"][idx],
        dens,
        np.where(fib, SPINDLE, LYMPHOCYTE),
        np.zeros(len(idx), np.int64),
        scene.id_base["inter"] + idx,
    )


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}


def patches(
    xs: np.ndarray,
    ys: np.ndarray,
    ds: float,
    x: np.ndarray,
    y: np.ndarray,
    half: float,
    shape: tuple[int, int] | None = None,
):
    """Square pixel patches around points on a tile grid, for batched drawing.

    Returns
    -------
    flat : ndarray of int64, shape (n, p, p)
        Flat pixel index in the tile (clipped; see ``valid``).
    dx, dy : ndarray of float32, shapes (n, 1, p) and (n, p, 1)
        Pixel-centre offsets from the points, level-0 px.
    valid : ndarray of bool, shape (n, p, p)
        Pixel lies on the tile.
    """
    h, w = shape if shape is not None else (len(ys), len(xs))
    p = int(np.ceil(2 * half / ds)) + 3
    c0 = np.round((x - xs[0]) / ds).astype(np.int64) - p // 2
    r0 = np.round((y - ys[0]) / ds).astype(np.int64) - p // 2
    cols = c0[:, None] + np.arange(p)[None, :]
    rows = r0[:, None] + np.arange(p)[None, :]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    cols, rows = np.clip(cols, 0, w - 1), np.clip(rows, 0, h - 1)
    dx = (xs[cols] - x[:, None]).astype(F32)[:, None, :]
    dy = (ys[rows] - y[:, None]).astype(F32)[:, :, None]
    return rows[:, :, None] * w + cols[:, None, :], dx, dy, valid


def rasterise(
    nuc: dict[str, np.ndarray],
    xs: np.ndarray,
    ys: np.ndarray,
    ds: float,
    owner_map: np.ndarray,
    ids_out: np.ndarray | None,
    cov_out: np.ndarray | None,
    chrom_out: np.ndarray | None,
    texture: np.ndarray | None,
    mpp: float,
) -> None:
    """Draw nuclei into per-pixel maps of a tile grid (in place; overlaps take the maximum).

    Parameters
    ----------
    nuc : dict of ndarray
        Nuclei table (see ``FIELDS``).
    xs, ys : ndarray of float64
        The tile's pixel-centre coordinates, level-0 px.
    ds : float
        Level-0 pixels per output pixel.
    owner_map : ndarray of int64, shape (h, w)
        Structure key per pixel; a nucleus only covers pixels of its owner (clips at edges).
    ids_out : ndarray of int64 or None
        Instance ids at pixel centres inside a nucleus.
    cov_out, chrom_out : ndarray of float32 or None
        Anti-aliased coverage and chromatin amount (for RGB).
    texture : ndarray of float32 or None
        Fine noise on the tile grid in [-1, 1] (chromatin granularity).
    """
    n = len(nuc["x"])
    if n == 0:
        return
    h, w = owner_map.shape
    amax = float(nuc["a"].max())
    p = int(np.ceil(2 * amax / ds)) + 3
    chunk = max(1, 1_500_000 // (p * p))
    soft = F32(max(ds, 0.45 / mpp))  # edges a touch soft even at full resolution
    rim_w = F32(0.45 / mpp)
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        flat, dx, dy, valid = patches(xs, ys, ds, nuc["x"][sl], nuc["y"][sl], amax, (h, w))
        ca, sa = nuc["ca"][sl][:, None, None], nuc["sa"][sl][:, None, None]
        lx, ly = dx * ca + dy * sa, dy * ca - dx * sa
        d = shapes.ellipse_sdf(lx, ly, nuc["a"][sl][:, None, None], nuc["b"][sl][:, None, None])
        own = (owner_map.ravel()[flat] == nuc["owner"][sl][:, None, None]) & valid
        if ids_out is not None:
            inside = own & (d <= 0)
            np.maximum.at(
                ids_out.ravel(),
                flat[inside],
                np.broadcast_to(nuc["id"][sl][:, None, None], d.shape)[inside],
            )
        if cov_out is not None:
            cov = np.clip(F32(0.5) - d / soft, F32(0), F32(1))
            m = own & (cov > 0)
            dd = d + rim_w
            rim = np.exp(-(dd * dd) / (rim_w * rim_w))
            look = STYLES[nuc["style"][sl]][:, :, None, None]
            chrom = nuc["dens"][sl][:, None, None] * (look[:, 0] + look[:, 1] * rim)
            if texture is not None:
                chrom = chrom * (F32(1) + look[:, 2] * texture.ravel()[flat])
            np.maximum.at(cov_out.ravel(), flat[m], cov[m])
            np.maximum.at(chrom_out.ravel(), flat[m], (cov * chrom)[m])
