"""``shindan classify``: train, evaluate and predict image classifiers (thin typer wiring)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from shindan.errors import InputError

app = typer.Typer(help="Train, evaluate and run image classifiers.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Train, evaluate and run image classifiers."""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _command_line(sub: str) -> str:
    """The ``shindan classify <sub> ...`` command as typed (for the model card)."""
    argv = sys.argv
    idx = argv.index(sub) if sub in argv else len(argv)
    return shlex.join(["shindan", "classify", sub, *argv[idx + 1:]])


def _split_classes(classes: str | None) -> list[str] | None:
    if classes is None:
        return None
    names = [c.strip() for c in classes.split(",") if c.strip()]
    if len(names) < 2:
        raise InputError("--classes needs at least two comma-separated names")
    return names


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or CSV image,label[,group].")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (card.json, weights).")],
    name: Annotated[str, typer.Option(help="Model name (lower-case, digits, '-').")] = "classifier",
    arch: Annotated[str, typer.Option(help="timm architecture, trained from scratch.")] = (
        "mobilenetv3_small_100"),
    size: Annotated[int, typer.Option(help="Input side in pixels (whole image resized).")] = 128,
    classes: Annotated[str | None, typer.Option(
        help="Comma-separated class folders/labels to use, in this order.")] = None,
    group_pattern: Annotated[str | None, typer.Option(
        help="Regex whose first match in the file stem is the group (patient/slide), "
             "e.g. '^[^-]+'. A CSV 'group' column takes precedence.")] = None,
    folds: Annotated[int, typer.Option(help="k of the stratified grouped k-fold (0: no test).")] = 5,
    test_fold: Annotated[int, typer.Option(help="Which fold is held out for testing.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of the rest for early stopping.")] = 0.15,
    cv: Annotated[bool, typer.Option("--cv", help="Cross-validate: hold out every fold once.")] = False,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed (splits, weights, augmentation).")] = 0,
    colour: Annotated[float, typer.Option(help="Stain/colour augmentation strength (0 = off).")] = 1.0,
    scale_min: Annotated[float, typer.Option(help="Smallest zoom of the scale jitter.")] = 0.8,
    scale_max: Annotated[float, typer.Option(help="Largest zoom of the scale jitter.")] = 1.25,
    positive: Annotated[str | None, typer.Option(
        help="Positive class for the two-class headline AUC (default: the first).")] = None,
    data_name: Annotated[str | None, typer.Option(
        "--data-name", help="Description of the training data for the card.")] = None,
    licence: Annotated[str, typer.Option(help="Licence of the training data.")] = "unknown",
    limit: Annotated[list[str] | None, typer.Option(
        "--limit", help="A known limit for the card (repeatable).")] = None,
    threads: Annotated[int, typer.Option(help="torch threads while training.")] = 1,
    workers: Annotated[int, typer.Option(help="Data-loading processes.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a classifier, evaluate it on a held-out fold (and under domain shifts), save it."""
    from shindan.classify.train import TrainOptions, train_model

    if size < 32:
        raise InputError(f"--size must be at least 32, got {size}")
    if not 0 < scale_min <= scale_max:
        raise InputError("--scale-min must be > 0 and <= --scale-max")
    opts = TrainOptions(
        name=name, arch=arch, size=size, classes=_split_classes(classes),
        group_pattern=group_pattern, folds=folds, test_fold=test_fold, val_fraction=val_fraction,
        cv=cv, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        patience=patience, seed=seed, colour=colour, scale=(scale_min, scale_max),
        positive=positive, data=data_name or str(data), licence=licence,
        command=_command_line("train"), limits=list(limit or []), threads=threads,
        workers=workers, progress=not quiet,
    )
    _check_arch(arch)
    card = train_model(data, out, opts, log=_err)
    _err(f"wrote {card.directory}: {card.headline or 'no test fold'}")


def _check_arch(arch: str) -> None:
    import timm

    if arch not in timm.list_models():
        raise InputError(f"unknown timm architecture {arch!r}")
