"""Training tiles for the kidney compartment model from the real reference data.

Label codes are the contract's: 0 non-tissue, 1 interstitium, 2 glomerulus, 3 tubule,
4 vessel; 255 = unknown (no loss); 254 = "not glomerulus" (images on which only glomeruli
were outlined: the loss says such a pixel is non-tissue, interstitium or tubule, see
:data:`LABEL_SETS`).

Sources (``root`` is the shared ``data/kidney`` folder):

* ``tiles-aapi-he/<tile>/``: real H&E tiles (≈0.25 µm/px) with full labels (255 = unknown);
* ``compartments-aapi-he/``: cut-outs of single structures (image + mask), pasted onto the
  tiles' interstitium backgrounds (every structure painted black) to make new compositions;
* ``glomeruli-hubmap-pas/``: PAS images with glomerulus polygons (labelme), scale estimated
  at ≈0.95 µm/px from glomerulus sizes (see :data:`HUBMAP_MPP`);
* ``glomerulosclerosis-aidpath/``: PAS glomerulus crops with masks from three labs
  (:data:`AIDPATH_LABS`); a recipe may train on some labs' crops and test on the others' (their
  licence is non-commercial, and a model trained on them inherits it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shindan.io.annotations import IGNORE, rasterize, read_label_mask, read_labelme
from shindan.nuclei.data import read_rgb, resize

NON_TISSUE, INTERSTITIUM, GLOMERULUS, TUBULE, VESSEL = range(5)
CLASSES = ["non-tissue", "interstitium", "glomerulus", "tubule", "vessel"]
NOT_GLOMERULUS = 254
# "Not glomerulus" leaves vessel out: vessels are a few % of cortex, and with vessel allowed
# the model learnt to file all PAS tissue under vessel (free under the partial label), which
# then leaked into pale H&E tubules.
LABEL_SETS = {NOT_GLOMERULUS: [NON_TISSUE, INTERSTITIUM, TUBULE]}
# User annotations with ``--unannotated other``: an image's unannotated pixels are "none of the
# classes annotated in it", written as OTHER_BASE + the bit mask of the classes still allowed.
OTHER_BASE = 200


def other_code(annotated: Sequence[int]) -> int:
    """The partial-label code of "none of ``annotated``" (IGNORE when that rules out every
    class, and so says nothing).

    Examples
    --------
    >>> other_code([GLOMERULUS]) - OTHER_BASE == 0b11011  # any class but glomerulus
    True
    >>> other_code(range(5)) == IGNORE
    True
    """
    allowed = sum(1 << c for c in range(len(CLASSES)) if c not in set(annotated))
    return OTHER_BASE + allowed if allowed else IGNORE


def other_label_sets(codes: Sequence[int]) -> dict[int, list[int]]:
    """The classes each :func:`other_code` in ``codes`` allows (other codes are skipped)."""
    top = OTHER_BASE + (1 << len(CLASSES))
    return {
        int(c): [k for k in range(len(CLASSES)) if (int(c) - OTHER_BASE) >> k & 1]
        for c in codes
        if OTHER_BASE < c < top
    }


AAPI_MPP = 0.25
# HuBMAP images carry no scale. Their glomeruli measure 190 px (median equivalent diameter,
# 490 polygons) against 720 px at 0.25 µm/px for the AAPI glomeruli, i.e. ≈180 µm, so
# ≈0.95 µm/px; training jitters scale by ±20% to absorb the uncertainty.
HUBMAP_MPP = 0.95
AAPI_TILES = ("11000_16000_0", "13600_18000_0", "HE_001")

_CUTOUT_CLASS = re.compile(
    r"_(glomerulus_gs|glomerulus|glom|proximal_tubule|distal_tubule|tubules|tubule|artery|"
    r"arteriole)_\d+$"
)
_CLASS_CODE = {
    "glomerulus_gs": GLOMERULUS,
    "glomerulus": GLOMERULUS,
    "glom": GLOMERULUS,
    "proximal_tubule": TUBULE,
    "distal_tubule": TUBULE,
    "tubules": TUBULE,
    "tubule": TUBULE,
    "artery": VESSEL,
    "arteriole": VESSEL,
}


@dataclass
class LabelledImage:
    """An image and its label map at the training µm/px (``mpp``)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    stain: str
    mpp: float


@dataclass
class Cutout:
    """One structure: RGB crop, its mask, its class code, at ``mpp``."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    code: int
    mpp: float
    harmonised: np.ndarray | None = None


def _scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def _resize_label(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Shrink a label map by majority vote (one-hot area averaging), keeping unknown codes."""
    codes = np.unique(label)
    if len(codes) == 1:
        return np.full(shape, codes[0], label.dtype)
    votes = np.stack([resize((label == c).astype(np.float32), shape) for c in codes])
    return codes[votes.argmax(0)].astype(label.dtype)


def glass_mask(image: np.ndarray, min_area_px: int = 400) -> np.ndarray:
    """Bright, grey (unstained) regions of at least ``min_area_px`` pixels: glass, not tissue."""
    import cv2
    from skimage.morphology import remove_small_objects

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    glass = (hsv[..., 2] > 215) & (hsv[..., 1] < 25)
    glass = cv2.morphologyEx(glass.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    return remove_small_objects(glass.astype(bool), max_size=min_area_px - 1)


# ------------------------------------------------------------------------------ AAPI (H&E)
def load_aapi_tile(root: Path, name: str, mpp: float) -> LabelledImage:
    """A rebuilt AAPI tile and its 5-class labels (255 unknown) at ``mpp``."""
    folder = root / "tiles-aapi-he" / name
    image = read_rgb(folder / "image.jpg")
    label = read_label_mask(folder / "labels.png").astype(np.uint8)
    shape = _scaled_shape(image.shape, AAPI_MPP / mpp)
    return LabelledImage(name, resize(image, shape), _resize_label(label, shape), "H&E", mpp)


def load_aapi_background(root: Path, name: str, mpp: float) -> LabelledImage:
    """A tile with every structure painted black: interstitium and glass, holes unknown."""
    image = read_rgb(root / "compartments-aapi-he" / "background" / f"{name}_background.jpg")
    full = read_label_mask(root / "tiles-aapi-he" / name / "labels.png")
    label = np.where(full <= INTERSTITIUM, full, IGNORE).astype(np.uint8)
    shape = _scaled_shape(image.shape, AAPI_MPP / mpp)
    return LabelledImage(name, resize(image, shape), _resize_label(label, shape), "H&E", mpp)


def cutout_class(name: str) -> int | None:
    """Class code from a cut-out file stem (the class in the name is right, not the folder)."""
    m = _CUTOUT_CLASS.search(name)
    return _CLASS_CODE[m.group(1)] if m else None


def load_aapi_cutouts(root: Path, mpp: float, exclude: tuple[str, ...] = ()) -> list[Cutout]:
    """Every AAPI cut-out (file stem not containing any of ``exclude``) at ``mpp``."""
    out = []
    for img_path in sorted((root / "compartments-aapi-he" / "train").glob("*/*.jpg")):
        stem = img_path.stem
        if any(e in stem for e in exclude):
            continue
        code = cutout_class(stem)
        mask_path = img_path.with_name(f"{stem}_mask.png")
        if code is None or not mask_path.exists():
            continue
        image = read_rgb(img_path)
        mask = read_label_mask(mask_path) > 0
        if mask.shape != image.shape[:2] or mask.sum() < 50:
            continue
        shape = _scaled_shape(image.shape, AAPI_MPP / mpp)
        small_mask = resize(mask.astype(np.float32), shape) > 0.5
        if small_mask.sum() < 4:
            continue
        out.append(Cutout(stem, resize(image, shape), small_mask, code, mpp))
    return out


# ------------------------------------------------------------------------------ HuBMAP (PAS)
def hubmap_label(image: np.ndarray, json_path: Path, scale: float) -> np.ndarray:
    """Glomeruli 2, glass 0, other tissue 254 (not glomerulus) on a grid ``scale`` × the file's."""
    anns = read_labelme(json_path)
    shape = image.shape[:2]
    label = np.where(glass_mask(image), NON_TISSUE, NOT_GLOMERULUS).astype(np.uint8)
    glom = rasterize(anns, shape, None, scale=scale) > 0
    # a thin unknown rim: outlines are drawn by hand at a coarse scale
    import cv2

    rim = cv2.dilate(glom.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    label[rim] = IGNORE
    label[glom] = GLOMERULUS
    return label


def load_hubmap(
    root: Path, split: str, mpp: float, names: list[str] | None = None
) -> list[LabelledImage]:
    """HuBMAP PAS images of ``split`` ('train'/'test') with glomerulus labels, at ``mpp``."""
    out = []
    folder = root / "glomeruli-hubmap-pas" / split
    for js in sorted(folder.glob("*.json")):
        if names is not None and js.stem not in names:
            continue
        img = read_rgb(js.with_suffix(".jpg"))
        scale = HUBMAP_MPP / mpp
        small = resize(img, _scaled_shape(img.shape, scale))
        out.append(
            LabelledImage(
                f"hubmap-{split}-{js.stem}", small, hubmap_label(small, js, scale), "PAS", mpp
            )
        )
    return out


# AIDPATH crops name their lab first (e.g. SESCAM_1_0-32.jpg): three Spanish and Lithuanian
# hospital labs, so a lab split is an unseen-lab test.
AIDPATH_LABS = ("SAS", "SESCAM", "VUHSK")
# The crops were resized to 224 px whatever the glomerulus size: 0.9 µm/px is a typical scale
# (a 200 µm field), and training jitters it widely.
AIDPATH_CROP_MPP = 0.9


def aidpath_lab(name: str) -> str:
    """The lab of an AIDPATH crop from its file stem or :func:`load_aidpath` name."""
    stem = name.split("-", 2)[2] if name.startswith("aidpath-") else name
    return stem.split("_", 1)[0]


def load_aidpath(
    root: Path,
    crop_mpp: float,
    mpp: float,
    limit: int | None = None,
    labs: Sequence[str] | None = None,
    every: int = 1,
) -> list[LabelledImage]:
    """AIDPATH glomerulus crops (assumed ``crop_mpp`` µm/px) with masks: glomerulus 2, rest 254;
    only those of ``labs`` (see :data:`AIDPATH_LABS`) when given, and only every ``every``-th
    crop (chosen before reading, so the others are never read)."""
    base = root / "glomerulosclerosis-aidpath"
    out = []
    paths = sorted((base / "nonGS").glob("*.jpg")) + sorted((base / "GS").glob("*.jpg"))
    if labs is not None:
        paths = [p for p in paths if aidpath_lab(p.stem) in labs]
    paths = paths[::every]
    for p in paths[:limit] if limit else paths:
        m = base / "masks" / f"{p.stem}.png"
        if not m.exists():
            continue
        img = read_rgb(p)
        mask = np.asarray(read_rgb(m))[..., 0] > 127
        shape = _scaled_shape(img.shape, crop_mpp / mpp)
        small = resize(img, shape)
        lab = np.where(resize(mask.astype(np.float32), shape) > 0.5, GLOMERULUS, NOT_GLOMERULUS)
        out.append(
            LabelledImage(
                f"aidpath-{p.parent.name}-{p.stem}", small, lab.astype(np.uint8), "PAS", mpp
            )
        )
    return out


# ------------------------------------------------------------------------------ samplers
def split_columns(img: LabelledImage, at: float) -> tuple[LabelledImage, LabelledImage]:
    """Left and right parts of an image cut at fraction ``at`` of its width (spatial hold-out)."""
    c = int(round(img.label.shape[1] * at))
    return (
        LabelledImage(
            f"{img.name}-left", img.image[:, :c].copy(), img.label[:, :c].copy(), img.stain, img.mpp
        ),
        LabelledImage(
            f"{img.name}-right",
            img.image[:, c:].copy(),
            img.label[:, c:].copy(),
            img.stain,
            img.mpp,
        ),
    )


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
        th, tw = _scaled_shape(lab.shape, size / src)
        th, tw = min(th, size), min(tw, size)
        im, lab = resize(im, (th, tw)), resize(lab, (th, tw), nearest=True)
    if im.shape[:2] != (size, size):
        pad_im = np.full((size, size, 3), 240, np.uint8)
        pad_lab = np.full((size, size), IGNORE, np.uint8)
        pad_im[: im.shape[0], : im.shape[1]] = im
        pad_lab[: lab.shape[0], : lab.shape[1]] = lab
        im, lab = pad_im, pad_lab
    return im, lab


def _lab(pixels: np.ndarray) -> np.ndarray:
    import cv2

    return (
        cv2.cvtColor(pixels.reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    )


def match_colours(
    pixels: np.ndarray, reference: np.ndarray, source: np.ndarray | None = None
) -> np.ndarray:
    """Reinhard colour transfer: map CIELAB statistics of ``source`` (default: ``pixels``)
    onto those of ``reference``, and apply that map to ``pixels``; all (N, 3) uint8 RGB."""
    import cv2

    src = _lab(pixels)
    s_lab = _lab(source) if source is not None else src
    ref = _lab(reference)
    out = (src - s_lab.mean(0)) / (s_lab.std(0) + 1e-3) * ref.std(0) + ref.mean(0)
    out = np.clip(out, 0, 255).astype(np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB).reshape(-1, 3)


def colour_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB mean and standard deviation of (N, 3) uint8 RGB pixels."""
    lab = _lab(pixels)
    return lab.mean(0), lab.std(0)


def transfer_stain(
    image: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Give an RGB tile the CIELAB colour statistics ``reference`` (see :func:`colour_stats`).

    Statistics are taken over the tile's tissue (glass and blacked-out holes excluded) and
    only tissue pixels change, so glass stays glass. With ``rng`` the reference spread is
    jittered by ±15%. Tiles with too little tissue come back unchanged.
    """
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    tissue = ~(((hsv[..., 2] > 215) & (hsv[..., 1] < 25)) | (hsv[..., 2] < 25))
    if tissue.sum() < 64:
        return image
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    px = lab[tissue]
    mean, std = px.mean(0), px.std(0) + 1e-3
    r_mean, r_std = reference
    if rng is not None:
        r_std = r_std * rng.uniform(0.85, 1.15, 3)
    out = lab.copy()
    out[tissue] = (px - mean) / std * r_std + r_mean
    out = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return out


def stain_references(
    cutouts: list[Cutout], images: list[LabelledImage], min_pixels: int = 2000
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Colour statistics of every training slide, grouped by stain: one per cut-out source
    slide (pooled over its cut-outs, at least ``min_pixels``) and one per labelled image
    (its tissue pixels). Training tiles re-coloured to them see the stain variety of all
    sources (e.g. H&E tubules in the paler HE_00x stain, or in HuBMAP's PAS)."""
    refs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    by_source: dict[str, list[Cutout]] = {}
    for c in cutouts:
        by_source.setdefault(cutout_source(c.name), []).append(c)
    for cs in by_source.values():
        px = np.concatenate([c.image[c.mask] for c in cs])
        if len(px) >= min_pixels:
            refs.setdefault("H&E", []).append(colour_stats(px[:: max(1, len(px) // 100_000)]))
    for img in images:
        px = img.image[(img.label != NON_TISSUE) & (img.label != IGNORE)]
        px = px[px.sum(1) > 75]  # blacked-out holes carry no stain
        if len(px) >= min_pixels:
            refs.setdefault(img.stain, []).append(colour_stats(px[:: max(1, len(px) // 100_000)]))
    return refs


def cutout_source(name: str) -> str:
    """The slide a cut-out comes from, from its file stem (e.g. 'FFPE PostRep 004', 'HE_002',
    '13600_18000_0')."""
    m = re.search(r"HE_\d+", name)
    if m:
        return m.group(0)
    m = _CUTOUT_CLASS.search(name)
    return name[: m.start()] if m else name


def harmonise_sources(cutouts: list[Cutout], reference_sources: tuple[str, ...]) -> None:
    """Give every cut-out a ``harmonised`` copy in the reference slides' stain.

    Cut-outs come from several slides; some slides gave only vessels and glomeruli, so their
    stain alone would tell the class. One Reinhard map per *source slide* (statistics pooled
    over all its cut-outs, so colour differences between classes of a slide survive) moves
    each slide onto the pooled statistics of the reference slides' cut-outs.
    """

    def pooled(cs: list[Cutout]) -> np.ndarray:
        px = np.concatenate([c.image[c.mask] for c in cs])
        step = max(1, len(px) // 200_000)
        return px[::step]

    ref_cuts = [c for c in cutouts if cutout_source(c.name) in reference_sources]
    if not ref_cuts:
        return
    ref = pooled(ref_cuts)
    by_source: dict[str, list[Cutout]] = {}
    for c in cutouts:
        by_source.setdefault(cutout_source(c.name), []).append(c)
    for src, cs in by_source.items():
        if src in reference_sources:
            continue
        stats = pooled(cs)
        for c in cs:
            c.harmonised = match_colours(c.image.reshape(-1, 3), ref, stats).reshape(c.image.shape)


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
    :func:`harmonise_sources`) rather than its own slide's.
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
        shape = _scaled_shape(ci.shape, z)
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


def load_phantoms(
    n: int, target_mpp: float, side_um: float = 1024.0, seed: int = 0
) -> list[LabelledImage]:
    """``n`` synthetic biopsies (:mod:`shindan.phantom`, alternating PAS / H&E, varied
    fibrosis and inflammation) rendered at ``target_mpp`` with exact labels."""
    from shindan.phantom import make_scene, render_labels, render_rgb

    rng = np.random.default_rng(seed)
    out = []
    scene_mpp = 0.5
    side = int(side_um / scene_mpp)
    for i in range(n):
        stain = "pas" if i % 2 == 0 else "he"
        scene = make_scene(
            side,
            side,
            mpp=scene_mpp,
            stain=stain,
            seed=seed * 1000 + i,
            fibrosis=float(rng.uniform(0.1, 0.6)),
            inflammation=float(rng.uniform(0.0, 0.08)),
            artifacts=bool(rng.random() < 0.5),
        )
        box = (0, 0, side, side)
        ds = target_mpp / scene_mpp
        out.append(
            LabelledImage(
                f"phantom-{i}",
                render_rgb(scene, box, ds),
                render_labels(scene, box, ds).astype(np.uint8),
                stain.upper() if stain == "pas" else "H&E",
                target_mpp,
            )
        )
    return out


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
