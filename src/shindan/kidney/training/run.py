"""Train the kidney compartment model: the built-in real-data recipe or your own annotations."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shindan.engine.train_segmenter import (
    TrainConfig,
    confusion,
    dice_from_confusion,
    train_segmenter,
)
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
from shindan.kidney.cleanup import min_region_areas, remove_small_regions
from shindan.kidney.training.builtin_sets import (
    AAPI_MPP,
    AAPI_TILES,
    AIDPATH_CROP_MPP,
    AIDPATH_LABS,
    CLASSES,
    GLOMERULUS,
    HUBMAP_MPP,
    INTERSTITIUM,
    LABEL_SETS,
    TUBULE,
    CompartmentData,
    LabelledImage,
    aidpath_lab,
    harmonise_sources,
    load_aapi_background,
    load_aapi_cutouts,
    load_aapi_tile,
    load_aidpath,
    load_hubmap,
    load_phantoms,
    make_compartment_sampler,
    other_code,
    other_label_sets,
    split_columns,
    stain_references,
)
from shindan.kidney.glomeruli import MIN_GLOMERULUS_UM2
from shindan.kidney.objects import glomerulus_objects, summarise_objects
from shindan.models.card import DEFAULT_DECODER, DEFAULT_ENCODER, as_fine_tune, unet_card
from shindan.models.domain import card_domain, scale_entry

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


def compartments_card(
    target_mpp: float = 1.0,
    *,
    size: int = 512,
    overlap: int = 64,
    encoder: str = DEFAULT_ENCODER,
    decoder_channels: Sequence[int] = DEFAULT_DECODER,
) -> dict[str, Any]:
    """A model card skeleton for the compartment U-Net (training fields filled in later)."""
    card = unet_card(
        "kidney-compartments",
        list(CLASSES),
        "Kidney biopsy compartments (non-tissue, interstitium, glomerulus, tubule, vessel), "
        "U-Net on H&E and PAS.",
        mpp=target_mpp,
        size=size,
        overlap=overlap,
        encoder=encoder,
        decoder_channels=tuple(decoder_channels),
        limits=[
            "Interstitium, tubule, vessel and non-tissue are validated on H&E only (one held-out "
            "AAPI tile, one lab); on PAS only the glomerulus class is validated.",
            "The HuBMAP PAS scale is estimated (≈0.95 µm/px from glomerulus sizes), not read "
            "from metadata.",
            "Few vessels in the training and test data: vessel Dice rests on very few structures.",
            "Glass (non-tissue) is learnt from bright unstained regions and synthetic glass "
            "edges; lumens of tubules and vessels belong to their structure.",
            "Research use; not a medical device.",
        ],
    )
    card["postprocess"] = {"min_region_um2": {"glomerulus": MIN_GLOMERULUS_UM2}}
    return card


# --------------------------------------------------------------------------- evaluation
def _predict_labels(predictor: Any, image: np.ndarray) -> np.ndarray:
    """Labels of an image as the analysis makes them: argmax of one padded pass when it fits a
    tile, else of tiled blending, then the card's small-region clean-up."""
    from shindan.engine.tiled import predict_array

    h, w = image.shape[:2]
    if max(h, w) <= predictor.card.size:
        ph, pw = (-h) % 32, (-w) % 32
        padded = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        labels = predictor.predict(padded[None])[0, :, :h, :w].argmax(0).astype(np.uint8)
    else:
        labels = predict_array(predictor, image).argmax(0).astype(np.uint8)
    # scored as the analysis uses it: with the card's clean-up
    card = predictor.card
    return remove_small_regions(labels, card.mpp, min_region_areas(card))


def dice_summary(cm: np.ndarray, n_images: int) -> dict[str, Any]:
    """Per-class Dice from pooled confusion counts: per class, the mean over the classes
    present, and the mean over the classes with at least 1% of the labelled pixels."""
    dices = dice_from_confusion(cm)
    present = [i for i in range(len(cm)) if cm[i].sum() > 0]
    # classes with under 1% of the labelled pixels make the plain mean a coin toss
    major = [i for i in present if cm[i].sum() >= 0.01 * cm.sum()]
    return {
        "dice": {CLASSES[i]: (None if dices[i] is None else round(dices[i], 4)) for i in present},
        "mean_dice": round(float(np.mean([dices[i] for i in present])), 4) if present else None,
        "mean_dice_classes_over_1pct": (
            round(float(np.mean([dices[i] for i in major])), 4) if major else None
        ),
        "pixels": {CLASSES[i]: int(cm[i].sum()) for i in present},
        "images": n_images,
    }


def score_images(predictor: Any, images: Sequence[LabelledImage]) -> dict[str, Any]:
    """Pooled per-class Dice (see :func:`dice_summary`) of the model's tiled predictions."""
    n = len(CLASSES)
    cm = np.zeros((n, n), np.int64)
    for img in images:
        cm += confusion(_predict_labels(predictor, img.image), img.label, n)
    return dice_summary(cm, len(images))


def glomerulus_dice(
    predictor: Any, images: Sequence[LabelledImage], objects: bool = False
) -> dict[str, Any]:
    """Glomerulus-vs-rest Dice (pooled over pixels, and mean per image) where the truth is only
    glomerulus / not glomerulus, and the predicted ÷ true glomerulus area (over 1:
    over-calling). With ``objects`` (whole images with every glomerulus outlined), also the
    object counts of :func:`~shindan.kidney.objects.summarise_objects` (false glomeruli per
    mm² of tissue)."""
    inter = tot = area_pred = area_true = 0
    per, objs = [], []
    for img in images:
        labels = _predict_labels(predictor, img.image)
        pred = labels == GLOMERULUS
        known = img.label != IGNORE
        truth = img.label == GLOMERULUS
        i = int((pred & truth & known).sum())
        t = int((pred & known).sum() + (truth & known).sum())
        inter, tot = inter + i, tot + t
        area_pred, area_true = area_pred + int((pred & known).sum()), area_true + int(truth.sum())
        per.append(2 * i / t if t else 1.0)
        if objects:
            objs.append(glomerulus_objects(labels, img.label, img.mpp))
    return {
        "dice_pooled": round(2 * inter / tot, 4) if tot else None,
        "dice_mean_per_image": round(float(np.mean(per)), 4) if per else None,
        "area_ratio": round(area_pred / area_true, 3) if area_true else None,
        "images": len(images),
        **({"objects": summarise_objects(objs)} if objects else {}),
    }


# --------------------------------------------------------------------------- built-in recipe
VALIDATED_ON = {
    "non-tissue": ["H&E"],
    "interstitium": ["H&E"],
    "glomerulus": ["H&E", "PAS"],
    "tubule": ["H&E"],
    "vessel": ["H&E"],
}
# Sampler settings of the built-in recipe: real tiles and composites, strong stain jitter
# (global fading/darkening, near-grey tiles, H&E→PAS-like shifts) and ±25% scale, because
# the held-out H&E tile is far paler than the training tiles and PAS comes from other labs.
RECIPE_SAMPLER = {
    "mix": (0.35, 0.3, 0.25, 0.1),
    "pas_like": 0.2,
    "glass_edge": 0.15,
    "zoom": (0.8, 1.25),
    "harmonised_prob": 1.0,
    "stain_strength": 1.2,
    "density": (0.5, 1.4),
    "grey_prob": 0.05,
    "transfer": 0.6,
    "transfer_pas": 0.35,
}
# CE weights (non-tissue, interstitium, glomerulus, tubule, vessel): interstitium is thin and
# easily eaten by its neighbours; vessels are not up-weighted (a weight of 2 made v1.1 call
# pale tubules vessel).
RECIPE_CLASS_WEIGHTS = (1.0, 1.5, 1.0, 1.0, 1.0)


def builtin_domain(aidpath: bool, phantoms: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The card's ``domain`` and ``training.scales`` of the built-in recipe (where the model
    was trained, so an analysis can mark inputs outside it; the scale of each source)."""
    scales = [
        {
            "data": "AAPI H&E tiles and cut-outs (tiles-aapi-he, compartments-aapi-he)",
            "mpp": AAPI_MPP,
            "source": "stated by the data's README (40x)",
        },
        {
            "data": "HuBMAP PAS (glomeruli-hubmap-pas)",
            "mpp": HUBMAP_MPP,
            "source": "estimated: the images carry no scale; their glomeruli measure 190 px "
            "(median equivalent diameter) against 180 µm for the AAPI glomeruli "
            "(shindan.kidney.data.HUBMAP_MPP)",
        },
    ]
    if aidpath:
        scales.append(
            {
                "data": "AIDPATH PAS glomerulus crops (glomerulosclerosis-aidpath)",
                "mpp": AIDPATH_CROP_MPP,
                "source": "nominal: the source resized every crop to 224 px whatever the "
                "glomerulus size, so the scale varies (shindan.kidney.data.AIDPATH_CROP_MPP)",
            }
        )
    if phantoms:
        scales.append(
            {
                "data": "shindan.phantom synthetic biopsies",
                "mpp": 0.5,
                "source": "generated at this scale",
            }
        )
    domain = {
        "stains": ["H&E", "PAS"],
        "mpp": [AAPI_MPP, HUBMAP_MPP],
        "mpp_note": "trained at 1.0 µm/px from AAPI H&E at 0.25 µm/px, HuBMAP PAS at about "
        "0.95 µm/px"
        + (" and AIDPATH PAS crops at about 0.9 µm/px" if aidpath else "")
        + "; inputs coarser than about 1.4 µm/px lack detail it learnt from",
        "tissue": "human kidney: transplant biopsies (AAPI), kidney tissue sections (HuBMAP)"
        + (", glomerulus crops (AIDPATH)" if aidpath else ""),
    }
    return domain, scales


def heldout_notes(test_tile: str, val_tile: str, aidpath_train_labs: Sequence[str] = ()) -> str:
    """How the held-out figures of the built-in recipe were measured (for the card)."""
    if aidpath_train_labs:
        aid = (
            "every AIDPATH crop of the labs not trained on (their labs are unseen; crops "
            f"assumed {AIDPATH_CROP_MPP} µm/px, glomerulus vs rest; the crops of "
            f"{', '.join(aidpath_train_labs)} trained, every 10th of them validated)"
        )
    else:
        aid = (
            "every 4th AIDPATH crop (another lab, never trained on; crops assumed "
            f"{AIDPATH_CROP_MPP} µm/px, glomerulus vs rest)"
        )
    return (
        f"H&E: AAPI tile {test_tile} (never trained on, nor its background or cut-outs named "
        "after it), pooled per-class Dice over its labelled pixels at the model's µm/px, tiled "
        "inference and clean-up as shipped. PAS: HuBMAP test split (10 images, same source as "
        "the PAS training images; glomerulus vs rest, 5-px rim around outlines not scored) and "
        f"{aid}. Model selection used the right 25% of tile {val_tile} (its left 75% is "
        "trained on) and the HuBMAP train images named 100-109 (4 exist: 106-109)."
    )


def builtin_data(
    root: Path,
    target_mpp: float,
    phantoms: int = 0,
    test_tile: str = "HE_001",
    exclude_cutouts: Sequence[str] = (),
    aidpath_train_labs: Sequence[str] = (),
) -> dict[str, Any]:
    """Training, validation and test sets of the real-data recipe (see the module docstring of
    :mod:`shindan.kidney.data`).

    Split: ``test_tile`` (with its background and every cut-out named after it), the HuBMAP
    test split and the AIDPATH crops are the held-out tests. Of the two other AAPI tiles,
    11000_16000_0 trains whole, the other (13600_18000_0, or HE_001 when 13600_18000_0 is
    the test tile) trains on its left 75% and validates (early stopping, model selection)
    on its right 25%, with HuBMAP train images 106-109. ``phantoms`` synthetic biopsies
    (exact labels) are added to training. Cut-outs whose name contains any of
    ``exclude_cutouts`` are left out (e.g. "HE_00": slides that gave only glomeruli and
    vessels, whose scanner texture alone would then tell the class); their slides' colour
    statistics still serve as stain-transfer references.

    AIDPATH glomerulus crops (PAS, three labs) are the unseen-lab test: every 4th crop, or
    with ``aidpath_train_labs`` every crop of the other labs, while the named labs' crops
    train (every 10th validates).
    """
    if test_tile not in AAPI_TILES or test_tile == AAPI_TILES[0]:
        raise InputError(f"test tile must be one of {', '.join(AAPI_TILES[1:])}, got {test_tile!r}")
    test_labs = [lab for lab in AIDPATH_LABS if lab not in aidpath_train_labs]
    if set(aidpath_train_labs) - set(AIDPATH_LABS) or not test_labs:
        raise InputError(
            f"AIDPATH training labs must be some (not all) of {', '.join(AIDPATH_LABS)}, "
            f"got {', '.join(aidpath_train_labs)}"
        )
    val_tile = "13600_18000_0" if test_tile != "13600_18000_0" else "HE_001"
    tiles = {n: load_aapi_tile(root, n, target_mpp) for n in AAPI_TILES}
    left, right = split_columns(tiles[val_tile], 0.75)
    bgs = [
        load_aapi_background(root, AAPI_TILES[0], target_mpp),
        split_columns(load_aapi_background(root, val_tile, target_mpp), 0.75)[0],
    ]
    stain_cutouts = load_aapi_cutouts(root, target_mpp, exclude=(test_tile,))
    # Excluded cut-outs still lend their slides' stain colours (not their pixels) to the
    # stain transfer: the shortcut was their texture, and their stain is a real lab's.
    cutouts = [c for c in stain_cutouts if not any(e in c.name for e in exclude_cutouts)]
    harmonise_sources(cutouts, tuple(n for n in AAPI_TILES if n != test_tile))
    val_names = [str(i) for i in range(100, 110)]
    all_train = load_hubmap(root, "train", target_mpp)
    pas_train = [p for p in all_train if p.name.rsplit("-", 1)[-1] not in val_names]
    pas_val = [p for p in all_train if p.name.rsplit("-", 1)[-1] in val_names]
    train_tiles = [tiles[AAPI_TILES[0]], left]
    crops: list[LabelledImage] = []
    val_groups = {"H&E": [right], "HuBMAP": pas_val}
    if aidpath_train_labs:
        own = load_aidpath(root, AIDPATH_CROP_MPP, target_mpp, labs=aidpath_train_labs)
        crops = [c for k, c in enumerate(own) if k % 10 != 9]
        val_groups["AIDPATH"] = own[9::10]
        test_aid = load_aidpath(root, AIDPATH_CROP_MPP, target_mpp, labs=test_labs)
    else:
        test_aid = load_aidpath(root, AIDPATH_CROP_MPP, target_mpp, every=4)
    return {
        "train": CompartmentData(
            train_tiles,
            bgs,
            cutouts,
            pas_train,
            phantoms=load_phantoms(phantoms, target_mpp) if phantoms else [],
            stain_refs=stain_references(stain_cutouts, [*train_tiles, *pas_train]),
            crops=crops,
        ),
        "val": [v for group in val_groups.values() for v in group],
        "val_groups": val_groups,
        "test_he": [tiles[test_tile]],
        "test_pas": load_hubmap(root, "test", target_mpp),
        "test_aid": test_aid,
        "test_tile": test_tile,
        "val_tile": val_tile,
    }


# --------------------------------------------------------------------------- user data
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
    label :func:`~shindan.kidney.data.other_code`), e.g. "not glomerulus" where only glomeruli
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


# --------------------------------------------------------------------------- training
def train_compartments(
    out: Path,
    *,
    builtin: Path | None = None,
    phantoms: int = 0,
    inputs: Sequence[Path] = (),
    annotations: Sequence[Path] = (),
    mpp: float | None = None,
    target_mpp: float = 1.0,
    classes: dict[str, int] | None = None,
    init: str | None = None,
    encoder: str = DEFAULT_ENCODER,
    decoder_channels: Sequence[int] = DEFAULT_DECODER,
    pretrained: str | None = None,
    config: TrainConfig | None = None,
    tile: int = 256,
    test_tile: str = "HE_001",
    exclude_cutouts: Sequence[str] = (),
    glomerulus_focus: float = 0.0,
    aidpath_train_labs: Sequence[str] = (),
    aidpath_share: float = 0.5,
    crops_keep_stain: bool = False,
    select_by_source: bool = False,
    unannotated: str = "ignore",
    stains: Sequence[str] = (),
    tissue: str = "",
    command: str = "",
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or fine-tune from ``init``) a compartment model and save it to ``out``.

    With ``builtin`` (the shared ``data/kidney`` folder) the real-data recipe runs (sampler
    :data:`RECIPE_SAMPLER`, CE weights :data:`RECIPE_CLASS_WEIGHTS` unless ``config`` has
    some, AAPI tile ``test_tile`` held out) and the held-out scores go into the card;
    otherwise ``inputs`` + ``annotations`` are used, with every fifth image (or, with a
    single image, its right fifth) kept for validation. ``encoder`` and ``decoder_channels``
    shape a new U-Net (a fine-tuned model keeps the architecture of ``init``); ``pretrained``
    (a key of :data:`~shindan.models.pretrained.PRETRAINED`) starts a new model's encoder from
    those weights, with their encoder and input normalisation.
    ``glomerulus_focus``: chance that a
    crop of a labelled image is placed on a glomerulus (see
    :func:`~shindan.kidney.data.make_compartment_sampler`); ``aidpath_train_labs``: AIDPATH labs
    whose crops train (see :func:`builtin_data`), drawn for ``aidpath_share`` of the PAS tiles,
    and re-coloured only to PAS references with ``crops_keep_stain``; ``select_by_source``:
    the checkpoint is chosen on the mean of each validation source's Dice (H&E strip,
    HuBMAP, AIDPATH crops) instead of the pooled pixels, where glomerulus-filled crops
    outvote the H&E strip. ``unannotated``: what the unannotated pixels of ``inputs`` are
    (see :func:`load_annotated`). ``stains`` and ``tissue``: the card's ``domain`` for
    ``inputs`` (the built-in recipe states its own).

    Raises
    ------
    InputError
        If the annotations label one class only and ``unannotated`` is ``"ignore"``: such a
        model learns to call everything that class; or if ``pretrained`` comes with ``init``.
    """
    from shindan.engine import load_predictor
    from shindan.models import load_card, load_network, save_model

    say = log or (lambda s: print(s, file=sys.stderr))
    if pretrained and init:
        raise InputError("--pretrained starts a new model; it cannot be combined with --init")
    cfg = config or TrainConfig()
    cfg.label_sets = {k: list(v) for k, v in LABEL_SETS.items()}
    if builtin is not None and cfg.class_weights is None:
        cfg.class_weights = list(RECIPE_CLASS_WEIGHTS)
    if builtin is not None and cfg.dice_classes is None:
        # the validation strip has no vessel, and its non-tissue is mostly HuBMAP glass
        cfg.dice_classes = [INTERSTITIUM, GLOMERULUS, TUBULE]
    if init:  # the starting model fixes the scale the data is read at
        base = load_card(init)
        card = {**base.data, "input": {**base.data["input"]}}
        net = load_network(base)
        target_mpp = card["input"]["mpp"] or target_mpp
        skeleton = compartments_card(target_mpp)
        card.setdefault("limits", skeleton["limits"])
        card.setdefault("postprocess", skeleton["postprocess"])
    else:
        if pretrained:
            from shindan.models.pretrained import PRETRAINED

            encoder = PRETRAINED[pretrained].smp_encoder
        card = compartments_card(target_mpp, encoder=encoder, decoder_channels=decoder_channels)
        net = None
        if pretrained:  # the weights expect their own input normalisation
            from shindan.models import build_network
            from shindan.models.pretrained import load_pretrained_encoder

            entry = PRETRAINED[pretrained]
            card["input"] = {**card["input"], "mean": list(entry.mean), "std": list(entry.std)}
            net = load_pretrained_encoder(build_network(card), pretrained)
    if builtin is not None:
        say(f"loading the built-in real-data recipe from {builtin} at {target_mpp} µm/px")
        sets = builtin_data(
            builtin, target_mpp, phantoms, test_tile, exclude_cutouts, aidpath_train_labs
        )
        train_data, val = sets["train"], sets["val"]
        data_note = (
            "AAPI H&E kidney transplant biopsies (2 rebuilt tiles with full labels, "
            f"{len(train_data.cutouts)} structure cut-outs pasted onto interstitium "
            f"backgrounds) + HuBMAP PAS ({len(train_data.pas)} images, glomerulus "
            "polygons only; other tissue trained as 'not glomerulus')"
            + (
                f" + AIDPATH PAS glomerulus crops of lab(s) {', '.join(aidpath_train_labs)} "
                f"({len(train_data.crops)}, glomerulus masks; other tissue 'not glomerulus')"
                if train_data.crops
                else ""
            )
            + (f" + {phantoms} synthetic shindan.phantom biopsies" if phantoms else "")
        )
        licence = (
            "MIT (AAPI, HuBMAP) + CC BY-NC-SA 4.0 (AIDPATH): non-commercial use only, "
            "inherited by this model"
            if train_data.crops
            else "MIT (AAPI, HuBMAP)"
        )
    else:
        pairs = pair_annotations(inputs, annotations, log=say)
        names = {**CLASS_NAMES, **{k.lower(): v for k, v in (classes or {}).items()}}
        imgs = [
            load_annotated(i, a, target_mpp, mpp, names, unannotated=unannotated) for i, a in pairs
        ]
        codes = np.unique(np.concatenate([np.unique(im.label) for im in imgs]))
        known = [CLASSES[c] for c in codes if c < len(CLASSES)]
        if len(known) == 1 and unannotated == "ignore":
            raise InputError(
                f"only {known[0]} is annotated, so the model would learn to call everything "
                f"{known[0]}: outline other tissue too, or pass --unannotated other"
            )
        cfg.label_sets.update(other_label_sets(codes.tolist()))
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
        train_data = CompartmentData(train_imgs, [], [], [])
        data_note = f"{len(pairs)} annotated image(s): {', '.join(p[0].name for p in pairs[:8])}"
        licence = "as the training data"
        sets = {}
        if not init:  # the skeleton's summary and limits describe the built-in recipe
            card["summary"] = (
                f"Kidney compartment U-Net trained from scratch on {data_note}; its scores "
                "are in metrics.validation."
            )
            card["limits"] = [
                "Validated only on the held-out part of these annotations (every fifth "
                "image, or the right fifth of a single image): metrics.validation.",
                "Research use; not a medical device.",
            ]
    card["training"] = {"data": data_note, "licence": licence, "command": command, "seed": cfg.seed}
    if builtin is not None:
        card["domain"], card["training"]["scales"] = builtin_domain(
            bool(aidpath_train_labs), phantoms
        )
        card["training"]["includes_synthetic"] = bool(phantoms)
    else:  # the user's annotated images: the stains given, their µm/px
        card.update(card_domain(stains, mpp, tissue))
        card["training"]["scales"] = [
            scale_entry(data_note, mpp, "given with --mpp" if mpp else "each file's own")
        ]
    if pretrained and not init:
        from shindan.models.pretrained import init_record

        rec = init_record(pretrained)
        card["training"]["init"] = rec
        card["training"]["licence"] += (
            f"; encoder initialised from {rec['package']}: {rec['licence']}"
        )
    if init:
        card = as_fine_tune(card, base)
    sampler = make_compartment_sampler(
        train_data,
        tile,
        **(RECIPE_SAMPLER if builtin is not None else {}),
        glomerulus_focus=glomerulus_focus,
        crop_share=aidpath_share,
        crops_keep_stain=crops_keep_stain,
    )

    def save(net_, res: dict[str, Any]) -> None:
        card["metrics"] = {
            "validation": {
                "mean_dice": round(res["best_dice"], 4),
                "per_class_dice": res["per_class_dice"],
                "step": res["step"],
            }
        }
        save_model(net_, card, out)

    def tiles(images: Sequence[LabelledImage]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(v.image, v.label) for v in images]

    val_tiles = (
        {g: tiles(v) for g, v in sets["val_groups"].items()}
        if select_by_source and builtin is not None
        else tiles(val)
    )
    net, res = train_segmenter(
        card, sampler, val_tiles, cfg, net=net, on_best=save, log=say, progress=progress
    )
    result: dict[str, Any] = {
        "train": {k: v for k, v in res.items() if k != "history"},
        "history": res["history"],
    }
    if builtin is not None:
        say("scoring held-out tests")
        pred = load_predictor(out, "torch")
        result["test_he"] = score_images(pred, sets["test_he"])
        result["test_pas_hubmap"] = glomerulus_dice(pred, sets["test_pas"], objects=True)
        result["test_pas_aidpath"] = {
            **glomerulus_dice(pred, sets["test_aid"]),
            "labs": sorted({aidpath_lab(c.name) for c in sets["test_aid"]}),
        }
        say(f"H&E {sets['test_tile']}: {result['test_he']}")
        say(f"PAS HuBMAP test glomerulus: {result['test_pas_hubmap']}")
        say(f"PAS AIDPATH glomerulus: {result['test_pas_aidpath']}")
        c = load_card(out)
        data = dict(c.data)
        data["metrics"] = {
            **data.get("metrics", {}),
            f"heldout_he_tile_{sets['test_tile']}": result["test_he"],
            "heldout_pas_hubmap_test_glomerulus": result["test_pas_hubmap"],
            "heldout_pas_aidpath_glomerulus": result["test_pas_aidpath"],
            "validated_on_stain": VALIDATED_ON,
            "heldout_notes": heldout_notes(sets["test_tile"], sets["val_tile"], aidpath_train_labs),
        }
        he, hub, aid_r = result["test_he"], result["test_pas_hubmap"], result["test_pas_aidpath"]
        data["headline"] = (
            f"H&E held-out tile mean Dice {he['mean_dice']:.3f}; glomerulus Dice "
            f"PAS {hub['dice_pooled']:.3f} (HuBMAP test), "
            f"{aid_r['dice_pooled']:.3f} (AIDPATH, other lab)"
        )
        save_model(load_network(c), data, out)
    return result
