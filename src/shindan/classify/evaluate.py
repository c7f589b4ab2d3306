"""Evaluate a model on labelled images: metrics JSON, predictions CSV and an HTML report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shindan.classify.data import ImageTable, load_table
from shindan.classify.predict import predict_paths, write_predictions
from shindan.classify.shifts import get_shift
from shindan.classify.splits import train_val_test
from shindan.engine import load_predictor
from shindan.errors import InputError
from shindan.models import ModelCard
from shindan.stats import classification_report
from shindan.util.atomic import atomic_dir, check_output_folder

SPLITS = ("auto", "all", "test")
# What ``out/`` holds: a rerun replaces these, and refuses a folder that holds anything else.
EVALUATION_FILES = ("metrics.json", "predictions.csv", "report.html")


def labelled_table(
    data: str | Path, card: ModelCard, group_pattern: str | None = None
) -> ImageTable:
    """Load ``data`` with labels mapped onto the card's classes (a subset of them may appear).

    For a folder tree, only sub-folders named like the card's classes are read.
    """
    p = Path(data)
    if p.is_dir():
        present = [c for c in card.classes if (p / c).is_dir()]
        if not present:
            raise InputError(
                f"{p}: no sub-folder named like a class of {card.name} ({', '.join(card.classes)})"
            )
        # Scan with the card's order so label indices are the card's indices.
        table = (
            load_table(p, None if len(present) < 2 else present, group_pattern)
            if len(present) >= 2
            else _single_class(p, present[0], group_pattern)
        )
    else:
        table = load_table(p, None, group_pattern)
    unknown = [c for c in table.classes if c not in card.classes]
    if unknown:
        raise InputError(
            f"{p}: labels {unknown} are not classes of {card.name} ({', '.join(card.classes)})"
        )
    remap = np.asarray([card.classes.index(c) for c in table.classes], np.int64)
    return ImageTable(
        table.paths, remap[table.labels], table.groups, tuple(card.classes), table.root
    )


def _single_class(root: Path, name: str, group_pattern: str | None) -> ImageTable:
    from shindan.classify.data import _groups_from_pattern, is_image

    files = sorted(f for f in (root / name).rglob("*") if f.is_file() and is_image(f))
    if not files:
        raise InputError(f"{root / name}: class folder holds no images")
    return ImageTable(
        tuple(files),
        np.zeros(len(files), np.int64),
        _groups_from_pattern(files, group_pattern),
        (name,),
        root,
    )


def held_out(table: ImageTable, card: ModelCard) -> ImageTable:
    """The test fold recorded in the card's ``training.split`` (same data, same seed)."""
    split = card.data.get("training", {}).get("split")
    if not split or not split.get("folds"):
        raise InputError(f"{card.name}: its card records no held-out split")
    _, _, test = train_val_test(
        table,
        split["folds"],
        split["test_fold"],
        split["val_fraction"],
        card.data["training"].get("seed", 0),
    )
    return table.subset(test)


def is_training_data(table: ImageTable, card: ModelCard) -> bool:
    """Whether ``table`` holds the images ``card``'s model was trained on, as far as the card
    tells: as many images of each class as its training data (or as one of its sites) had.

    Examples
    --------
    >>> from shindan.models import load_card
    >>> card = load_card("wbc")
    >>> t = ImageTable((Path("a.jpg"),), np.zeros(1, np.int64), np.zeros(1), card.classes)
    >>> is_training_data(t, card)
    False
    """
    training = card.data.get("training", {})
    recorded = [training.get("counts")] + [s.get("counts") for s in training.get("sites") or []]
    mine = {c: n for c, n in table.counts().items() if n}
    return any(mine == {c: n for c, n in r.items() if n} for r in recorded if r)


def evaluate(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    split: str = "auto",
    shift: str | None = None,
    backend: str = "auto",
    batch_size: int = 64,
    n_boot: int = 1000,
    positive: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on labelled images and write ``out/`` atomically.

    Parameters
    ----------
    model : str or Path
        Shipped model name or model folder.
    data : path
        Folder of class folders, or CSV ``image,label[,group]``.
    out : path
        Folder to write: ``metrics.json``, ``predictions.csv`` (with a ``true`` column),
        ``report.html``.
    split : {"auto", "all", "test"}
        ``test`` re-creates the held-out fold the card records (only meaningful on the
        training data); ``all`` uses every image (with a warning when they are the model's
        training data: its own training images score optimistically); ``auto`` is ``test``
        on the model's training data (see :func:`is_training_data`), else ``all``.
    shift : str, optional
        A domain shift from :data:`shindan.classify.shifts.SHIFTS` applied before inference.
    n_boot : int
        Bootstrap resamples for the AUC confidence intervals.
    positive : str, optional
        For two classes: the class whose ROC curve the report shows first.
    log : callable, optional
        Where notes and warnings go (default: stderr).

    Returns
    -------
    dict
        The metrics (as in ``metrics.json``).
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    check_output_folder(out, EVALUATION_FILES)  # before any work
    transform = get_shift(shift) if shift else None
    predictor = load_predictor(str(model), backend=backend)
    card = predictor.card
    group_pattern = (card.data.get("training", {}).get("split") or {}).get("group_pattern")
    table = labelled_table(data, card, group_pattern)
    seen = is_training_data(table, card)
    has_split = bool((card.data.get("training", {}).get("split") or {}).get("folds"))
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if split == "auto":
        split = "test" if seen and has_split else "all"
    if split == "test":
        n_all = len(table)
        table = held_out(table, card)
        if seen:
            say(
                f"note: {data} matches {card.name}'s training data (images per class); scoring "
                "its held-out fold "
                f"({len(table)} of {n_all} images; --split all: every image)"
            )
    elif seen:
        say(
            f"warning: {data} matches the data {card.name} was trained on (images per class): "
            "its training images score optimistically"
            + ("; --split test scores only the held-out fold" if has_split else "")
        )
    if positive is not None and positive not in card.classes:
        raise InputError(f"--positive {positive!r} is not a class of {card.name}")
    probs = predict_paths(predictor, table.paths, batch_size, transform, progress)
    predicted = predictor.labels(probs)
    report = classification_report(
        table.labels, probs, card.classes, n_boot=n_boot, predicted=predicted
    )
    if card.data.get("decision"):
        from shindan.classify.calibrate import decision_metrics

        report["decision"] = decision_metrics(
            table.labels, probs, card.data["decision"], card.classes
        )
    report.update(
        model=card.name,
        model_version=card.version,
        data=str(data),
        split=split,
        training_data=seen,
        shift=shift,
        backend=predictor.backend,
    )
    from shindan.classify.report import render_report

    out = Path(out)
    with atomic_dir(out, owned=EVALUATION_FILES) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        names = [table.relative(p) for p in table.paths]
        write_predictions(tmp / "predictions.csv", names, card.classes, probs, predicted)
        _add_truth(tmp / "predictions.csv", [card.classes[i] for i in table.labels])
        render_report(tmp / "report.html", report, table.labels, probs, positive=positive)
    return report


def _add_truth(path: Path, truth: list[str]) -> None:
    """Append a ``true`` column to the predictions CSV (evaluation output only)."""
    lines = path.read_text().splitlines()
    rows = [lines[0] + ",true"] + [f"{ln},{t}" for ln, t in zip(lines[1:], truth, strict=True)]
    path.write_text("\n".join(rows) + "\n")
