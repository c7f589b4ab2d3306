"""The per-tile canvas: pixel grid, labels, owners and the material maps structures paint.

Painters composite premultiplied material amounts (cytoplasm, PAS-positive matrix, chromatin,
collagen, red cells) with anti-aliased coverages computed from signed distances.
"""

from __future__ import annotations

import math

import numpy as np

from shindan.slide_phantom import glomerulus as gm
from shindan.slide_phantom import nuclei as nz
from shindan.slide_phantom import shapes
from shindan.slide_phantom.noise import grid_noise, hash_uniform
from shindan.slide_phantom.params import KEY_EDGE, KEY_WOBBLE, WOBBLE_UM
from shindan.slide_phantom.scene import PhantomScene
from shindan.slide_phantom.tubule import tubule_geometry, tubule_sdf

F32 = np.float32
CYTO, MATRIX, CHROM, COLL, RBC = range(5)
CAPILLARY_PX_MIN = 3.0  # draw capillary loops only when they span this many output pixels


class Grid:
    """Pixel-centre coordinates (level-0 px) of a box sampled every ``ds`` pixels, plus a pad."""

    def __init__(self, box: tuple[int, int, int, int], ds: float, pad: int):
        x0, y0, w, h = box
        self.ds, self.pad = float(ds), pad
        self.w, self.h = int(math.ceil(w / ds - 1e-9)), int(math.ceil(h / ds - 1e-9))
        self.xs = x0 + (np.arange(-pad, self.w + pad) + 0.5) * ds
        self.ys = y0 + (np.arange(-pad, self.h + pad) + 0.5) * ds
        self.shape = (len(self.ys), len(self.xs))

    def window(self, x0: float, y0: float, x1: float, y1: float):
        c0, c1 = np.searchsorted(self.xs, [x0, x1])
        r0, r1 = np.searchsorted(self.ys, [y0, y1])
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(int(r0), int(r1)), slice(int(c0), int(c1))

    def local(self, win, x: float, y: float):
        """Float32 offsets from (x, y) of the window's columns (1, w) and rows (h, 1)."""
        return (
            (self.xs[win[1]] - x).astype(F32)[None, :],
            (self.ys[win[0]] - y).astype(F32)[:, None],
        )

    def query_box(self, margin: float):
        ds = self.ds
        return (
            self.xs[0] - ds - margin,
            self.ys[0] - ds - margin,
            self.xs[-1] + ds + margin,
            self.ys[-1] + ds + margin,
        )


def cov(d: np.ndarray, width: float) -> np.ndarray:
    """Area coverage of the inside (d <= 0) of a pixel ``width`` level-0 px wide."""
    return np.clip(F32(0.5) - d * F32(1.0 / width), F32(0), F32(1))


def _tex(g: Grid, win, scale: float, key: int) -> np.ndarray | None:
    """Noise of feature size ``scale`` (level-0 px) on a window, or None if below 2 pixels."""
    if scale < 2 * g.ds:
        return None
    ys = g.ys if win is None else g.ys[win[0]]
    xs = g.xs if win is None else g.xs[win[1]]
    return grid_noise(xs, ys, scale, key)


def _tissue_sdf(scene: PhantomScene, g: Grid) -> np.ndarray | None:
    cores = scene.cores
    qx0, qy0, qx1, qy1 = g.query_box(0)
    d = None
    for i in range(len(cores["ox"])):
        m = cores["hw"][i] + abs(cores["bend_a"][i]) + cores["edge_amp"].sum() + g.ds
        ex = cores["ox"][i] + cores["length"][i] * cores["ux"][i]
        ey = cores["oy"][i] + cores["length"][i] * cores["uy"][i]
        if (
            min(cores["ox"][i], ex) - m > qx1
            or max(cores["ox"][i], ex) + m < qx0
            or min(cores["oy"][i], ey) - m > qy1
            or max(cores["oy"][i], ey) + m < qy0
        ):
            continue
        dx = (g.xs - cores["ox"][i]).astype(F32)[None, :]
        dy = (g.ys - cores["oy"][i]).astype(F32)[:, None]
        ux, uy = F32(cores["ux"][i]), F32(cores["uy"][i])
        u = dx * ux + dy * uy
        v = dy * ux - dx * uy
        bend = u * F32(cores["bend_k"][i]) + F32(cores["bend_p"][i])
        v = v - F32(cores["bend_a"][i]) * np.sin(bend)
        di = shapes.core_sdf_raw(u, v, F32(cores["length"][i]), F32(cores["hw"][i]))
        d = di if d is None else np.minimum(d, di)
    if d is None:
        return None
    return d - shapes.edge_noise_grid(g.xs, g.ys, cores, KEY_EDGE)


class Canvas:
    """Per-tile maps being painted: labels, owner keys and material amounts."""

    def __init__(self, scene: PhantomScene, g: Grid, rgb: bool, labels: bool):
        self.scene, self.g, self.rgb = scene, g, rgb
        self.mpp = scene.mpp
        self.tissue_d = _tissue_sdf(scene, g)
        self.has_tissue = self.tissue_d is not None and bool((self.tissue_d <= g.ds).any())
        shape = g.shape
        self.lab = np.zeros(shape, np.uint8)
        self.own = np.full(shape, -1, np.int64)
        if self.has_tissue:
            tissue = self.tissue_d <= 0
            self.tissue = tissue
            self.lab[tissue] = 1
            self.own[tissue] = 0
        self.mat = np.zeros((5,) + shape, F32) if rgb else None
        self.fine = self.mid = None
        self._fields: dict = {}
        if rgb:
            self.fine = _tex(g, None, 1.1 / self.mpp, 21)
            self.mid = _tex(g, None, 4.0 / self.mpp, 22)
            self.aa = g.ds  # anti-aliasing width

    def um(self, v: float) -> F32:
        return F32(v / self.mpp)

    def field(self, win, scale_um: float, key: int, geometry: bool = False) -> np.ndarray | None:
        """Tile-wide noise (computed once per tile) cut to a window.

        Texture fields are None below resolution; ``geometry`` fields (which move outlines,
        hence labels) are always computed so labels never depend on the downsample.
        """
        if (scale_um, key) not in self._fields:
            g = self.g
            self._fields[(scale_um, key)] = (
                grid_noise(g.xs, g.ys, scale_um / self.mpp, key)
                if geometry
                else _tex(g, None, scale_um / self.mpp, key)
            )
        f = self._fields[(scale_um, key)]
        return None if f is None or win is None else f[win]

    def put(self, win, values: list, cover: np.ndarray) -> None:
        """Composite premultiplied material ``values`` over the window with coverage ``cover``."""
        keep = F32(1) - cover
        for m, val in enumerate(values):
            cur = self.mat[m][win]
            cur *= keep
            if val is not None:
                cur += val

    def label(self, win, inside: np.ndarray, code: int, key: int) -> None:
        m = inside & self.tissue[win]
        self.lab[win][m] = code
        self.own[win][m] = key

    # --- interstitium ---------------------------------------------------------------------

    def interstitium(self) -> None:
        g, mpp = self.g, self.mpp
        # Collagen: faint wispy ridges over a mottled base.
        fib = _tex(g, None, 7.0 / mpp, 31)
        if fib is not None:
            fib2 = _tex(g, None, 4.3 / mpp, 32)
            if fib2 is not None:  # two incommensurate lattices hide each other's grid
                fib = F32(0.6) * fib + F32(0.4) * fib2
            fibre = F32(1) - np.abs(fib)
            fibre = fibre * fibre
        else:
            fibre = F32(0.5)
        mott = F32(0) if self.mid is None else self.mid
        dense = F32(0.15 + 0.4 * self.scene.fibrosis)
        self.mat[COLL] = F32(0.6) + dense * F32(0.5) * fibre + F32(0.12) * mott
        self.mat[CYTO] = F32(0.12)
        self.mat[MATRIX] = F32(0.08) + F32(0.12) * fibre
        self.mat[CHROM] = F32(0.01)
        self._capillaries()

    def _capillaries(self) -> None:
        """Peritubular capillaries: small lumens on a jittered lattice, some with red cells."""
        g, mpp = self.g, self.mpp
        if 4.0 / mpp < 2 * g.ds:
            return
        s = 14.0 / mpp
        x0, y0, x1, y1 = g.query_box(s)
        ix, iy = np.meshgrid(
            np.arange(int(x0 // s), int(x1 // s) + 1), np.arange(int(y0 // s), int(y1 // s) + 1)
        )
        ix, iy = ix.ravel(), iy.ravel()
        u = hash_uniform(ix, iy, 34, 0)
        keep = u > F32(0.7)
        ix, iy, u = ix[keep], iy[keep], u[keep]
        if len(u) == 0:
            return
        cx = (ix + 0.5 + 0.9 * (hash_uniform(ix, iy, 34, 1) - 0.5)) * s
        cy = (iy + 0.5 + 0.9 * (hash_uniform(ix, iy, 34, 2) - 0.5)) * s
        r = F32(1.0 / mpp) + F32(4.0 / mpp) * (u - F32(0.7))
        half = float(r.max()) + 1.0 / mpp
        flat, dx, dy, valid = nz.patches(g.xs, g.ys, g.ds, cx, cy, half)
        d = np.sqrt(dx * dx + dy * dy) - r[:, None, None]
        lum = cov(d, g.ds)
        wall = cov(d - F32(0.7 / mpp), g.ds) - lum
        rbc = lum * (u > F32(0.93))[:, None, None] * cov(d + F32(0.8 / mpp), g.ds)
        cover = np.zeros(g.shape, F32)
        ring = np.zeros(g.shape, F32)
        red = np.zeros(g.shape, F32)
        m = valid & (wall + lum > 0)
        np.maximum.at(cover.ravel(), flat[m], lum[m])
        np.maximum.at(ring.ravel(), flat[m], wall[m])
        np.maximum.at(red.ravel(), flat[m], rbc[m])
        keep_m = F32(1) - cover
        for k in (CYTO, MATRIX, COLL):
            self.mat[k] *= keep_m
        self.mat[MATRIX] += ring * F32(0.3)
        self.mat[CYTO] += cover * F32(0.08)
        self.mat[RBC] = red * F32(0.8)

    # --- tubules ----------------------------------------------------------------------------

    def tubules(self) -> np.ndarray:
        scene, g = self.scene, self.g
        tub = scene.tubules
        qb = g.query_box(2 / self.mpp)
        idx = scene.index["tubule"].query(*qb)
        if len(idx) == 0:
            return idx
        geo = tubule_geometry(tub, idx, scene.shrink, self.mpp)
        hu = hash_uniform(scene.seed, 110, idx)
        wob_amp = F32(WOBBLE_UM[1] / self.mpp)
        for j, i in enumerate(idx):
            a = float(geo["a"][j]) + g.ds
            x, y = tub["x"][i], tub["y"][i]
            win = g.window(x - a, y - a, x + a, y + a)
            if win is None:
                continue
            qx, qy = g.local(win, x, y)
            d = tubule_sdf(qx, qy, tub, geo, i, j, int(tub["nh"][i]))
            d = d + wob_amp * self.field(win, WOBBLE_UM[0], KEY_WOBBLE, geometry=True)
            self.label(win, d <= 0, 3, 4 * int(i) + nz.KIND_TUBULE)
            if not self.rgb:
                continue
            # The lumen: the outline inset by membrane + epithelium, but with corners rounded
            # more generously than a plain offset would give.
            mt, epi = geo["mt"][j], geo["epi"][j]
            inset = geo["gap"][j] + mt + epi
            room = F32(0.5 * float(tub["spacing"])) - inset
            rl = np.maximum(F32(0.6) * room, F32(1.5 / self.mpp))
            dl = shapes.rounded_cell_sdf(
                qx,
                qy,
                tub["hp_ux"][i],
                tub["hp_uy"][i],
                tub["hp_h"][i],
                inset,
                rl,
                int(tub["nh"][i]),
            )
            dl = np.maximum(
                dl + wob_amp * self.field(win, WOBBLE_UM[0], KEY_WOBBLE, True), d + mt + epi
            )
            self._paint_tubule(win, d, dl, geo, j, bool(tub["distal"][i]), float(hu[j]))
        return idx

    def _paint_tubule(self, win, d, dl, geo, j, distal, h) -> None:
        aa, mpp = self.aa, self.mpp
        c_out = cov(d, aa)
        mt, epi, ti = geo["mt"][j], geo["epi"][j], float(geo["t"][j])
        c_in = cov(d + mt, aa)
        wob = self.field(win, 9.0, 24)
        if wob is not None:  # lumens are not perfect offsets of the outline
            dl = dl + F32(0.22) * epi * wob
        c_lum = cov(dl, aa)
        epi_cov = c_in - c_lum
        # Cytoplasm is denser at the base than at the apex.
        depth = np.clip((d + mt) / (-epi), F32(0), F32(1))
        tex = F32(1.15) - F32(0.3) * depth
        gain = F32(self.scene.palette["texture"])
        if self.fine is not None:
            tex = tex + F32(0.25) * gain * self.fine[win]
        if self.mid is not None:
            tex = tex + F32(0.12) * gain * self.mid[win]
        lvl = F32((0.72 if distal else 1.0) * (1 - 0.3 * ti) * (0.88 + 0.24 * h))
        # Lumens hold a little flocculent protein, more in some tubules than in others.
        floc = F32(0.03 + 0.12 * h * h)
        if self.mid is not None:
            floc = floc * (F32(1) + F32(0.8) * self.mid[win])
        cyto = epi_cov * lvl * tex + c_lum * floc
        matrix = (c_out - c_in) * F32(1.0) + epi_cov * F32(0.12)
        if not distal:  # PAS-bright brush border, fuzzy towards the lumen
            c_bb = cov(dl - F32(2.0 / mpp), aa)
            bb = c_bb - c_lum
            if self.fine is not None:
                bb = bb * (F32(0.8) + F32(0.4) * self.fine[win])
            matrix = matrix + bb * F32(0.5 * (1 - ti))
        if ti > 0.55 and h < 0.5:  # hyaline cast in an atrophic tubule
            matrix = matrix + c_lum * F32(0.35)
            cyto = cyto + c_lum * F32(0.15)
        self.put(win, [cyto, matrix, epi_cov * F32(0.02), None, None], c_out)

    # --- glomeruli --------------------------------------------------------------------------

    def glomeruli(self) -> np.ndarray:
        scene, g = self.scene, self.g
        gl = scene.glomeruli
        idx = scene.index["glomerulus"].query(*g.query_box(2 / self.mpp))
        for i in idx:
            r = float(gl["r"][i]) + g.ds
            x, y = gl["x"][i], gl["y"][i]
            win = g.window(x - r, y - r, x + r, y + r)
            if win is None:
                continue
            qx, qy = g.local(win, x, y)
            rad = np.sqrt(qx * qx + qy * qy)
            d = rad - F32(gl["r"][i])
            self.label(win, d <= 0, 2, 4 * int(i) + nz.KIND_GLOM)
            if self.rgb:
                self._paint_glom(win, i, qx, qy, rad, d)
        return idx

    def _paint_glom(self, win, i, qx, qy, rad, d) -> None:
        scene, aa, g, mpp = self.scene, self.aa, self.g, self.mpp
        scl = bool(scene.glomeruli["sclerosed"][i])
        c_out = cov(d, aa)
        rin = gm.inner_radius(scene, i)
        c_in = cov(rad - rin, aa)
        c_tuft = np.minimum(cov(gm.tuft_sdf(scene, i, qx, qy), aa), c_in)
        capsule = c_out - c_in
        bowman = c_in - c_tuft
        n2 = self.field(win, 12.0, 43)
        if scl:
            # Glassy, PAS-bright, nearly acellular tuft; laminated fibrous capsule around it.
            tex = F32(1) if n2 is None else F32(1) + F32(0.22) * n2
            wr = self.field(win, 3.0, 44)
            if wr is not None:  # wrinkled, glassy collapse
                tex = tex + F32(0.25) * (F32(1) - np.abs(wr)) ** 4
            lam = F32(0.5)
            if 2.5 / mpp >= 2 * g.ds:
                lam = F32(0.5) + F32(0.5) * np.sin(rad * F32(2 * np.pi * mpp / 2.5))
            cyto = bowman * F32(0.12) + c_tuft * F32(0.3) * tex
            matrix = capsule * (F32(0.8) + F32(0.5) * lam) + c_tuft * F32(0.62) * tex
            matrix = matrix + bowman * F32(0.25)
            coll = capsule * F32(0.5) + bowman * F32(0.6) * tex
            self.put(win, [cyto, matrix, c_tuft * F32(0.03), coll, None], c_out)
            return
        if CAPILLARY_PX_MIN * g.ds <= gm.CAPILLARY_UM / mpp:
            lumen_d, solid, rbc_cell = gm.capillaries_grid(scene, g.xs[win[1]], g.ys[win[0]])
            open_ = ~solid
            c_lum = cov(lumen_d, aa) * open_
            c_gbm = cov(lumen_d - F32(0.8 / mpp), aa) * open_ - c_lum
            c_rbc = c_lum * rbc_cell * cov(lumen_d + F32(1.2 / mpp), aa)
        else:  # loops below resolution: their average
            c_lum, c_gbm, c_rbc = F32(0.3), F32(0.12), F32(0.03)
        cells = F32(1) - c_lum
        tex = F32(1) if self.fine is None else F32(1) + F32(0.2) * self.fine[win]
        cyto = bowman * F32(0.03) + c_tuft * (cells * F32(0.5) * tex + c_lum * F32(0.16))
        matrix = capsule * F32(1.15) + c_tuft * (cells * F32(0.3) + c_gbm * F32(0.55))
        self.put(
            win,
            [cyto, matrix, c_tuft * F32(0.03), capsule * F32(0.15), c_tuft * c_rbc * F32(0.7)],
            c_out,
        )

    # --- vessels ----------------------------------------------------------------------------

    def vessels(self) -> np.ndarray:
        scene, g = self.scene, self.g
        v = scene.vessels
        idx = scene.index["vessel"].query(*g.query_box(2 / self.mpp))
        for i in idx:
            r = float(v["r"][i]) + g.ds
            x, y = v["x"][i], v["y"][i]
            win = g.window(x - r, y - r, x + r, y + r)
            if win is None:
                continue
            qx, qy = g.local(win, x, y)
            ang = float(v["angle"][i])
            lx, ly = shapes.rotate(qx, qy, math.cos(ang), math.sin(ang))
            rr, asp = F32(v["r"][i]) * F32(0.97), F32(v["aspect"][i])
            d = shapes.ellipse_sdf(lx, ly, rr, rr * asp)
            self.label(win, d <= 0, 4, 4 * int(i) + nz.KIND_VESSEL)
            if self.rgb:
                self._paint_vessel(win, i, lx, ly, rr, asp, d)
        return idx

    def _paint_vessel(self, win, i, lx, ly, rr, asp, d) -> None:
        aa = self.aa
        v = self.scene.vessels
        artery = bool(v["artery"][i])
        rho = np.sqrt((lx / rr) ** 2 + (ly / (rr * asp)) ** 2)
        rm = rr * (F32(1) + asp) * F32(0.5)
        lum = F32(v["lumen"][i])
        if self.mid is not None:
            lum = lum + F32(0.025) * self.mid[win]  # slightly irregular lumen outline

        def ring(r0):  # coverage of rho <= r0
            return cov((rho - r0) * rm, aa)

        c_out = cov(d, aa)
        adv = F32(0.86 if artery else 0.9)
        c_med = ring(adv)
        iel_w = F32(1.2 / self.mpp) / rm
        c_iel = ring(lum + F32(0.03) + iel_w)
        c_int = ring(lum + F32(0.03))
        c_lum = ring(lum)
        media = c_med - c_iel
        fib = F32(1)
        if self.fine is not None:
            fib = F32(1) + F32(0.2) * self.fine[win]
        n = self.field(win, 5.0, 51)
        rbc = c_lum * (F32(0.1) if n is None else np.clip(n - F32(0.1), F32(0), F32(0.6)))
        cyto = (
            media * F32(1.1) * fib
            + (c_int - c_lum) * F32(0.5)
            + (c_out - c_med) * F32(0.15)
            + c_lum * F32(0.06)
        )
        matrix = (c_iel - c_int) * F32(1.1) + media * F32(0.2) + (c_out - c_med) * F32(0.25)
        coll = (c_out - c_med) * F32(1.4) * fib
        self.put(win, [cyto, matrix, media * F32(0.02), coll, rbc], c_out)

    # --- nuclei -----------------------------------------------------------------------------

    def nuclei(self, tub_idx, glom_idx, ves_idx, ids_out, cov_out, chrom_out) -> None:
        scene, g = self.scene, self.g
        parts = []
        if len(tub_idx):
            geo = tubule_geometry(scene.tubules, tub_idx, scene.shrink, self.mpp)
            parts.append(nz.tubule_nuclei(scene, tub_idx, geo))
        parts.append(nz.glomerulus_nuclei(scene, glom_idx))
        parts.append(nz.vessel_nuclei(scene, ves_idx))
        inter = scene.index["inter"].query(*g.query_box(2 / self.mpp))
        parts.append(nz.inter_nuclei(scene, inter))
        nuc = nz.concat(parts)
        x0, y0, x1, y1 = g.query_box(0)
        a = nuc["a"]
        keep = (nuc["x"] + a > x0) & (nuc["x"] - a < x1) & (nuc["y"] + a > y0) & (nuc["y"] - a < y1)
        nuc = {k: v[keep] for k, v in nuc.items()}
        nz.rasterise(
            nuc, g.xs, g.ys, g.ds, self.own, ids_out, cov_out, chrom_out, self.fine, self.mpp
        )
