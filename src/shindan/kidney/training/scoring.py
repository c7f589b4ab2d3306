"""Scores of a compartment model on held-out labelled images, labelled as the analysis labels
them (tiled inference, then the card's small-region clean-up)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shindan.engine.train_segmenter import confusion, dice_from_confusion
from shindan.io.annotations import IGNORE
from shindan.kidney.cleanup import min_region_areas, remove_small_regions
from shindan.kidney.labels import CLASSES, GLOMERULUS
from shindan.kidney.objects import glomerulus_objects, summarise_objects
from shindan.kidney.training.labelled import LabelledImage


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
