"""A user's annotated slides and images (``kidney train INPUTS --annotations``) read as labelled
images: class names mapped to the label codes, the annotated region read at the training
µm/px, excluded regions never trained on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from shindan.errors import InputError
from shindan.io.annotations import (
    IGNORE,
    IGNORE_CLASSES,
    annotation_format,
    base_class,
    rasterize,
    read_annotations,
    read_label_mask,
)
from shindan.io.inputs import pair_annotations
from shindan.kidney.labels import CLASSES, other_code, other_label_sets
from shindan.kidney.training.labelled import LabelledImage, split_columns

# Class names users write in QuPath / ImageScope / labelme, mapped to the contract's codes;
# IGNORE (255): regions the user excluded (QuPath's Ignore*), not trained on.
CLASS_NAMES = {
    "non-tissue": 0,
    "nontissue": 0,
    "background": 0,
    "glass": 0,
    **dict.fromkeys(IGNORE_CLASSES, IGNORE),
    "interstitium": 1,
    "interstitial": 1,
    "stroma": 1,
    "fibrosis": 1,
    "glomerulus": 2,
    "glomeruli": 2,
    "glom": 2,
    "glomerulus_gs": 2,
    "sclerosed glomerulus": 2,
    "tubule": 3,
    "tubules": 3,
    "proximal_tubule": 3,
    "distal_tubule": 3,
    "proximal tubule": 3,
    "distal tubule": 3,
    "atrophic tubule": 3,
    "vessel": 4,
    "artery": 4,
    "arteriole": 4,
    "vein": 4,
    "blood vessel": 4,
}


def _class_code(name: str, classes: dict[str, int]) -> int | None:
    key = name.strip().lower()
    # a QuPath derived class ("Tubule: Atrophic") trains as its base class
    return classes[key] if key in classes else classes.get(base_class(key))


def load_annotated(
    image_path: Path,
    annotation_path: Path,
    target_mpp: float,
    mpp: float | None,
    classes: dict[str, int],
    margin_um: float = 50.0,
    unannotated: str = "ignore",
) -> LabelledImage:
    """An image or slide with its annotation file, read at ``target_mpp``.

    Vector annotations: classes by name (unknown names are skipped), and only the
    annotations' bounding box (plus ``margin_um``) is read, so a partly annotated slide trains
    on its annotated regions; polygons of a class mapped to 255 (``Ignore*``) are painted
    255 over every other polygon and are never trained on (not even with
    ``unannotated="other"``). Label masks: codes as written (0-4, 255), same pixel grid as the
    image. Unannotated pixels (255) are not trained on with ``unannotated="ignore"``; with
    ``"other"`` they are known to be none of the classes annotated in this image (the partial
    label :func:`~shindan.kidney.labels.other_code`), e.g. "not glomerulus" where only glomeruli
    were outlined.
    """
    from shindan.io import open_slide
    from shindan.nuclei.data import resize

    if unannotated not in ("ignore", "other"):
        raise InputError(f"--unannotated must be ignore or other, got {unannotated!r}")
    with open_slide(image_path, mpp=mpp) as slide:
        if slide.mpp is None:
            raise InputError(f"{image_path}: no µm/px in the file; give --mpp")
        w, h = slide.dimensions
        scale = slide.mpp / target_mpp
        if annotation_format(annotation_path) == "mask":
            label = read_label_mask(annotation_path)
            if label.shape != (h, w):
                raise InputError(
                    f"{annotation_path}: mask is {label.shape[1]}x{label.shape[0]}"
                    f", image is {w}x{h}"
                )
            bad = set(np.unique(label).tolist()) - {0, 1, 2, 3, 4, IGNORE}
            if bad:
                raise InputError(f"{annotation_path}: label codes {sorted(bad)} are not 0-4 or 255")
            box = (0, 0, w, h)
            label_full = label
        else:
            found = read_annotations(annotation_path)
            cmap = {a.label: _class_code(a.label, classes) for a in found}  # None: unknown
            anns = [a for a in found if cmap[a.label] not in (None, IGNORE)]
            excluded = [a for a in found if cmap[a.label] == IGNORE]
            if not anns:
                raise InputError(
                    f"{annotation_path}: no polygon with a known class name "
                    f"(known: {', '.join(sorted(k for k, v in classes.items() if v != IGNORE))})"
                )
            # the box holds what is trained on; excluded regions only cut holes into it
            pts = np.concatenate([a.polygon for a in anns])
            m = margin_um / slide.mpp
            x0, y0 = np.maximum(0, np.floor(pts.min(0) - m)).astype(int)
            x1, y1 = np.minimum([w, h], np.ceil(pts.max(0) + m)).astype(int)
            box = (int(x0), int(y0), int(x1), int(y1))
            label_full = None
        bw, bh = box[2] - box[0], box[3] - box[1]
        # read at the pyramid level closest to (not coarser than) the target scale
        level = slide.best_level_for_downsample(1 / scale) if scale < 1 else 0
        ds = slide.level_downsamples[level]
        region = slide.read_region(
            (box[0], box[1]), level, (max(1, round(bw / ds)), max(1, round(bh / ds)))
        )
    shape = (max(1, round(bh * scale)), max(1, round(bw * scale)))
    image = resize(region, shape)
    excluded_px = np.zeros(shape, bool)
    if label_full is not None:
        label = resize(label_full.astype(np.uint8), shape, nearest=True)
    else:
        label = rasterize(anns, shape, cmap, scale=scale, offset=(box[0], box[1]), fill=IGNORE)
        excluded_px = rasterize(excluded, shape, scale=scale, offset=(box[0], box[1])) > 0
    label = label.astype(np.uint8)
    if unannotated == "other":
        annotated = [int(c) for c in np.unique(label) if c < len(CLASSES)]
        label = np.where(label == IGNORE, other_code(annotated), label).astype(np.uint8)
    # excluded regions win over every class painted under them, and over "other"
    label[excluded_px] = IGNORE
    return LabelledImage(image_path.stem, image, label, "unknown", target_mpp)


def annotated_sets(
    inputs: Sequence[Path],
    annotations: Sequence[Path],
    target_mpp: float,
    mpp: float | None,
    classes: dict[str, int] | None = None,
    unannotated: str = "ignore",
    log: Callable[[str], None] | None = None,
) -> tuple[list[LabelledImage], list[LabelledImage], dict[int, list[int]], str]:
    """A user's annotated images, paired and read at ``target_mpp`` (see
    :func:`load_annotated`), split into training and validation: every fifth image validates
    (or, with a single image, its right fifth).

    Returns the training images, the validation images, the partial-label sets their
    ``unannotated="other"`` codes need, and the card's note on the data.

    Raises
    ------
    InputError
        If only one class is annotated and ``unannotated`` is ``"ignore"`` (the model would
        learn to call everything that class), or if the validation part holds no annotation.
    """
    pairs = pair_annotations(inputs, annotations, log=log)
    names = {**CLASS_NAMES, **{k.lower(): v for k, v in (classes or {}).items()}}
    imgs = [load_annotated(i, a, target_mpp, mpp, names, unannotated=unannotated) for i, a in pairs]
    codes = np.unique(np.concatenate([np.unique(im.label) for im in imgs]))
    known = [CLASSES[c] for c in codes if c < len(CLASSES)]
    if len(known) == 1 and unannotated == "ignore":
        raise InputError(
            f"only {known[0]} is annotated, so the model would learn to call everything "
            f"{known[0]}: outline other tissue too, or pass --unannotated other"
        )
    label_sets = other_label_sets(codes.tolist())
    if len(imgs) >= 2:
        val_idx = set(range(4, len(imgs), 5)) or {len(imgs) - 1}
        val = [im for k, im in enumerate(imgs) if k in val_idx]
        train_imgs = [im for k, im in enumerate(imgs) if k not in val_idx]
    else:
        train_imgs, val = map(lambda x: [x], split_columns(imgs[0], 0.8))
    if all((v.label == IGNORE).all() for v in val):
        raise InputError(
            f"nothing annotated in the validation part ({', '.join(v.name for v in val)}): "
            "annotate more of it, or give more images (every fifth one validates)"
        )
    data_note = f"{len(pairs)} annotated image(s): {', '.join(p[0].name for p in pairs[:8])}"
    return train_imgs, val, label_sets, data_note
