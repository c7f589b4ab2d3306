"""Training tiles for the compartment model: random crops of labelled images, cut-outs pasted
on interstitium backgrounds, synthetic glass edges, stain transfer and augmentation, drawn from
the sources in set proportions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shindan.io.annotations import IGNORE
from shindan.kidney.labels import GLOMERULUS, NON_TISSUE, VESSEL
from shindan.kidney.training.labelled import Cutout, LabelledImage, scaled_shape
from shindan.kidney.training.stain_transfer import transfer_stain
from shindan.nuclei.data import resize


def _random_crop(
    img: LabelledImage,
    size: int,
    rng: np.random.Generator,
    zoom: tuple[float, float] = (1.0, 1.0),
    focus: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A size×size crop, zoomed by a random factor in ``zoom`` (padded with unknown label and
    white if the image is smaller). With ``focus`` (flat indices of pixels to aim at, e.g. a
    class's, from :func:`numpy.flatnonzero`) the crop contains a random one of them, anywhere
    in its central half; an empty ``focus`` means a plain random crop.
    """
    z = rng.uniform(*zoom)
    src = max(8, int(round(size / z)))
    h, w = img.label.shape
    y = int(rng.integers(0, max(1, h - src + 1)))
    x = int(rng.integers(0, max(1, w - src + 1)))
    if focus is not None and len(focus):
        cy, cx = divmod(int(focus[int(rng.integers(len(focus)))]), w)
        y = int(np.clip(cy - rng.integers(src // 4, 3 * src // 4 + 1), 0, max(0, h - src)))
        x = int(np.clip(cx - rng.integers(src // 4, 3 * src // 4 + 1), 0, max(0, w - src)))
    im = img.image[y : y + src, x : x + src]
    lab = img.label[y : y + src, x : x + src]
    if src != size:
        th, tw = scaled_shape(lab.shape, size / src)
        th, tw = min(th, size), min(tw, size)
        im, lab = resize(im, (th, tw)), resize(lab, (th, tw), nearest=True)
    if im.shape[:2] != (size, size):
        pad_im = np.full((size, size, 3), 240, np.uint8)
        pad_lab = np.full((size, size), IGNORE, np.uint8)
        pad_im[: im.shape[0], : im.shape[1]] = im
        pad_lab[: lab.shape[0], : lab.shape[1]] = lab
        im, lab = pad_im, pad_lab
    return im, lab


def composite(
    background: LabelledImage,
    cutouts: list[Cutout],
    size: int,
    rng: np.random.Generator,
    n_paste: tuple[int, int] = (6, 16),
    harmonised_prob: float = 0.75,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste random cut-outs (random dihedral turn, ±15% scale) on a background crop.

    ``harmonised_prob``: chance of pasting a cut-out in the reference stain (see
    :func:`~shindan.kidney.training.stain_transfer.harmonise_sources`) rather than its own
    slide's.
    """
    im, lab = _random_crop(background, size, rng)
    im, lab = im.copy(), lab.copy()
    # weight classes so that glomeruli and vessels are not drowned by tubules
    codes = np.array([c.code for c in cutouts])
    w = np.array([{GLOMERULUS: 1.5, VESSEL: 1.5}.get(c, 1.0) / np.sum(codes == c) for c in codes])
    w /= w.sum()
    for _ in range(int(rng.integers(*n_paste))):
        c = cutouts[int(rng.choice(len(cutouts), p=w))]
        # most of the time, the cut-out in the backgrounds' stain (see harmonise_sources)
        ci = (
            c.harmonised if c.harmonised is not None and rng.random() < harmonised_prob else c.image
        )
        cm = c.mask
        z = rng.uniform(0.85, 1.15)
        shape = scaled_shape(ci.shape, z)
        ci, cm = resize(ci, shape), resize(cm.astype(np.uint8), shape, nearest=True) > 0
        k = int(rng.integers(4))
        ci, cm = np.rot90(ci, k), np.rot90(cm, k)
        if rng.random() < 0.5:
            ci, cm = ci[:, ::-1], cm[:, ::-1]
        ch, cw = cm.shape
        holes = np.flatnonzero(lab == IGNORE)
        if len(holes) and rng.random() < 0.8:
            # centre it on a blacked-out hole, so pastes fill the holes as the originals did
            hy, hx = divmod(int(holes[int(rng.integers(len(holes)))]), size)
            y, x = hy - ch // 2, hx - cw // 2
        else:
            y = int(rng.integers(-ch // 2, size - ch // 2))
            x = int(rng.integers(-cw // 2, size - cw // 2))
        ys, xs = slice(max(0, y), min(size, y + ch)), slice(max(0, x), min(size, x + cw))
        cys = slice(ys.start - y, ys.stop - y)
        cxs = slice(xs.start - x, xs.stop - x)
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        m = cm[cys, cxs]
        im[ys, xs][m] = ci[cys, cxs][m]
        lab[ys, xs][m] = c.code
    return im, lab


def add_glass_edge(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Replace a random half-plane beyond a wavy edge with empty glass (label non-tissue)."""
    h, w = label.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    d = (xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)
    d += 6 * np.sin(xx / rng.uniform(8, 30)) + 6 * np.cos(yy / rng.uniform(8, 30))
    cut = d > rng.uniform(0.1, 0.45) * min(h, w)
    glass = np.clip(
        rng.normal(rng.uniform(225, 248), 4, (h, w, 1)) + rng.normal(0, 3, (1, 1, 3)), 0, 255
    ).astype(np.uint8)
    img = np.where(cut[..., None], glass, image)
    lab = np.where(cut, NON_TISSUE, label).astype(np.uint8)
    return img, lab


@dataclass
class CompartmentData:
    """Everything the compartment sampler draws from, loaded once."""

    tiles: list[LabelledImage]
    backgrounds: list[LabelledImage]
    cutouts: list[Cutout]
    pas: list[LabelledImage]
    phantoms: list[LabelledImage] = field(default_factory=list)
    # glomerulus crops (PAS, other labs): a share of the PAS draws when present
    crops: list[LabelledImage] = field(default_factory=list)
    # colour statistics by stain for stain transfer (see stain_references)
    stain_refs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)


def make_compartment_sampler(
    data: CompartmentData,
    size: int,
    *,
    mix: tuple[float, float, float, float] = (0.3, 0.3, 0.25, 0.15),
    pas_like: float = 0.4,
    glass_edge: float = 0.15,
    zoom: tuple[float, float] = (0.9, 1.1),
    harmonised_prob: float = 0.75,
    stain_strength: float = 1.0,
    density: tuple[float, float] = (1.0, 1.0),
    grey_prob: float = 0.0,
    transfer: float = 0.0,
    transfer_pas: float = 0.4,
    glomerulus_focus: float = 0.0,
    crop_share: float = 0.5,
    crops_keep_stain: bool = False,
):
    """Sampler of (image, label) tiles: real H&E tiles, H&E composites, PAS images and
    phantoms in the proportions ``mix`` (missing sources are skipped), with stain and
    glass-edge augmentation.

    ``zoom``: scale jitter of real tiles and phantoms (PAS images, whose scale is estimated,
    get a range 1.2× wider each way); ``harmonised_prob``: see :func:`composite`;
    ``stain_strength``, ``density``, ``grey_prob``: see
    :func:`shindan.engine.augment.stain_augment`; ``transfer``: chance of first re-colouring
    a tile to a random training slide's colour statistics (``data.stain_refs``; a PAS one
    with chance ``transfer_pas``), see :func:`transfer_stain`; ``glomerulus_focus``: chance
    that a crop of a real tile or PAS image is placed on a glomerulus (glomeruli cover a few %
    of cortex, so random crops rarely teach them); ``crop_share``: the share of PAS draws
    taken from ``data.crops`` when there are PAS images too; ``crops_keep_stain``: stain
    transfer re-colours a crop only to references of its own stain (a PAS glomerulus turned
    H&E-pink looks like a pale H&E tubule, and teaches tubules to be glomeruli).
    """
    from shindan.engine.augment import flip_rotate, stain_augment

    sources = [
        (p, s)
        for p, s in zip(mix, ("tile", "composite", "pas", "phantom"), strict=True)
        if {
            "tile": data.tiles,
            "composite": data.backgrounds and data.cutouts,
            "pas": data.pas or data.crops,
            "phantom": data.phantoms,
        }[s]
    ]
    if not sources:
        raise ValueError("no training data for the compartment sampler")
    probs = np.array([p for p, _ in sources], float)
    probs /= probs.sum()
    pas_zoom = (zoom[0] / 1.2, zoom[1] * 1.2)

    glomerulus_px: dict[int, np.ndarray] = {}  # per image, found once: crops aim at them

    def _focus(img: LabelledImage, rng: np.random.Generator) -> np.ndarray | None:
        if rng.random() >= glomerulus_focus:
            return None
        if id(img) not in glomerulus_px:
            glomerulus_px[id(img)] = np.flatnonzero(img.label == GLOMERULUS)
        return glomerulus_px[id(img)]

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        kind = sources[int(rng.choice(len(sources), p=probs))][1]
        from_crops = False
        if kind == "tile":
            t = data.tiles[int(rng.integers(len(data.tiles)))]
            im, lab = _random_crop(t, size, rng, zoom, focus=_focus(t, rng))
        elif kind == "composite":
            bg = data.backgrounds[int(rng.integers(len(data.backgrounds)))]
            im, lab = composite(bg, data.cutouts, size, rng, harmonised_prob=harmonised_prob)
        elif kind == "pas":
            # no extra draw without crops: the shipped models' draws stay as they were
            from_crops = bool(data.crops) and (not data.pas or rng.random() < crop_share)
            pool = data.crops if from_crops else data.pas
            t = pool[int(rng.integers(len(pool)))]
            # the PAS scale is an estimate: jitter it widely
            im, lab = _random_crop(t, size, rng, pas_zoom, focus=_focus(t, rng))
        else:
            t = data.phantoms[int(rng.integers(len(data.phantoms)))]
            im, lab = _random_crop(t, size, rng, zoom)
        im, lab = flip_rotate(im, lab, rng)
        if rng.random() < glass_edge:
            im, lab = add_glass_edge(im, lab, rng)
        if data.stain_refs and rng.random() < transfer:
            if from_crops and crops_keep_stain and t.stain in data.stain_refs:
                group = t.stain
            else:
                group = "PAS" if "PAS" in data.stain_refs and rng.random() < transfer_pas else "H&E"
            refs = data.stain_refs.get(group) or next(iter(data.stain_refs.values()))
            im = transfer_stain(im, refs[int(rng.integers(len(refs)))], rng)
        im = stain_augment(
            im,
            rng,
            strength=stain_strength,
            pas_prob=pas_like if kind in ("tile", "composite") else 0.0,
            density=density,
            grey_prob=grey_prob,
        )
        return im, lab

    return sample
