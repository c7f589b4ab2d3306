"""Train a nucleus instance-segmentation model (U-Net: background / interior / boundary)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shindan.engine.train_segmenter import TrainConfig, train_segmenter
from shindan.errors import InputError
from shindan.models.card import unet_card
from shindan.nuclei.data import NucleiSample, find_pairs, load_sample, make_sampler
from shindan.nuclei.metrics import aji, dice
from shindan.nuclei.postprocess import DEFAULTS

CLASSES = ["background", "interior", "boundary"]


def nuclei_card(target_mpp: float, *, size: int = 512, overlap: int = 64,
                encoder: str = "timm-mobilenetv3_small_100",
                decoder_channels: Sequence[int] = (96, 64, 32, 16, 16)) -> dict[str, Any]:
    """A model card skeleton for a nuclei U-Net (training fields are filled in later)."""
    card = unet_card(
        "nuclei", list(CLASSES),
        "Nucleus instance segmentation of H&E tissue: U-Net predicting background, nucleus "
        "interior and nucleus boundary, then marker-controlled watershed.",
        mpp=target_mpp, size=size, overlap=overlap, encoder=encoder,
        decoder_channels=tuple(decoder_channels), limits=[
            f"Works at {target_mpp} µm/px: inputs are resampled, so outlines are about one "
            "model pixel coarse; very small nuclei (< 3 µm) may be missed.",
            "Trained and validated on H&E only (MoNuSeg, TCGA, 7 organs); PAS or other "
            "stains are not validated.",
            "Images with only a binary mask train on components that look like single nuclei "
            "(merged-looking blobs are ignored), so touching-nucleus separation is learnt from "
            "the images with instance polygons.",
            "Research use; not a medical device.",
        ],
    )
    card["postprocess"] = {"watershed": dict(DEFAULTS)}
    return card


def evaluate_instances(model: Any, pairs: Sequence[tuple[Path, Path]], mpp: float,
                       backend: str = "torch") -> dict[str, Any]:
    """Pixel Dice and AJI of :func:`segment_nuclei` on images with instance polygons, at the
    images' own resolution."""
    from shindan.engine import load_predictor
    from shindan.io.annotations import rasterize_instances, read_annotations
    from shindan.nuclei.data import read_rgb
    from shindan.nuclei.segment import segment_nuclei

    pred = load_predictor(model, backend)
    per = {}
    for img_path, ann in pairs:
        img = read_rgb(img_path)
        truth = rasterize_instances(read_annotations(ann), img.shape[:2])
        lab = segment_nuclei(img, mpp, predictor=pred)
        per[img_path.stem] = {"dice": round(dice(truth, lab), 4), "aji": round(aji(truth, lab), 4),
                              "nuclei_true": int(len(np.unique(truth)) - 1),
                              "nuclei_found": int(lab.max())}
    return {"images": per,
            "dice_mean": round(float(np.mean([v["dice"] for v in per.values()])), 4),
            "aji_mean": round(float(np.mean([v["aji"] for v in per.values()])), 4)}


def tune_watershed(model: Any, pairs: Sequence[tuple[Path, Path]], mpp: float,
                   backend: str = "torch") -> dict[str, Any]:
    """Pick watershed thresholds maximising mean AJI on images with instance polygons.

    Use training images (never the held-out ones). Returns the best parameters and their AJI.
    """
    import itertools

    import cv2

    from shindan.engine import load_predictor
    from shindan.io.annotations import rasterize_instances, read_annotations
    from shindan.nuclei.data import read_rgb
    from shindan.nuclei.postprocess import instances_from_probs
    from shindan.nuclei.segment import nuclei_probabilities

    pred = load_predictor(model, backend)
    data = []
    for img_path, ann in pairs:
        img = read_rgb(img_path)
        h, w = img.shape[:2]
        truth = rasterize_instances(read_annotations(ann), (h, w))
        probs = nuclei_probabilities(img, mpp, pred)
        ratio = (h * w) / (probs.shape[1] * probs.shape[2])
        up = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in probs])
        data.append((truth, up, ratio))
    best: dict[str, Any] = {"aji": -1.0}
    for it, fg, mk in itertools.product([0.3, 0.4, 0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [2, 4, 8]):
        params = {"interior_threshold": it, "foreground_threshold": fg, "min_marker_px": mk,
                  "min_size_px": DEFAULTS["min_size_px"]}
        score = float(np.mean([
            aji(t, instances_from_probs(u, interior_threshold=it, foreground_threshold=fg,
                                        min_marker_px=round(mk * r),
                                        min_size_px=round(params["min_size_px"] * r)))
            for t, u, r in data]))
        if score > best["aji"]:
            best = {"aji": round(score, 4), "params": params}
    return best


def train_nuclei(
    images: Path,
    annotations: list[Path],
    out: Path,
    *,
    mpp: float,
    target_mpp: float = 0.4,
    holdout: Sequence[str] = (),
    config: TrainConfig | None = None,
    tile: int = 256,
    stain: float = 1.0,
    init: str | None = None,
    command: str = "",
    data_note: str = "",
    licence: str = "",
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or fine-tune from ``init``) on image/annotation pairs and save to ``out``.

    ``holdout`` lists image stems kept out of training: they drive early stopping and are
    scored at the end (Dice and AJI when they have instance polygons).
    """
    from shindan.models import load_card, load_network, save_model

    say = log or (lambda s: print(s, file=sys.stderr))
    pairs = find_pairs(images, annotations)
    missing = [p.name for p, a in pairs if a is None]
    if missing:
        say(f"no annotation for {len(missing)} image(s), skipped: {', '.join(missing[:5])}")
    pairs = [(p, a) for p, a in pairs if a is not None]
    if not pairs:
        raise InputError(f"{images}: no image with a matching mask or annotation file")
    unknown = set(holdout) - {p.stem for p, _ in pairs}
    if unknown:
        raise InputError(f"--holdout names no annotated image: {', '.join(sorted(unknown))}")
    train_pairs = [(p, a) for p, a in pairs if p.stem not in holdout]
    val_pairs = [(p, a) for p, a in pairs if p.stem in holdout]
    if not train_pairs:
        raise InputError("every image is held out; nothing left to train on")
    say(f"loading {len(train_pairs)} training and {len(val_pairs)} held-out images "
        f"at {target_mpp} µm/px")
    train: list[NucleiSample] = [load_sample(p, a, mpp, target_mpp) for p, a in train_pairs]
    val: list[NucleiSample] = [load_sample(p, a, mpp, target_mpp) for p, a in val_pairs]
    cfg = config or TrainConfig()
    if init:
        base = load_card(init)
        card = dict(base.data)
        card = {**card, "input": {**card["input"], "mpp": card["input"]["mpp"] or target_mpp}}
        card.setdefault("limits", nuclei_card(card["input"]["mpp"])["limits"])
        net = load_network(base)
        net.train()
    else:
        card = nuclei_card(target_mpp)
        net = None
    card["training"] = {"data": data_note or f"{len(train_pairs)} image(s) from {images}",
                        "licence": licence or "as the training data",
                        "command": command, "seed": cfg.seed}
    if init:  # reproducing a fine-tuned model means reproducing its starting point first
        base_cmd = base.data["training"].get("command", "")
        card["training"]["command"] = f"{base_cmd} && {command}" if base_cmd else command
    val_tiles = [(s.image, s.target) for s in val]

    def save(net_, res: dict[str, Any]) -> None:
        card["metrics"] = {"val_pixel_dice_per_class": res["per_class_dice"],
                           "val_mean_dice_3class": round(res["best_dice"], 4),
                           "step": res["step"]}
        save_model(net_, card, out)

    sampler = make_sampler(train, tile, stain=stain)
    net, res = train_segmenter(card, sampler, val_tiles, cfg, net=net,
                               on_best=save if val_tiles else None, log=say, progress=progress)
    if not val_tiles:
        save_model(net, card, out)
    result: dict[str, Any] = {"train": {k: v for k, v in res.items() if k != "history"},
                              "history": res["history"]}
    vec = (".geojson", ".json", ".xml")
    inst_train = [(p, a) for p, a in train_pairs if a.suffix.lower() in vec]
    if inst_train:
        say(f"tuning watershed thresholds on {len(inst_train)} training images with polygons")
        tuned = tune_watershed(out, inst_train, mpp)
        result["watershed_tuning"] = tuned
        c = load_card(out)
        data = {**c.data, "postprocess": {"watershed": tuned["params"]}}
        save_model(load_network(c), data, out)
        say(f"watershed {tuned['params']} (training-image AJI {tuned['aji']})")
    inst_val = [(p, a) for p, a in val_pairs if a.suffix.lower() in vec]
    if inst_val:
        say("scoring held-out images (Dice, AJI) at their own resolution")
        result["heldout"] = evaluate_instances(out, inst_val, mpp)
        say(f"held-out Dice {result['heldout']['dice_mean']} AJI {result['heldout']['aji_mean']}")
    return result
