"""Train a nucleus instance-segmentation model (U-Net: background / interior / boundary, and
optionally core)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shindan.engine.train_segmenter import TrainConfig, train_segmenter
from shindan.errors import InputError, ModelError
from shindan.io.inputs import IMAGE_SUFFIXES, VECTOR_SUFFIXES, pair_annotations
from shindan.models.card import DEFAULT_DECODER, DEFAULT_ENCODER, as_fine_tune, unet_card
from shindan.models.domain import card_domain, scale_entry
from shindan.nuclei.data import (
    MARGIN_UM,
    NucleiSample,
    label_sets,
    load_sample,
    make_sampler,
    read_nuclei,
)
from shindan.nuclei.metrics import aji, dice
from shindan.nuclei.postprocess import DEFAULTS

CLASSES = ["background", "interior", "boundary"]
CORE = "core"  # the optional fourth class: each nucleus's centre (see instance_targets)


def nuclei_card(
    target_mpp: float,
    *,
    size: int = 512,
    overlap: int = 64,
    encoder: str = DEFAULT_ENCODER,
    decoder_channels: Sequence[int] = DEFAULT_DECODER,
    core: bool = False,
) -> dict[str, Any]:
    """A model card skeleton for a nuclei U-Net (training fields are filled in later);
    ``core`` adds the nucleus-core class."""
    card = unet_card(
        "nuclei",
        [*CLASSES, CORE] if core else list(CLASSES),
        "Nucleus instance segmentation of H&E tissue: U-Net predicting background, nucleus "
        f"interior{', boundary and core' if core else ' and boundary'}, then "
        "marker-controlled watershed.",
        mpp=target_mpp,
        size=size,
        overlap=overlap,
        encoder=encoder,
        decoder_channels=tuple(decoder_channels),
        limits=[
            (
                f"Works at {target_mpp} µm/px: inputs are resampled, so outlines are about one "
                "model pixel coarse; very small nuclei (< 3 µm) may be missed."
            )
            if target_mpp > 0.3
            else (
                f"Works at {target_mpp} µm/px (40x); inputs at other scales are resampled to "
                "it, and the coarser the input, the more small nuclei are missed."
            ),
            "Trained and validated on H&E only (MoNuSeg, TCGA, 7 organs); PAS or other "
            "stains are not validated.",
            "Images with only a binary mask teach nucleus versus background everywhere, but "
            "inside merged-looking blobs only 'nucleus' (any nucleus class), so the "
            "separation of touching nuclei is learnt from the images with instance polygons.",
            "Research use; not a medical device.",
        ],
    )
    card["postprocess"] = {"watershed": dict(DEFAULTS)}
    return card


def evaluate_instances(
    model: Any, pairs: Sequence[tuple[Path, Path]], mpp: float, backend: str = "torch"
) -> dict[str, Any]:
    """Pixel Dice and AJI of :func:`segment_nuclei` on images with instance polygons, at the
    images' own resolution, within their annotated areas (see
    :func:`~shindan.nuclei.data.read_nuclei`)."""
    from shindan.engine import load_predictor
    from shindan.nuclei.data import read_rgb
    from shindan.nuclei.segment import segment_nuclei

    pred = load_predictor(model, backend)
    per = {}
    for img_path, ann in pairs:
        img = read_rgb(img_path)
        truth, area = read_nuclei(ann, img.shape[:2], MARGIN_UM / mpp)
        # nuclei found outside the annotated area are neither right nor wrong
        lab = np.where(area, segment_nuclei(img, mpp, predictor=pred), 0)
        per[img_path.stem] = {
            "dice": round(dice(truth, lab), 4),
            "aji": round(aji(truth, lab), 4),
            "nuclei_true": int(len(np.unique(truth[truth > 0]))),
            "nuclei_found": int(len(np.unique(lab[lab > 0]))),
        }
    return {
        "images": per,
        "dice_mean": round(float(np.mean([v["dice"] for v in per.values()])), 4),
        "aji_mean": round(float(np.mean([v["aji"] for v in per.values()])), 4),
    }


def watershed_data(
    model: Any, pairs: Sequence[tuple[Path, Path]], mpp: float, backend: str = "torch"
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(true instances, probabilities enlarged to the image grid, input px per model px) of
    each image with instance polygons: what :func:`tune_watershed` searches over. Outside an
    image's annotated area (see :func:`~shindan.nuclei.data.read_nuclei`) the probabilities
    are set to background, so nuclei there count neither way."""
    import cv2

    from shindan.engine import load_predictor
    from shindan.nuclei.data import read_rgb
    from shindan.nuclei.segment import nuclei_probabilities

    pred = load_predictor(model, backend)
    data = []
    for img_path, ann in pairs:
        img = read_rgb(img_path)
        h, w = img.shape[:2]
        truth, area = read_nuclei(ann, (h, w), MARGIN_UM / mpp)
        probs = nuclei_probabilities(img, mpp, pred)
        ratio = (h * w) / (probs.shape[1] * probs.shape[2])
        up = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in probs])
        up[:, ~area] = 0.0
        up[0, ~area] = 1.0
        data.append((truth, up, ratio))
    return data


def search_watershed(data: Sequence[tuple[np.ndarray, np.ndarray, float]]) -> dict[str, Any]:
    """Watershed parameters (on the model's grid) maximising mean AJI over ``data`` (see
    :func:`watershed_data`): a grid over the thresholds and marker size, then the seed
    split ``marker_h`` and the smallest nucleus for the best of them, then the thresholds
    again with those fixed."""
    import itertools

    from shindan.nuclei.postprocess import instances_from_probs

    def score(params: dict[str, float]) -> float:
        return float(
            np.mean(
                [
                    aji(
                        t,
                        instances_from_probs(
                            u,
                            interior_threshold=params["interior_threshold"],
                            foreground_threshold=params["foreground_threshold"],
                            min_marker_px=round(params["min_marker_px"] * r),
                            min_size_px=round(params["min_size_px"] * r),
                            marker_h=params["marker_h"] * r**0.5,
                        ),
                    )
                    for t, u, r in data
                ]
            )
        )

    best: dict[str, Any] = {"aji": -1.0}

    def consider(params: dict[str, float]) -> None:
        nonlocal best
        s = score(params)
        if s > best["aji"]:
            best = {"aji": round(s, 4), "params": dict(params)}

    for it, fg, mk in itertools.product(
        [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], [0.3, 0.4, 0.5, 0.6, 0.7], [2, 4, 8, 16]
    ):
        consider(
            {**DEFAULTS, "interior_threshold": it, "foreground_threshold": fg, "min_marker_px": mk}
        )
    base = dict(best["params"])
    for h in [1.0, 2.0, 3.0, 4.0]:
        consider({**base, "marker_h": h})
    base = dict(best["params"])
    for ms in [6, 24, 40, 64, 96, 128, 160]:
        consider({**base, "min_size_px": ms})
    # the thresholds again, now that seed split and smallest nucleus are set
    base = dict(best["params"])
    for it, fg in itertools.product(
        [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], [0.3, 0.4, 0.5, 0.6, 0.7]
    ):
        consider({**base, "interior_threshold": it, "foreground_threshold": fg})
    return best


def tune_watershed(
    model: Any, pairs: Sequence[tuple[Path, Path]], mpp: float, backend: str = "torch"
) -> dict[str, Any]:
    """Pick watershed parameters maximising mean AJI on images with instance polygons.

    Use training or validation images (never the held-out ones). Returns the best parameters
    and their AJI.
    """
    return search_watershed(watershed_data(model, pairs, mpp, backend))


def tune_and_score(
    out: Path,
    mpp: float,
    tune_pairs: Sequence[tuple[Path, Path]],
    held_pairs: Sequence[tuple[Path, Path]],
    which: str = "validation",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tune the watershed of the model in ``out`` on ``tune_pairs`` (written to its card),
    then score it on ``held_pairs`` (images with instance polygons, at ``mpp``).

    The tuned parameters, their AJI and the held-out scores go into the card's ``postprocess``,
    ``metrics`` and ``headline``. Returns ``watershed_tuning`` and ``heldout``
    (:func:`evaluate_instances`) when there were images for them. Predictions use the card's
    test-time views, as later use will.
    """
    from shindan.models import load_card, load_network, save_model

    say = log or (lambda s: print(s, file=sys.stderr))
    result: dict[str, Any] = {}
    if tune_pairs:
        say(f"tuning watershed thresholds on {len(tune_pairs)} {which} images with polygons")
        tuned = tune_watershed(out, tune_pairs, mpp)
        tuned["images"] = sorted(p.stem for p, _ in tune_pairs)
        result["watershed_tuning"] = tuned
        c = load_card(out)
        key = "val_watershed_aji" if which == "validation" else f"{which}_watershed_aji"
        metrics = {**c.data.get("metrics", {}), key: tuned["aji"]}
        data = {**c.data, "postprocess": {"watershed": tuned["params"]}, "metrics": metrics}
        save_model(load_network(c), data, out)
        say(f"watershed {tuned['params']} ({which}-image AJI {tuned['aji']})")
    if held_pairs:
        say("scoring held-out images (Dice, AJI) at their own resolution")
        h = evaluate_instances(out, held_pairs, mpp)
        result["heldout"] = h
        say(f"held-out Dice {h['dice_mean']} AJI {h['aji_mean']}")
        c = load_card(out)
        metrics = {
            **c.data.get("metrics", {}),
            "heldout_images": sorted(h["images"]),
            "heldout_dice": h["dice_mean"],
            "heldout_aji": h["aji_mean"],
            "heldout_per_image": h["images"],
        }
        headline = (
            f"Dice {h['dice_mean']:.3f}, AJI {h['aji_mean']:.3f} on "
            f"{len(h['images'])} held-out images"
        )
        data = {**c.data, "metrics": metrics, "headline": headline}
        save_model(load_network(c), data, out)
    return result


def with_core_class(net: nn.Module) -> nn.Module:
    """The U-Net with a fourth output, the nucleus core, whose weights start as a copy of the
    interior's (so the fine-tune starts from the trained network's predictions)."""
    conv = net.segmentation_head[0]
    if conv.out_channels != len(CLASSES):
        raise InputError(f"expected a 3-class nucleus network, got {conv.out_channels} classes")
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels + 1, conv.kernel_size, conv.stride, conv.padding
    )
    with torch.no_grad():
        new.weight.copy_(torch.cat([conv.weight, conv.weight[1:2]]))
        new.bias.copy_(torch.cat([conv.bias, conv.bias[1:2]]))
    net.segmentation_head[0] = new
    return net


def train_nuclei(
    images: Path,
    annotations: list[Path],
    out: Path,
    *,
    mpp: float,
    target_mpp: float = 0.4,
    holdout: Sequence[str] = (),
    val: Sequence[str] = (),
    config: TrainConfig | None = None,
    tile: int = 256,
    stain: float = 1.0,
    density: tuple[float, float] = (1.0, 1.0),
    boundary_px: int = 1,
    core: float = 0.0,
    tta: Sequence[str] = (),
    init: str | None = None,
    encoder: str = DEFAULT_ENCODER,
    decoder_channels: Sequence[int] = DEFAULT_DECODER,
    command: str = "",
    data_note: str = "",
    licence: str = "",
    stains: Sequence[str] = (),
    tissue: str = "",
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or fine-tune from ``init``) on image/annotation pairs and save to ``out``.

    ``encoder`` and ``decoder_channels`` shape a new U-Net (a fine-tuned model keeps the
    architecture and the µm/px of ``init``: its scale replaces ``target_mpp``). Images and
    annotations are paired by :func:`~shindan.io.inputs.pair_annotations`; every pair
    (training, validation and held-out) is read and checked before training starts.

    ``val`` lists image stems kept out of training to choose the checkpoint (pixel Dice of
    interior and boundary) and tune the watershed (AJI, on those with instance polygons).
    ``holdout`` lists image stems kept out of training and out of every choice: they are only
    scored at the end (Dice and AJI when they have instance polygons). Without ``val`` the
    checkpoint is chosen on training images and the watershed tuned on training polygons.
    ``stain`` and ``density`` set the stain augmentation (see :func:`make_sampler`).
    ``boundary_px`` is the width of the boundary class on the model's grid; ``core`` > 0 adds
    a nucleus-core class (see :func:`~shindan.nuclei.data.instance_targets`) whose confident
    pixels seed the watershed; fine-tuning a model without one adds it (its outputs start as
    copies of the interior's). ``tta`` lists test-time views (see :mod:`shindan.engine.tta`)
    written to the card: the watershed is tuned and the held-out images scored with them, as
    every later prediction will run.
    """
    from shindan.engine.tta import check_views
    from shindan.models import load_card, load_network, save_model

    say = log or (lambda s: print(s, file=sys.stderr))
    try:
        views = list(check_views(tta))
    except ModelError as exc:
        raise InputError(str(exc)) from None
    pairs = pair_annotations([images], annotations, suffixes=IMAGE_SUFFIXES, log=say)
    stems = {p.stem for p, _ in pairs}
    for opt, names in (("--holdout", holdout), ("--val", val)):
        unknown = set(names) - stems
        if unknown:
            raise InputError(f"{opt} names no annotated image: {', '.join(sorted(unknown))}")
    if set(holdout) & set(val):
        raise InputError(
            f"images both held out and validation: {', '.join(sorted(set(holdout) & set(val)))}"
        )
    train_pairs = [(p, a) for p, a in pairs if p.stem not in holdout and p.stem not in val]
    val_pairs = [(p, a) for p, a in pairs if p.stem in val]
    held_pairs = [(p, a) for p, a in pairs if p.stem in holdout]
    if not train_pairs:
        raise InputError("every image is held out; nothing left to train on")
    scale_note = ""
    if init:  # the starting model fixes the scale the data is read at
        base = load_card(init)
        if (CORE in base.data["classes"]) and core <= 0:
            raise InputError(f"--init {init} has a core class: give --core to fine-tune it")
        if base.data["input"]["mpp"]:
            target_mpp = base.data["input"]["mpp"]
            scale_note = f" (the µm/px of --init {init})"

    def load(ps: Sequence[tuple[Path, Path]]) -> list[NucleiSample]:
        return [load_sample(p, a, mpp, target_mpp, boundary_px, core) for p, a in ps]

    train, val_samples = load(train_pairs), load(val_pairs)
    # held-out images are scored only after training: check their files now, so a bad one
    # stops the run before any model folder is written
    load(held_pairs)
    # said once all files have been read: a bad file's error stays the only line
    say(
        f"loaded {len(train_pairs)} training, {len(val_pairs)} validation and "
        f"{len(held_pairs)} held-out images at {target_mpp} µm/px{scale_note}"
    )
    cfg = config or TrainConfig()
    if cfg.label_sets is None:  # merged blobs of binary masks: "some nucleus class"
        cfg = dataclasses.replace(cfg, label_sets=label_sets(core > 0))
    if init:
        card = {**base.data, "input": {**base.data["input"], "mpp": target_mpp}}
        card.setdefault("limits", nuclei_card(target_mpp)["limits"])
        net = load_network(base)
        if (CORE in card["classes"]) != (core > 0):
            net = with_core_class(net)
            card["classes"] = [*card["classes"], CORE]
        net.train()
    else:
        card = nuclei_card(
            target_mpp, encoder=encoder, decoder_channels=decoder_channels, core=core > 0
        )
        net = None
    card["input"] = {k: v for k, v in card["input"].items() if k != "tta"}
    if views:
        card["input"]["tta"] = views
    card["training"] = {
        "data": data_note or f"{len(train_pairs)} image(s) from {images}",
        "licence": licence or "as the training data",
        "command": command,
        "seed": cfg.seed,
        "scales": [
            scale_entry(
                data_note or str(images),
                mpp,
                "given with --mpp" if mpp else "not given (each file's own)",
            )
        ],
    }
    # where the model was trained (--stain, --tissue): analyses mark inputs outside it
    card.update(card_domain(stains, mpp, tissue))
    if init:
        card = as_fine_tune(card, base)
    # the checkpoint is chosen on validation images; without any, on (a few) training images
    val_tiles = [(s.image, s.target) for s in (val_samples or train[:4])]

    def save(net_, res: dict[str, Any]) -> None:
        card["metrics"] = {
            "val_pixel_dice_per_class": res["per_class_dice"],
            "val_mean_dice_interior_boundary": round(res["best_dice"], 4),
            "step": res["step"],
        }
        save_model(net_, card, out)

    sampler = make_sampler(train, tile, stain=stain, density=density)
    net, res = train_segmenter(
        card, sampler, val_tiles, cfg, net=net, on_best=save, log=say, progress=progress
    )
    result: dict[str, Any] = {
        "train": {k: v for k, v in res.items() if k != "history"},
        "history": res["history"],
    }
    vec = VECTOR_SUFFIXES
    inst_val = [(p, a) for p, a in val_pairs if a.suffix.lower() in vec]
    inst_tune = inst_val or [(p, a) for p, a in train_pairs if a.suffix.lower() in vec]
    inst_held = [(p, a) for p, a in held_pairs if a.suffix.lower() in vec]
    which = "validation" if inst_val else "training"
    result.update(tune_and_score(out, mpp, inst_tune, inst_held, which, say))
    return result
