"""Train the kidney compartment model (the work of ``kidney train``): the built-in real-data
recipe or your own annotations, through the engine's segmenter loop, then held-out scores into
the card."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shindan.engine.train_segmenter import TrainConfig, train_segmenter
from shindan.errors import InputError
from shindan.kidney.glomeruli import MIN_GLOMERULUS_UM2
from shindan.kidney.labels import (
    CLASSES,
    GLOMERULUS,
    INTERSTITIUM,
    LABEL_SETS,
    TUBULE,
)
from shindan.kidney.training.builtin_recipe import (
    RECIPE_CLASS_WEIGHTS,
    RECIPE_SAMPLER,
    VALIDATED_ON,
    builtin_data,
    builtin_domain,
    builtin_notes,
    heldout_notes,
)
from shindan.kidney.training.builtin_sets import aidpath_lab
from shindan.kidney.training.labelled import LabelledImage
from shindan.kidney.training.sampler import CompartmentData, make_compartment_sampler
from shindan.kidney.training.scoring import glomerulus_dice, score_images
from shindan.kidney.training.user_annotations import annotated_sets
from shindan.models.card import DEFAULT_DECODER, DEFAULT_ENCODER, as_fine_tune, unet_card
from shindan.models.domain import card_domain, scale_entry


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
    version: str | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or fine-tune from ``init``) a compartment model and save it to ``out``.

    With ``builtin`` (the shared ``data/kidney`` folder) the real-data recipe runs (sampler
    :data:`~.builtin_recipe.RECIPE_SAMPLER`, CE weights
    :data:`~.builtin_recipe.RECIPE_CLASS_WEIGHTS` unless ``config`` has some, AAPI tile
    ``test_tile`` held out) and the held-out scores go into the card;
    otherwise ``inputs`` + ``annotations`` are used, with every fifth image (or, with a
    single image, its right fifth) kept for validation. ``encoder`` and ``decoder_channels``
    shape a new U-Net (a fine-tuned model keeps the architecture of ``init``); ``pretrained``
    (a key of :data:`~shindan.models.pretrained.PRETRAINED`) starts a new model's encoder from
    those weights, with their encoder and input normalisation.
    ``glomerulus_focus``: chance that a crop of a labelled image is placed on a glomerulus
    (see :func:`~shindan.kidney.training.sampler.make_compartment_sampler`);
    ``aidpath_train_labs``: AIDPATH labs whose crops train (see
    :func:`~.builtin_recipe.builtin_data`), drawn for ``aidpath_share`` of the PAS tiles, and
    re-coloured only to PAS references with ``crops_keep_stain``; ``select_by_source``: the
    checkpoint is chosen on the mean of each validation source's Dice (H&E strip, HuBMAP,
    AIDPATH crops) instead of the pooled pixels, where glomerulus-filled crops outvote the H&E
    strip. ``unannotated``: what the unannotated pixels of ``inputs`` are (see
    :func:`~.user_annotations.load_annotated`). ``stains`` and ``tissue``: the card's ``domain``
    for ``inputs`` (the built-in recipe states its own).

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
        data_note, licence = builtin_notes(train_data, aidpath_train_labs, phantoms)
    else:
        train_imgs, val, label_sets, data_note = annotated_sets(
            inputs, annotations, target_mpp, mpp, classes, unannotated, log=say
        )
        cfg.label_sets.update(label_sets)
        train_data = CompartmentData(train_imgs, [], [], [])
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
    if version:  # --model-version: the card's version, for a new model or a fine-tune
        card["version"] = version
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
