"""The built-in recipe's data sets, read as labelled images at the training µm/px.

Label codes are :mod:`shindan.kidney.labels`' (254 "not glomerulus" on images where only
glomeruli were outlined).

Sources (``root`` is the shared ``data/kidney`` folder):

* ``tiles-aapi-he/<tile>/``: real H&E tiles (≈0.25 µm/px) with full labels (255 = unknown);
* ``compartments-aapi-he/``: cut-outs of single structures (image + mask), pasted onto the
  tiles' interstitium backgrounds (every structure painted black) to make new compositions;
* ``glomeruli-hubmap-pas/``: PAS images with glomerulus polygons (labelme), scale estimated
  at ≈0.95 µm/px from glomerulus sizes (see :data:`HUBMAP_MPP`);
* ``glomerulosclerosis-aidpath/``: PAS glomerulus crops with masks from three labs
  (:data:`AIDPATH_LABS`); a recipe may train on some labs' crops and test on the others' (their
  licence is non-commercial, and a model trained on them inherits it);
* synthetic biopsies of :mod:`shindan.slide_phantom` with exact labels (:func:`load_phantoms`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shindan.io.annotations import IGNORE, rasterize, read_label_mask, read_labelme
from shindan.kidney.labels import (
    GLOMERULUS,
    INTERSTITIUM,
    NON_TISSUE,
    NOT_GLOMERULUS,
    TUBULE,
    VESSEL,
)
from shindan.kidney.training.labelled import Cutout, LabelledImage, scaled_shape
from shindan.nuclei.data import read_rgb, resize

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
    shape = scaled_shape(image.shape, AAPI_MPP / mpp)
    return LabelledImage(name, resize(image, shape), _resize_label(label, shape), "H&E", mpp)


def load_aapi_background(root: Path, name: str, mpp: float) -> LabelledImage:
    """A tile with every structure painted black: interstitium and glass, holes unknown."""
    image = read_rgb(root / "compartments-aapi-he" / "background" / f"{name}_background.jpg")
    full = read_label_mask(root / "tiles-aapi-he" / name / "labels.png")
    label = np.where(full <= INTERSTITIUM, full, IGNORE).astype(np.uint8)
    shape = scaled_shape(image.shape, AAPI_MPP / mpp)
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
        shape = scaled_shape(image.shape, AAPI_MPP / mpp)
        small_mask = resize(mask.astype(np.float32), shape) > 0.5
        if small_mask.sum() < 4:
            continue
        out.append(Cutout(stem, resize(image, shape), small_mask, code, mpp))
    return out


def cutout_source(name: str) -> str:
    """The slide a cut-out comes from, from its file stem (e.g. 'FFPE PostRep 004', 'HE_002',
    '13600_18000_0')."""
    m = re.search(r"HE_\d+", name)
    if m:
        return m.group(0)
    m = _CUTOUT_CLASS.search(name)
    return name[: m.start()] if m else name


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
        small = resize(img, scaled_shape(img.shape, scale))
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
        shape = scaled_shape(img.shape, crop_mpp / mpp)
        small = resize(img, shape)
        lab = np.where(resize(mask.astype(np.float32), shape) > 0.5, GLOMERULUS, NOT_GLOMERULUS)
        out.append(
            LabelledImage(
                f"aidpath-{p.parent.name}-{p.stem}", small, lab.astype(np.uint8), "PAS", mpp
            )
        )
    return out


# ------------------------------------------------------------------------------ phantoms
def load_phantoms(
    n: int, target_mpp: float, side_um: float = 1024.0, seed: int = 0
) -> list[LabelledImage]:
    """``n`` synthetic biopsies (:mod:`shindan.slide_phantom`, alternating PAS / H&E, varied
    fibrosis and inflammation) rendered at ``target_mpp`` with exact labels."""
    from shindan.slide_phantom import make_scene, render_labels, render_rgb

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
