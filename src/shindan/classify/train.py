"""Train an image classifier from a folder-per-class tree or CSV and write a model with its card."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shindan.engine.augment import Augmenter, Resize
from shindan.classify.data import ImageDataset, ImageTable, load_table
from shindan.classify.shifts import SHIFTS, describe, get_shift
from shindan.classify.splits import train_val_test
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


def _card(opts: TrainOptions, table: ImageTable) -> dict[str, Any]:
    return {
        "name": opts.name,
        "version": "1.0",
        "task": "classification",
        "summary": f"{len(table.classes)}-class image classifier ({opts.arch}, "
        f"{opts.size} px, trained from scratch).",
        "architecture": {
            "library": "timm",
            "name": opts.arch,
            "kwargs": {"drop_rate": opts.drop_rate, **dict(opts.arch_kwargs)},
        },
        "classes": list(table.classes),
        "input": {
            "size": opts.size,
            "mean": list(MEAN),
            "std": list(STD),
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
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of a torch network on ``table`` (central crop resized), optionally shifted
    first, logits averaged over the test-time views ``tta``."""
    resize = Resize(size, crop)
    if transform is None:
        tf = resize
    else:

        def tf(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return resize(transform(image))

    ds = ImageDataset(table, tf, MEAN, STD)
    probs, y = predict_dataset(net, ds, batch_size=64, tta=tta)
    return classification_report(y, probs, table.classes, n_boot=n_boot, seed=seed), probs


def headline(
    report: dict[str, Any], classes: Sequence[str], positive: str | None, where: str
) -> str:
    """One-line headline metric: AUC of the positive class for two classes, else acc/F1."""
    if len(classes) == 2:
        pos = positive or classes[0]
        pc = report["per_class"][pos]
        lo, hi = pc["auc_ci"]
        ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None else ""
        return (
            f"ROC-AUC {pc['auc']:.3f}{ci} for {pos}, accuracy {report['accuracy']:.3f} "
            f"on {where} (n={report['n']})"
        )
    return (
        f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}, "
        f"macro ROC-AUC {report['macro_auc']:.3f} on {where} (n={report['n']})"
    )


def _train_one(
    opts: TrainOptions, table: ImageTable, test_fold: int, log: Callable[[str], None] | None
) -> tuple[nn.Module, dict[str, Any]]:
    tr, va, te = train_val_test(table, opts.folds, test_fold, opts.val_fraction, opts.seed)
    aug = Augmenter.with_strength(
        opts.size, colour=opts.colour, scale=tuple(opts.scale), crop=opts.crop, fade=opts.fade
    )
    train_ds = ImageDataset(table.subset(tr), aug, MEAN, STD)
    val_ds = ImageDataset(table.subset(va), Resize(opts.size, opts.crop), MEAN, STD)
    card = _card(opts, table)
    if log:
        log(
            f"split (test fold {test_fold}/{opts.folds}): train {len(tr)}, val {len(va)}, "
            f"test {len(te)} images; groups: train {len(set(table.groups[tr]))}, "
            f"val {len(set(table.groups[va]))}, test {len(set(table.groups[te]))}"
        )
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
    )
    _round_fp16(net)
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
    if len(te):
        test = table.subset(te)
        threads = torch.get_num_threads()
        torch.set_num_threads(opts.threads)
        try:
            report, _ = evaluate_net(
                net,
                test,
                opts.size,
                n_boot=opts.n_boot,
                seed=opts.seed,
                crop=opts.crop,
                tta=opts.tta,
            )
            info["test"] = report
            rob = {}
            for name in opts.shifts:
                r, _ = evaluate_net(
                    net, test, opts.size, get_shift(name), n_boot=0, crop=opts.crop, tta=opts.tta
                )
                rob[name] = {
                    "accuracy": round(r["accuracy"], 4),
                    "macro_f1": round(r["macro_f1"], 4),
                    "macro_auc": None if r["macro_auc"] is None else round(r["macro_auc"], 4),
                }
                if log:
                    log(
                        f"shift {name}: acc {r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f} "
                        f"macro-AUC {r['macro_auc']:.4f}"
                    )
            info["robustness"] = rob
        finally:
            torch.set_num_threads(threads)
    return net, info


def train_model(
    source: str | Path,
    out: str | Path,
    opts: TrainOptions,
    log: Callable[[str], None] | None = None,
) -> ModelCard:
    """Train on ``source`` (class folders or CSV), evaluate on the held-out fold, save to ``out``.

    With ``opts.cv`` every fold is held out once (k models trained) and the mean and standard
    deviation of the test metrics go into the card; the saved model is the one for
    ``opts.test_fold``.

    Returns the saved model's card.
    """
    t0 = time.perf_counter()
    table = load_table(source, opts.classes, opts.group_pattern)
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
    net, info = _train_one(opts, table, opts.test_fold, log)
    metrics: dict[str, Any] = {}
    where = "held-out fold" + (" (unseen groups)" if opts.group_pattern else "")
    if "test" in info:
        metrics["test"] = info["test"]
        metrics["robustness"] = info["robustness"]
        metrics["robustness_method"] = describe(list(opts.shifts), tuple(opts.scale))
        card["headline"] = headline(info["test"], table.classes, opts.positive, where)
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
                "method": "StratifiedGroupKFold, shuffled with the seed",
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
    card["metrics"] = metrics
    card["limits"] = list(opts.limits)
    if opts.shifts and "robustness" in metrics:
        card["limits"].append(
            "Robustness was checked only with synthetic shifts of the held-out images "
            f"({', '.join(opts.shifts)}; see metrics.robustness), not on images from other "
            "sites."
        )
    return save_model(net, card, out)
