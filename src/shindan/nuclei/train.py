"""Train a nucleus instance-segmentation model (U-Net: background / interior / boundary, and
optionally core)."""

from __future__ import annotations

import dataclasses
import glob
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shindan.engine.train_segmenter import TrainConfig, train_segmenter
from shindan.errors import InputError, ModelError
from shindan.io.inputs import IMAGE_SUFFIXES, pair_annotations
from shindan.models.card import DEFAULT_DECODER, DEFAULT_ENCODER, as_fine_tune, unet_card
from shindan.models.domain import card_domain, scale_entry
from shindan.nuclei.data import (
    MARGIN_UM,
    NucleiSample,
    has_instances,
    label_sets,
    load_sample,
    make_sampler,
    read_nuclei,
)
from shindan.nuclei.metrics import aji, dice
from shindan.nuclei.postprocess import DEFAULTS

CLASSES = ["background", "interior", "boundary"]
CORE = "core"  # the optional fourth class: each nucleus's centre (see instance_targets)


@dataclass(frozen=True)
class NucleiSource:
    """Training images at one scale, and their annotations.

    Attributes
    ----------
    name : str
        Source name (a data set, a hospital): sources of one name form one group, and
        validation and held-out scores are means over the groups.
    images : tuple of Path
        Image files or folders (searched recursively).
    annotations : tuple of Path
        Annotation files or folders, paired with the images by
        :func:`~shindan.io.inputs.pair_annotations`.
    mpp : float
        µm/px of the images.
    """

    name: str
    images: tuple[Path, ...]
    annotations: tuple[Path, ...]
    mpp: float


@dataclass(frozen=True)
class LabelledImage:
    """One image, its annotation file, its µm/px and its source's name."""

    image: Path
    annotation: Path
    mpp: float
    source: str


def source_name(images: str | Path) -> str:
    """A source's default name: the name of its images' folder, or of that folder's parent
    when it is called ``images``.

    Examples
    --------
    >>> source_name("data/cpm15/images"), source_name("data/cpm15/images/image0[1-7].jpg")
    ('cpm15', 'cpm15')
    """
    p = Path(images)
    if p.suffix or any(c in p.name for c in "*?["):  # a file or a pattern
        p = p.parent
    if p.name.lower() == "images":
        p = p.parent
    return p.name or str(p)


def parse_source(spec: str) -> NucleiSource:
    """A ``--source`` value: ``[NAME=]IMAGES:ANNOTATIONS:MPP``.

    IMAGES and ANNOTATIONS are one or more comma-separated files or folders (images:
    searched recursively, or glob patterns); NAME defaults to :func:`source_name` of the
    first IMAGES. Bad values raise :class:`InputError`.

    Examples
    --------
    >>> s = parse_source("cpm-40x=cpm15/images/image1*.jpg:cpm15/instances:0.25")
    >>> s.name, s.annotations, s.mpp  # doctest: +SKIP
    ('cpm-40x', (PosixPath('cpm15/instances'),), 0.25)
    """
    name = ""
    head, sep, rest = spec.partition("=")
    if sep and head and not any(c in head for c in "/:\\"):
        name, spec = head, rest
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise InputError(f"--source must be [NAME=]IMAGES:ANNOTATIONS:MPP, got {spec!r}")
    images, annotations, mpp_text = parts
    try:
        mpp = float(mpp_text)
    except ValueError:
        mpp = 0.0
    if not 0.01 <= mpp <= 100:
        raise InputError(f"--source {spec!r}: MPP must be a number of µm/px in [0.01, 100]")
    paths: list[Path] = []
    for item in (i for i in images.split(",") if i):
        if any(c in Path(item).name for c in "*?["):
            found = sorted(glob.glob(item))
            if not found:
                raise InputError(f"--source {spec!r}: no file matches {item}")
            paths += map(Path, found)
        elif Path(item).exists():
            paths.append(Path(item))
        else:
            raise InputError(f"{item}: no such file or folder")
    anns = tuple(Path(a) for a in annotations.split(",") if a)
    for a in anns:
        if not a.exists():
            raise InputError(f"{a}: no such file or folder")
    if not paths or not anns:
        raise InputError(f"--source must be [NAME=]IMAGES:ANNOTATIONS:MPP, got {spec!r}")
    return NucleiSource(name or source_name(images.split(",")[0]), tuple(paths), anns, mpp)


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


def _per_pair(mpp: float | Sequence[float], n: int) -> list[float]:
    """One µm/px per image: ``mpp`` repeated, or the sequence given (checked)."""
    if isinstance(mpp, int | float):
        return [float(mpp)] * n
    if len(mpp) != n:
        raise ValueError(f"{len(mpp)} µm/px values for {n} images")
    return [float(m) for m in mpp]


def group_means(values: Sequence[float], groups: Sequence[str] | None) -> tuple[float, dict]:
    """Mean of ``values`` over groups (each group's mean, then their mean), and the group
    means; without ``groups``, the plain mean and ``{}``.

    Examples
    --------
    >>> mean, by_group = group_means([0.5, 0.7, 0.9], ["a", "a", "b"])
    >>> round(mean, 4), by_group
    (0.75, {'a': 0.6, 'b': 0.9})
    """
    if not groups:
        return float(np.mean(values)), {}
    by: dict[str, list[float]] = {}
    for v, g in zip(values, groups, strict=True):
        by.setdefault(g, []).append(float(v))
    means = {g: round(float(np.mean(v)), 4) for g, v in by.items()}
    return float(np.mean([np.mean(v) for v in by.values()])), means


def evaluate_instances(
    model: Any,
    pairs: Sequence[tuple[Path, Path]],
    mpp: float | Sequence[float],
    backend: str = "torch",
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Pixel Dice and AJI of :func:`segment_nuclei` on images with instances (polygons or
    instance maps), at the images' own resolution (``mpp``: one value, or one per image),
    within their annotated areas (see :func:`~shindan.nuclei.data.read_nuclei`).

    With ``groups`` (a source name per image), ``dice_mean`` and ``aji_mean`` are means over
    the sources (each source's mean, in ``sources``), so that many tiles of one source do not
    outvote another; without, means over the images."""
    from shindan.engine import load_predictor
    from shindan.nuclei.data import read_rgb
    from shindan.nuclei.segment import segment_nuclei

    pred = load_predictor(model, backend)
    per = {}
    for (img_path, ann), m in zip(pairs, _per_pair(mpp, len(pairs)), strict=True):
        img = read_rgb(img_path)
        truth, area = read_nuclei(ann, img.shape[:2], MARGIN_UM / m)
        # nuclei found outside the annotated area are neither right nor wrong
        lab = np.where(area, segment_nuclei(img, m, predictor=pred), 0)
        per[img_path.stem] = {
            "dice": round(dice(truth, lab), 4),
            "aji": round(aji(truth, lab), 4),
            "nuclei_true": int(len(np.unique(truth[truth > 0]))),
            "nuclei_found": int(len(np.unique(lab[lab > 0]))),
        }
    dice_mean, dice_by = group_means([v["dice"] for v in per.values()], groups)
    aji_mean, aji_by = group_means([v["aji"] for v in per.values()], groups)
    out: dict[str, Any] = {
        "images": per,
        "dice_mean": round(dice_mean, 4),
        "aji_mean": round(aji_mean, 4),
    }
    if groups:
        out["sources"] = {
            g: {"dice": dice_by[g], "aji": aji_by[g], "images": list(groups).count(g)}
            for g in dice_by
        }
    return out


def watershed_data(
    model: Any,
    pairs: Sequence[tuple[Path, Path]],
    mpp: float | Sequence[float],
    backend: str = "torch",
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(true instances, probabilities enlarged to the image grid, input px per model px) of
    each image with instances (``mpp``: one value, or one per image): what
    :func:`tune_watershed` searches over. Outside an image's annotated area (see
    :func:`~shindan.nuclei.data.read_nuclei`) the probabilities are set to background, so
    nuclei there count neither way."""
    import cv2

    from shindan.engine import load_predictor
    from shindan.nuclei.data import read_rgb
    from shindan.nuclei.segment import nuclei_probabilities

    pred = load_predictor(model, backend)
    data = []
    for (img_path, ann), m in zip(pairs, _per_pair(mpp, len(pairs)), strict=True):
        img = read_rgb(img_path)
        h, w = img.shape[:2]
        truth, area = read_nuclei(ann, (h, w), MARGIN_UM / m)
        probs = nuclei_probabilities(img, m, pred)
        ratio = (h * w) / (probs.shape[1] * probs.shape[2])
        up = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in probs])
        up[:, ~area] = 0.0
        up[0, ~area] = 1.0
        data.append((truth, up, ratio))
    return data


def search_watershed(
    data: Sequence[tuple[np.ndarray, np.ndarray, float]], groups: Sequence[str] | None = None
) -> dict[str, Any]:
    """Watershed parameters (on the model's grid) maximising mean AJI over ``data`` (see
    :func:`watershed_data`; with ``groups``, a source name per image, the mean over sources
    of each source's mean, see :func:`group_means`): a grid over the thresholds and marker
    size, then the seed split ``marker_h`` and the smallest nucleus for the best of them,
    then the thresholds again with those fixed."""
    import itertools

    from shindan.nuclei.postprocess import instances_from_probs

    def score(params: dict[str, float]) -> float:
        ajis = [
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
        return group_means(ajis, groups)[0]

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
    model: Any,
    pairs: Sequence[tuple[Path, Path]],
    mpp: float | Sequence[float],
    backend: str = "torch",
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Pick watershed parameters maximising mean AJI on images with instances (with
    ``groups``: mean over sources, see :func:`search_watershed`).

    Use training or validation images (never the held-out ones). Returns the best parameters
    and their AJI.
    """
    return search_watershed(watershed_data(model, pairs, mpp, backend), groups)


def _groups(items: Sequence[LabelledImage]) -> list[str] | None:
    """Each image's source name when the images come from several sources, else None."""
    names = [i.source for i in items]
    return names if len(set(names)) > 1 else None


def tune_and_score(
    out: Path,
    tune: Sequence[LabelledImage],
    held: Sequence[LabelledImage],
    which: str = "validation",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tune the watershed of the model in ``out`` on ``tune`` (written to its card), then
    score it on ``held`` (images with instances, each at its own µm/px).

    Images from several sources count per source: the tuned AJI and the held-out means are
    means over sources (see :func:`group_means`). The tuned parameters, their AJI and the
    held-out scores go into the card's ``postprocess``, ``metrics`` and ``headline``. Returns
    ``watershed_tuning`` and ``heldout`` (:func:`evaluate_instances`) when there were images
    for them. Predictions use the card's test-time views, as later use will.
    """
    from shindan.models import load_card, load_network, save_model

    say = log or (lambda s: print(s, file=sys.stderr))
    result: dict[str, Any] = {}
    if tune:
        groups = _groups(tune)
        per = " (mean over sources)" if groups else ""
        say(f"tuning watershed thresholds on {len(tune)} {which} images with instances{per}")
        pairs = [(i.image, i.annotation) for i in tune]
        tuned = tune_watershed(out, pairs, [i.mpp for i in tune], groups=groups)
        tuned["images"] = sorted(i.image.stem for i in tune)
        result["watershed_tuning"] = tuned
        c = load_card(out)
        key = "val_watershed_aji" if which == "validation" else f"{which}_watershed_aji"
        metrics = {**c.data.get("metrics", {}), key: tuned["aji"]}
        data = {**c.data, "postprocess": {"watershed": tuned["params"]}, "metrics": metrics}
        save_model(load_network(c), data, out)
        say(f"watershed {tuned['params']} ({which}-image AJI {tuned['aji']})")
    if held:
        say("scoring held-out images (Dice, AJI) at their own resolution")
        pairs = [(i.image, i.annotation) for i in held]
        h = evaluate_instances(out, pairs, [i.mpp for i in held], groups=_groups(held))
        result["heldout"] = h
        say(f"held-out Dice {h['dice_mean']} AJI {h['aji_mean']}")
        c = load_card(out)
        metrics = {
            **c.data.get("metrics", {}),
            "heldout_images": sorted(h["images"]),
            "heldout_dice": h["dice_mean"],
            "heldout_aji": h["aji_mean"],
            "heldout_per_image": h["images"],
            **({"heldout_per_source": h["sources"]} if "sources" in h else {}),
        }
        headline = (
            f"Dice {h['dice_mean']:.3f}, AJI {h['aji_mean']:.3f} on "
            f"{len(h['images'])} held-out images"
        )
        if "sources" in h:
            headline += (
                " (mean over sources: "
                + ", ".join(
                    f"{g} {v['dice']:.3f} / {v['aji']:.3f}" for g, v in h["sources"].items()
                )
                + ")"
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
    images: Path | None,
    annotations: Sequence[Path],
    out: Path,
    *,
    mpp: float | None = None,
    sources: Sequence[NucleiSource] = (),
    pretrained: str | None = None,
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
    version: str | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or fine-tune from ``init``) on image/annotation pairs and save to ``out``.

    ``encoder`` and ``decoder_channels`` shape a new U-Net (a fine-tuned model keeps the
    architecture and the µm/px of ``init``: its scale replaces ``target_mpp``). Images and
    annotations are paired by :func:`~shindan.io.inputs.pair_annotations`; every pair
    (training, validation and held-out) is read and checked before training starts.
    ``images``/``annotations`` at ``mpp`` are one source; ``sources`` adds others, each at
    its own µm/px (see :class:`NucleiSource`; image stems must be unique over all sources).
    With several source names, the checkpoint and the watershed are chosen on the mean over
    sources of the validation scores, and held-out scores are reported per source.
    ``pretrained`` (a key of :data:`~shindan.models.pretrained.PRETRAINED`) starts a new
    model's encoder from those weights, with their encoder and input normalisation.

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
    srcs = list(sources)
    if images is not None:
        if mpp is None:
            raise InputError("give --mpp, the µm/px of the training images")
        srcs.insert(0, NucleiSource(source_name(images), (Path(images),), tuple(annotations), mpp))
    if not srcs:
        raise InputError("no training images: give IMAGES with --annotations, or --source")
    if pretrained and init:
        raise InputError("--pretrained starts a new model; it cannot be combined with --init")
    entry = _pretrained_entry(pretrained) if pretrained else None
    items = [
        LabelledImage(p, a, src.mpp, src.name)
        for src in srcs
        for p, a in pair_annotations(
            list(src.images), list(src.annotations), suffixes=IMAGE_SUFFIXES, log=say
        )
    ]
    stems = {i.image.stem for i in items}
    if len(stems) < len(items):  # --val and --holdout name images by stem
        counts = Counter(i.image.stem for i in items)
        twice = sorted(k for k, n in counts.items() if n > 1)
        raise InputError(f"image stems occur more than once: {', '.join(twice[:5])}")
    for opt, names in (("--holdout", holdout), ("--val", val)):
        unknown = set(names) - stems
        if unknown:
            raise InputError(f"{opt} names no annotated image: {', '.join(sorted(unknown))}")
    if set(holdout) & set(val):
        raise InputError(
            f"images both held out and validation: {', '.join(sorted(set(holdout) & set(val)))}"
        )
    train_items = [i for i in items if i.image.stem not in holdout and i.image.stem not in val]
    val_items = [i for i in items if i.image.stem in val]
    held_items = [i for i in items if i.image.stem in holdout]
    if not train_items:
        raise InputError("every image is held out; nothing left to train on")
    scale_note = ""
    if init:  # the starting model fixes the scale the data is read at
        base = load_card(init)
        if (CORE in base.data["classes"]) and core <= 0:
            raise InputError(f"--init {init} has a core class: give --core to fine-tune it")
        if base.data["input"]["mpp"]:
            target_mpp = base.data["input"]["mpp"]
            scale_note = f" (the µm/px of --init {init})"

    def load(ps: Sequence[LabelledImage]) -> list[NucleiSample]:
        return [
            load_sample(i.image, i.annotation, i.mpp, target_mpp, boundary_px, core) for i in ps
        ]

    train, val_samples = load(train_items), load(val_items)
    # held-out images are scored only after training: check their files now, so a bad one
    # stops the run before any model folder is written
    load(held_items)
    # said once all files have been read: a bad file's error stays the only line
    say(
        f"loaded {len(train_items)} training, {len(val_items)} validation and "
        f"{len(held_items)} held-out images at {target_mpp} µm/px{scale_note}"
    )
    names = list(dict.fromkeys(src.name for src in srcs))
    if len(names) > 1:
        for name in names:
            n = [
                sum(i.source == name for i in part) for part in (train_items, val_items, held_items)
            ]
            say(f"  {name}: {n[0]} training, {n[1]} validation, {n[2]} held-out")
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
            target_mpp,
            encoder=entry.smp_encoder if entry else encoder,
            decoder_channels=decoder_channels,
            core=core > 0,
        )
        net = None
        if entry:  # the weights expect their own input normalisation
            from shindan.models import build_network
            from shindan.models.pretrained import load_pretrained_encoder

            card["input"] = {**card["input"], "mean": list(entry.mean), "std": list(entry.std)}
            net = load_pretrained_encoder(build_network(card), entry.name)
    card["input"] = {k: v for k, v in card["input"].items() if k != "tta"}
    if views:
        card["input"]["tta"] = views
    card["training"] = {
        "data": data_note
        or f"{len(train_items)} image(s) from " + ", ".join(str(p) for s in srcs for p in s.images),
        "licence": licence or "as the training data",
        "command": command,
        "seed": cfg.seed,
        "scales": [  # one per source: each was read at its own µm/px
            scale_entry(data_note or str(images), src.mpp, "given with --mpp")
            if k == 0 and images is not None  # IMAGES, -a, --mpp
            else scale_entry(
                f"{src.name}: " + ", ".join(map(str, src.images)), src.mpp, "given with --source"
            )
            for k, src in enumerate(srcs)
        ],
    }
    # where the model was trained (--stain, --tissue): analyses mark inputs outside it
    mpps = sorted({src.mpp for src in srcs})
    card.update(card_domain(stains, mpps[0] if len(mpps) == 1 else mpps, tissue))
    if pretrained:
        from shindan.models.pretrained import init_record

        card["training"]["init"] = init_record(pretrained)
    if init:
        card = as_fine_tune(card, base)
    if version:  # --model-version: the card's version, for a new model or a fine-tune
        card["version"] = version
    # the checkpoint is chosen on validation images; without any, on (a few) training images
    val_tiles: Any = [(s.image, s.target) for s in (val_samples or train[:4])]
    val_groups = _groups(val_items)
    if val_samples and val_groups:  # each source's Dice counts once, however many tiles
        val_tiles = {}
        for g, tile_ in zip(val_groups, [(s.image, s.target) for s in val_samples], strict=True):
            val_tiles.setdefault(g, []).append(tile_)

    def save(net_, res: dict[str, Any]) -> None:
        card["metrics"] = {
            "val_pixel_dice_per_class": res["per_class_dice"],
            "val_mean_dice_interior_boundary": round(res["best_dice"], 4),
            **({"val_dice_per_source": res["group_dice"]} if "group_dice" in res else {}),
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
    inst_val = [i for i in val_items if has_instances(i.annotation)]
    inst_tune = inst_val or [i for i in train_items if has_instances(i.annotation)]
    inst_held = [i for i in held_items if has_instances(i.annotation)]
    which = "validation" if inst_val else "training"
    result.update(tune_and_score(out, inst_tune, inst_held, which, say))
    return result


def _pretrained_entry(name: str) -> Any:
    """The :data:`~shindan.models.pretrained.PRETRAINED` entry of ``name``, its package
    importable (else :class:`InputError`, before any training)."""
    import importlib.util

    from shindan.models.pretrained import PRETRAINED

    if name not in PRETRAINED:
        raise InputError(f"unknown --pretrained {name!r} (known: {', '.join(sorted(PRETRAINED))})")
    entry = PRETRAINED[name]
    if importlib.util.find_spec(entry.module) is None:
        raise InputError(
            f"--pretrained {name} needs the package {entry.package}=={entry.version}: "
            "pip install 'shindan[train]'"
        )
    return entry
