"""The built-in real-data recipe (``kidney train --builtin``): which images train, validate and
test, the sampler settings and loss weights, and what the card says about its data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shindan.errors import InputError
from shindan.kidney.training.builtin_sets import (
    AAPI_MPP,
    AAPI_TILES,
    AIDPATH_CROP_MPP,
    AIDPATH_LABS,
    HUBMAP_MPP,
    load_aapi_background,
    load_aapi_cutouts,
    load_aapi_tile,
    load_aidpath,
    load_hubmap,
    load_phantoms,
)
from shindan.kidney.training.labelled import LabelledImage, split_columns
from shindan.kidney.training.sampler import CompartmentData
from shindan.kidney.training.stain_transfer import harmonise_sources, stain_references

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
            "(shindan.kidney.training.builtin_sets.HUBMAP_MPP)",
        },
    ]
    if aidpath:
        scales.append(
            {
                "data": "AIDPATH PAS glomerulus crops (glomerulosclerosis-aidpath)",
                "mpp": AIDPATH_CROP_MPP,
                "source": "nominal: the source resized every crop to 224 px whatever the "
                "glomerulus size, so the scale varies "
                "(shindan.kidney.training.builtin_sets.AIDPATH_CROP_MPP)",
            }
        )
    if phantoms:
        scales.append(
            {
                "data": "shindan.slide_phantom synthetic biopsies",
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
    :mod:`shindan.kidney.training.builtin_sets`).

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


def builtin_notes(
    train_data: CompartmentData, aidpath_train_labs: Sequence[str] = (), phantoms: int = 0
) -> tuple[str, str]:
    """The card's training data note and licence for what the built-in recipe trained on."""
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
        + (f" + {phantoms} synthetic shindan.slide_phantom biopsies" if phantoms else "")
    )
    licence = (
        "MIT (AAPI, HuBMAP) + CC BY-NC-SA 4.0 (AIDPATH): non-commercial use only, "
        "inherited by this model"
        if train_data.crops
        else "MIT (AAPI, HuBMAP)"
    )
    return data_note, licence
