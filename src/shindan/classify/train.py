"""Train an image classifier from a folder-per-class tree or CSV and write a model with its card."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shindan.classify.data import ImageDataset, ImageTable, load_table
from shindan.classify.preprocess import eval_transform, train_transform
from shindan.classify.shifts import SHIFTS, describe, get_shift
from shindan.classify.splits import site_split, train_val_test
from shindan.engine.augment import Augmenter
from shindan.engine.train_classifier import fit, predict_dataset
from shindan.models import ModelCard, save_model
from shindan.models.domain import card_domain, scale_entry
from shindan.stats import classification_report

# Stain-agnostic fixed normalisation: centred, unit-ish spread for 8-bit RGB.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass
class TrainOptions:
    """Everything ``classify train`` takes besides the data and the output folder."""

    name: str = "classifier"
    version: str = "1.0"  # the card's model version (``--model-version``)
    arch: str = "mobilenetv3_small_100"
    size: int = 128
    classes: Sequence[str] | None = None
    group_pattern: str | None = None
    folds: int = 5
    test_fold: int = 0
    val_fraction: float = 0.15
    cv: bool = False
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    patience: int = 8
    monitor: str = "macro_f1"
    seed: int = 0
    colour: float = 1.0
    scale: tuple[float, float] = (0.8, 1.25)
    crop: float = 1.0
    fade: float = 0.0
    label_smoothing: float = 0.05
    drop_rate: float = 0.2
    tta: Sequence[str] = ()
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    positive: str | None = None
    shifts: Sequence[str] = field(default_factory=lambda: list(SHIFTS))
    data: str = ""
    licence: str = "unknown"
    command: str = ""
    limits: Sequence[str] = ()
    # the card's domain: stains of the training images, their µm/px (None: varies/unknown)
    stains: Sequence[str] = ()
    tissue: str = ""
    data_mpp: float | None = None
    threads: int = 1
    workers: int = 0
    progress: bool = True
    n_boot: int = 1000
    pretrained: str | None = None
    cell_crop: float | None = None
    colour_norm: str = "none"
    blur: float = 1.2
    # two classes: the cut-off keeps this validation sensitivity for the positive class
    # (0: Youden's cut-off); see shindan.classify.calibrate
    sensitivity: float = 0.95


def _card(opts: TrainOptions, table: ImageTable) -> dict[str, Any]:
    mean, std = MEAN, STD
    start = "trained from scratch"
    if opts.pretrained:
        from shindan.models.pretrained import PRETRAINED

        entry = PRETRAINED[opts.pretrained]
        mean, std = entry.mean, entry.std  # what the pretrained weights expect
        start = f"initialised from ImageNet {entry.name} weights"
    card: dict[str, Any] = {
        "name": opts.name,
        "version": opts.version,
        "task": "classification",
        "summary": f"{len(table.classes)}-class image classifier ({opts.arch}, "
        f"{opts.size} px, {start}).",
        "architecture": {
            "library": "timm",
            "name": opts.arch,
            "kwargs": {"drop_rate": opts.drop_rate, **dict(opts.arch_kwargs)},
        },
        "classes": list(table.classes),
        "input": {
            "size": opts.size,
            "mean": list(mean),
            "std": list(std),
            "channels": 3,
            "mpp": None,
            "crop": opts.crop,
            "tta": list(opts.tta),
            "resize": "central crop fraction of each side, resized to size x size",
        },
        "files": {"weights": "weights.safetensors"},
        "training": {
            "data": opts.data or str(table.root),
            "licence": opts.licence,
            "command": opts.command,
            "seed": opts.seed,
            "scales": [
                scale_entry(
                    opts.data or str(table.root),
                    opts.data_mpp,
                    "given with --data-mpp" if opts.data_mpp else "not given (varies or unknown)",
                )
            ],
        },
        **card_domain(opts.stains, opts.data_mpp, opts.tissue),
    }
    if opts.cell_crop is not None:
        card["input"]["cell_crop"] = opts.cell_crop
        card["input"]["resize"] = (
            f"a square {opts.cell_crop:g} times the larger extent of the stained nucleus "
            "nearest the centre (Otsu on blue minus green), centred on it and padded with the "
            "background colour; its central crop fraction resized to size x size"
        )
    if opts.colour_norm != "none":
        card["input"]["colour"] = opts.colour_norm
        card["input"]["colour_method"] = {
            "stretch": "per image and channel, the 1st..99th percentile mapped to 0..255",
            "grey": "per image, the luminance (ITU-R 601) with its 1st..99th percentile mapped "
            "to 0..255, in all three channels",
        }[opts.colour_norm] + " (after the resize, in training after the augmentation)"
    if opts.pretrained:
        from shindan.models.pretrained import init_record

        card["training"]["init"] = init_record(opts.pretrained)
    return card


def _round_fp16(net: nn.Module) -> None:
    """Round weights to fp16 and back, as the shipped file stores them (metrics then match)."""
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())


def evaluate_net(
    net: nn.Module,
    table: ImageTable,
    size: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    crop: float = 1.0,
    tta: Sequence[str] = (),
    spec: Mapping[str, Any] | None = None,
    decision: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of a torch network on ``table``, prepared as ``spec`` (a card's ``input``;
    default: the central ``crop`` resized to ``size``), optionally shifted first, logits
    averaged over the test-time views ``tta``; with a card's ``decision``, probabilities
    are calibrated and labels follow its cut-off (as ``classify evaluate`` scores them), and
    the report gets a ``decision`` part (:func:`shindan.classify.calibrate.decision_metrics`).
    """
    if spec is None:
        spec = {"size": size, "crop": crop, "mean": MEAN, "std": STD}
    ds = ImageDataset(table, eval_transform(spec, transform), spec["mean"], spec["std"])
    probs, y = predict_dataset(net, ds, batch_size=64, tta=tta)
    if not decision:
        return classification_report(y, probs, table.classes, n_boot=n_boot, seed=seed), probs
    from shindan.classify.calibrate import decision_metrics
    from shindan.models.decision import Decision

    card = {"classes": list(table.classes), "decision": dict(decision)}
    dec = Decision.from_card(card)
    probs = dec.calibrate(probs)
    report = classification_report(
        y, probs, table.classes, n_boot=n_boot, seed=seed, predicted=dec.labels(probs)
    )
    report["decision"] = decision_metrics(y, probs, card["decision"], table.classes)
    return report, probs


def headline(
    report: dict[str, Any], classes: Sequence[str], positive: str | None, where: str
) -> str:
    """One-line headline metric: AUC of the positive class for two classes, else acc/F1."""
    if len(classes) == 2:
        pos = positive or classes[0]
        pc = report["per_class"][pos]
        lo, hi = pc["auc_ci"]
        ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None else ""
        d = report.get("decision")
        at = (
            f" at the cut-off p({pos}) >= {d['threshold']:g} (sensitivity "
            f"{d['sensitivity']:.3f}, specificity {d['specificity']:.3f})"
            if d and d.get("threshold") is not None and d.get("sensitivity") is not None
            else ""
        )
        return (
            f"ROC-AUC {pc['auc']:.3f}{ci} for {pos}, accuracy {report['accuracy']:.3f}{at} "
            f"on {where} (n={report['n']})"
        )
    return (
        f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}, "
        f"macro ROC-AUC {report['macro_auc']:.3f} on {where} (n={report['n']})"
    )


def site_score(
    y: np.ndarray, probs: np.ndarray, sites: np.ndarray | None
) -> tuple[float, list[float]]:
    """The validation rule: macro-F1 of the first site (all classes), accuracy of every other
    site (fewer classes, few images each), averaged; with one site, its macro-F1.

    Examples
    --------
    >>> y = np.array([0, 1, 0, 1]); p = np.eye(2)[[0, 1, 1, 1]]
    >>> site_score(y, p, np.array([0, 0, 1, 1]))
    (0.75, [1.0, 0.5])
    """
    from sklearn.metrics import accuracy_score, f1_score

    pred = np.asarray(probs).argmax(1)
    y = np.asarray(y)
    sites = np.zeros(len(y), np.int64) if sites is None else np.asarray(sites)
    parts = []
    for k in np.unique(sites):
        m = sites == k
        if k == 0:
            f1 = f1_score(y[m], pred[m], average="macro", labels=np.unique(y[m]), zero_division=0)
            parts.append(float(f1))
        else:
            parts.append(float(accuracy_score(y[m], pred[m])))
    return float(np.mean(parts)), parts


def _augmenter(opts: TrainOptions) -> Augmenter:
    aug = Augmenter.with_strength(
        opts.size, colour=opts.colour, scale=tuple(opts.scale), crop=opts.crop, fade=opts.fade
    )
    if opts.blur != aug.blur_sigma:
        aug = dataclasses.replace(aug, blur_sigma=opts.blur, blur_p=max(aug.blur_p, 0.4))
    return aug


def _train_one(
    opts: TrainOptions,
    table: ImageTable,
    test_fold: int,
    log: Callable[[str], None] | None,
    sites: np.ndarray | None = None,
    site_names: Sequence[str] = (),
) -> tuple[nn.Module, dict[str, Any]]:
    if sites is None:
        tr, va, te = train_val_test(table, opts.folds, test_fold, opts.val_fraction, opts.seed)
    else:
        tr, va, te = site_split(table, sites, opts.folds, test_fold, opts.val_fraction, opts.seed)
    card = _card(opts, table)
    spec = card["input"]
    mean, std = spec["mean"], spec["std"]
    train_ds = ImageDataset(table.subset(tr), train_transform(spec, _augmenter(opts)), mean, std)
    val_ds = ImageDataset(table.subset(va), eval_transform(spec), mean, std)
    if log:
        log(
            f"split (test fold {test_fold}/{opts.folds}): train {len(tr)}, val {len(va)}, "
            f"test {len(te)} images; groups: train {len(set(table.groups[tr]))}, "
            f"val {len(set(table.groups[va]))}, test {len(set(table.groups[te]))}"
        )
    init = None
    if opts.pretrained:
        from shindan.models.pretrained import load_pretrained_encoder

        def init(net: nn.Module) -> None:
            load_pretrained_encoder(net, opts.pretrained)
            # A zero head starts at uniform probabilities: timm's EfficientNet head init gives
            # logits of std ~7 on pretrained features, and the first epoch is spent undoing it.
            head = net.get_classifier()
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    val_score = None
    if sites is not None:
        val_sites = sites[va]

        def val_score(y: np.ndarray, probs: np.ndarray) -> float:
            return site_score(y, probs, val_sites)[0]

    net, hist = fit(
        card,
        train_ds,
        val_ds,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        weight_decay=opts.weight_decay,
        patience=opts.patience,
        seed=opts.seed,
        progress=opts.progress,
        num_threads=opts.threads,
        num_workers=opts.workers,
        label_smoothing=opts.label_smoothing,
        monitor=opts.monitor,
        log=log,
        init=init,
        val_score=val_score,
    )
    _round_fp16(net)
    decision = None
    if len(table.classes) == 2 and len(va):
        from shindan.classify.calibrate import fit_decision

        probs_val, y_val = predict_dataset(net, val_ds, batch_size=64, tta=opts.tta)
        decision = fit_decision(
            probs_val,
            y_val,
            table.classes,
            opts.positive,
            opts.sensitivity,
            fitted_on=f"validation split ({len(va)} images, {len(set(table.groups[va]))} groups)",
        )
        if log:
            v = decision["validation"]
            log(
                f"decision: temperature {decision['temperature']}, cut-off "
                f"p({decision['positive']}) >= {decision['threshold']}; validation sensitivity "
                f"{v['sensitivity']}, specificity {v['specificity']}"
            )
    info: dict[str, Any] = {
        "split": {
            "train": len(tr),
            "val": len(va),
            "test": len(te),
            "test_groups": len(set(table.groups[te])),
        },
        "history": {
            "best_epoch": hist["best_epoch"],
            "epochs_run": hist["epochs_run"],
            "val_macro_f1": [round(v, 4) for v in hist["val_macro_f1"]],
            "train_loss": [round(v, 4) for v in hist["train_loss"]],
            "seconds": round(float(sum(hist["seconds"])), 1),
        },
    }
    if "val_score" in hist:
        info["history"]["val_score"] = [round(v, 4) for v in hist["val_score"]]
    if decision:
        info["decision"] = decision
    threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    try:
        if sites is not None:
            info["sites"] = _site_metrics(opts, net, table, sites, site_names, va, te, spec, log)
        if len(te):
            test = table.subset(te)
            report, _ = evaluate_net(
                net,
                test,
                opts.size,
                n_boot=opts.n_boot,
                seed=opts.seed,
                tta=opts.tta,
                spec=spec,
                decision=decision,
            )
            info["test"] = report
            # Several sites: shift the first site's test part (comparable with one-site models).
            shifted = test if sites is None else table.subset(te[sites[te] == 0])
            rob = {}
            for name in opts.shifts:
                r, _ = evaluate_net(
                    net,
                    shifted,
                    opts.size,
                    get_shift(name),
                    n_boot=0,
                    tta=opts.tta,
                    spec=spec,
                    decision=decision,
                )
                rob[name] = {
                    "accuracy": round(r["accuracy"], 4),
                    "macro_f1": round(r["macro_f1"], 4),
                    "macro_auc": None if r["macro_auc"] is None else round(r["macro_auc"], 4),
                }
                if decision:  # at the cut-off vs at 0.5 (arg-max)
                    keys = ("accuracy_argmax", "sensitivity", "specificity")
                    keys += ("sensitivity_argmax", "specificity_argmax")
                    rob[name].update({k: r["decision"][k] for k in keys})
                if log:
                    log(
                        f"shift {name}: acc {r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f} "
                        f"macro-AUC {r['macro_auc']:.4f}"
                    )
            info["robustness"] = rob
    finally:
        torch.set_num_threads(threads)
    return net, info


def _site_metrics(
    opts: TrainOptions,
    net: nn.Module,
    table: ImageTable,
    sites: np.ndarray,
    site_names: Sequence[str],
    val: np.ndarray,
    test: np.ndarray,
    spec: dict[str, Any],
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """Per-site validation and test metrics, and the validation rule's score."""
    out: dict[str, Any] = {"names": list(site_names)}
    for part, idx in (("validation", val), ("test", test)):
        if not len(idx):
            continue
        report, probs = evaluate_net(
            net, table.subset(idx), opts.size, n_boot=0, tta=opts.tta, spec=spec
        )
        score, per_site = site_score(table.labels[idx], probs, sites[idx])
        out[part] = {"rule_score": round(score, 4), "sites": {}}
        for k, name in enumerate(site_names):
            m = sites[idx] == k
            if not m.any():
                continue
            r = classification_report(
                table.labels[idx][m],
                probs[m],
                table.classes,
                n_boot=opts.n_boot if part == "test" else 0,
                seed=opts.seed,
            )
            out[part]["sites"][name] = r
            if log:
                log(
                    f"{part} {name}: n {r['n']} acc {r['accuracy']:.4f} "
                    f"macro-F1 {r['macro_f1']:.4f} (rule part {per_site[k]:.4f})"
                )
        if log:
            log(f"{part} rule score {score:.4f}")
    return out


def load_sites(
    sources: Sequence[str | Path],
    classes: Sequence[str] | None = None,
    group_pattern: str | None = None,
) -> tuple[ImageTable, np.ndarray, list[str]]:
    """Several sites' labelled images as one table, the site index of each image, site names.

    The classes are ``classes`` or the sorted union of the sites' classes; a site may lack some.
    Each site is read as ``classify evaluate`` reads it for that model (same order, same
    groups), so ``--split test`` on one site's data finds its held-out part again.
    """
    from shindan.classify.data import scan_folder

    found = [load_table(s, None, group_pattern).classes for s in sources]
    names = list(classes) if classes else sorted(set().union(*found))
    paths: list[Path] = []
    labels, groups, sites, site_names = [], [], [], []
    for k, (src, own) in enumerate(zip(sources, found, strict=True)):
        present = [c for c in names if c in own]
        if not present:
            from shindan.errors import InputError

            raise InputError(f"{src}: none of the classes {names}")
        p = Path(src)
        t = (
            scan_folder(p, present, group_pattern)
            if p.is_dir() and len(present) > 1
            else load_table(p, present if len(present) > 1 else None, group_pattern)
        )
        remap = np.asarray([names.index(c) for c in t.classes], np.int64)
        paths += t.paths
        labels.append(remap[t.labels])
        groups += [f"{k}:{g}" for g in t.groups]
        sites.append(np.full(len(t), k, np.int64))
        name = Path(src).stem or f"site{k}"
        site_names.append(name if name not in site_names else f"{name}-{k}")
    table = ImageTable(
        tuple(paths),
        np.concatenate(labels),
        np.asarray(groups, dtype=object),
        tuple(names),
        None,
    )
    return table, np.concatenate(sites), site_names


VALIDATION_RULE = (
    "mean of the first site's macro-F1 and every other site's accuracy on their validation "
    "parts (checked every epoch; the best epoch's weights are kept)"
)


def train_model(
    source: str | Path | Sequence[str | Path],
    out: str | Path,
    opts: TrainOptions,
    log: Callable[[str], None] | None = None,
) -> ModelCard:
    """Train on ``source`` (class folders or CSV), evaluate on the held-out fold, save to ``out``.

    ``source`` may be a list of several sites (hospitals, cameras): a part of each is held
    out for validation and one for testing (:func:`shindan.classify.splits.site_split`), the
    validation rule is :data:`VALIDATION_RULE`, and the card gets per-site metrics.

    With ``opts.cv`` every fold is held out once (k models trained) and the mean and standard
    deviation of the test metrics go into the card; the saved model is the one for
    ``opts.test_fold``.

    Returns the saved model's card.
    """
    t0 = time.perf_counter()
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    sites, site_names = None, []
    if len(sources) == 1:
        table = load_table(sources[0], opts.classes, opts.group_pattern)
    else:
        table, sites, site_names = load_sites(sources, opts.classes, opts.group_pattern)
        if opts.cv:
            from shindan.errors import InputError

            raise InputError("--cv takes one data source")
    if opts.positive is not None and opts.positive not in table.classes:
        from shindan.errors import InputError

        raise InputError(f"--positive {opts.positive!r} is not a class ({table.classes})")
    for name in opts.shifts:
        get_shift(name)
    if log:
        log(
            f"{len(table)} images, classes {table.counts()}, "
            f"{len(set(table.groups.astype(str)))} groups"
        )
    card = _card(opts, table)
    net, info = _train_one(opts, table, opts.test_fold, log, sites, site_names)
    metrics: dict[str, Any] = {}
    where = "held-out fold" + (" (unseen groups)" if opts.group_pattern else "")
    if "test" in info:
        metrics["test"] = info["test"]
        metrics["robustness"] = info["robustness"]
        metrics["robustness_method"] = describe(list(opts.shifts), tuple(opts.scale))
        card["headline"] = headline(info["test"], table.classes, opts.positive, where)
    if sites is not None:
        metrics["sites"] = info["sites"]
        if "test" in info["sites"]:
            per = info["sites"]["test"]["sites"]
            card["headline"] = (
                "; ".join(
                    f"{n}: accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f} (n={r['n']})"
                    for n, r in per.items()
                )
                + " on the held-out part of each site"
            )
            metrics["robustness_method"] += f" Shifted images: the {site_names[0]} test part."
    if opts.cv and opts.folds:
        folds = [info.get("test")]
        for k in range(opts.folds):
            if k != opts.test_fold:
                folds.append(_train_one(opts, table, k, log)[1].get("test"))
        keys = ("accuracy", "macro_f1", "macro_auc")
        metrics["cv"] = {
            "folds": opts.folds,
            **{
                k: {
                    "mean": float(np.mean([f[k] for f in folds])),
                    "sd": float(np.std([f[k] for f in folds], ddof=1)),
                    "per_fold": [f[k] for f in folds],
                }
                for k in keys
            },
        }
    card["training"].update(
        {
            "split": {
                "folds": opts.folds,
                "test_fold": opts.test_fold,
                "val_fraction": opts.val_fraction,
                "group_pattern": opts.group_pattern,
                "method": "StratifiedGroupKFold, shuffled with the seed"
                + (", within each site" if sites is not None else ""),
                **info["split"],
            },
            "counts": table.counts(),
            "epochs": opts.epochs,
            "batch_size": opts.batch_size,
            "lr": opts.lr,
            "weight_decay": opts.weight_decay,
            "monitor": opts.monitor,
            "augmentation": {
                "colour_strength": opts.colour,
                "scale": list(opts.scale),
                "crop": opts.crop,
                "fade": opts.fade,
                "blur_sigma": opts.blur,
                "steps": "affine (log-uniform zoom, any rotation, flip, shift, "
                "reflect or plain light border), HED stain jitter, "
                "HSV/brightness/contrast/gamma/white-balance jitter, "
                "fade to white (when fade > 0), grey, Gaussian blur, noise, "
                "JPEG",
            },
            "history": info["history"],
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
    )
    if sites is not None:
        card["training"]["sites"] = [
            {
                "name": n,
                "source": str(src),
                "counts": table.subset(np.flatnonzero(sites == k)).counts(),
            }
            for k, (n, src) in enumerate(zip(site_names, sources, strict=True))
        ]
        card["training"]["validation_rule"] = VALIDATION_RULE
    if "decision" in info:
        card["decision"] = info["decision"]
    card["metrics"] = metrics
    card["limits"] = list(opts.limits)
    if opts.shifts and "robustness" in metrics:
        others = "other sites" if sites is None else "sites other than " + ", ".join(site_names)
        card["limits"].append(
            "Robustness was checked only with synthetic shifts of the held-out images "
            f"({', '.join(opts.shifts)}; see metrics.robustness), not on images from {others}."
        )
    return save_model(net, card, out)
