"""``shindan nuclei segment`` and ``shindan nuclei train``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from shindan.errors import InputError
from shindan.io.inputs import SLIDE_SUFFIXES, expand_inputs, unique_names
from shindan.models.card import DEFAULT_ENCODER
from shindan.util.card_options import (
    DomainStainOpt,
    ModelVersionOpt,
    TissueOpt,
    check_model_version,
)
from shindan.util.segmenter_options import (
    DEFAULT_DECODER_TEXT,
    BatchSizeOpt,
    DecoderOpt,
    EncoderOpt,
    EvalEveryOpt,
    LrOpt,
    MinutesOpt,
    PatienceOpt,
    PrecisionOpt,
    PretrainedOpt,
    SeedOpt,
    StepsOpt,
    TileOpt,
    loop_config,
    parse_architecture,
)

app = typer.Typer(help="Nucleus instance segmentation.", no_args_is_help=True)

# Inputs bigger than this (level-0 pixels) are refused: the label map is held in memory
# (4 bytes per pixel) and written in one piece.
MAX_PIXELS = 400_000_000


def _write_tif(labels, path: Path) -> None:
    import tifffile

    from shindan.util.atomic import atomic_path

    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            labels,
            compression="zlib",
            photometric="minisblack",
            tile=(512, 512) if min(labels.shape) >= 512 else None,
        )


@app.command()
def segment(
    inputs: Annotated[list[Path], typer.Argument(help="Images, slides or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    mpp: Annotated[float | None, typer.Option(help="µm/px when the file has none.")] = None,
    model: Annotated[str, typer.Option(help="Shipped model name or model folder.")] = "nuclei",
    backend: Annotated[str, typer.Option(help="auto, onnx, torch or torch-bf16.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Nucleus instances: DIR/<stem>_nuclei.tif (0 background, 1..N) and <stem>_nuclei.geojson."""
    from shindan.engine import load_predictor
    from shindan.io import open_slide
    from shindan.io.annotations import instances_to_polygons, write_geojson
    from shindan.nuclei.segment import segment_nuclei_slide
    from shindan.tiling import require_colour
    from shindan.util.atomic import check_can_be_folder, staged_files
    from shindan.util.progress import set_quiet

    files = expand_inputs(inputs, SLIDE_SUFFIXES)
    check_can_be_folder(out)
    predictor = load_predictor(model, backend)
    # check every input before writing anything, so a bad file leaves no partial output
    for f in files:
        with open_slide(f, mpp=mpp) as s:
            if s.mpp is None:
                raise InputError(f"{f}: no µm/px in the file; give --mpp")
            require_colour(s)
            w, h = s.dimensions
            if w * h > MAX_PIXELS:
                raise InputError(
                    f"{f}: {w}x{h} is too large for one label map (limit {MAX_PIXELS:,} pixels)"
                )
            if w * h * (s.mpp / predictor.card.mpp) ** 2 > MAX_PIXELS:  # resampled for the model
                raise InputError(
                    f"{f}: at {s.mpp:g} µm/px it would be resampled to over {MAX_PIXELS:,} pixels "
                    f"at the model's {predictor.card.mpp:g} µm/px; check --mpp"
                )
    set_quiet(quiet)
    # every input's files appear in out together at the end: a failure leaves none of them
    with staged_files(out) as tmp:
        # same-named inputs (a/img.png, b/img.png) must not overwrite each other's outputs
        for f, stem in zip(files, unique_names([f.stem for f in files]), strict=True):
            with open_slide(f, mpp=mpp) as s:
                labels = segment_nuclei_slide(s, predictor=predictor, progress=not quiet)
            _write_tif(labels, tmp / f"{stem}_nuclei.tif")
            write_geojson(instances_to_polygons(labels), tmp / f"{stem}_nuclei.geojson")
            if not quiet:
                typer.echo(f"{f.name}: {int(labels.max())} nuclei", err=True)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    images: Annotated[
        Path | None,
        typer.Argument(
            help="Image file or folder of images (searched recursively), at --mpp; optional "
            "with --source."
        ),
    ] = None,
    annotations: Annotated[
        list[Path] | None,
        typer.Option(
            "--annotations",
            "-a",
            help="Folder(s) or file(s) with nucleus polygons (QuPath GeoJSON, ImageScope XML, "
            "labelme JSON), instance maps (PNG/TIFF, 0 background, 1..N one value per nucleus, "
            "e.g. uint16) or binary masks (PNG, two values), matched to images by file stem, "
            "optionally + _mask, _labels or _annotations. Repeatable; polygons win over masks "
            "of the same stem. Polygons of class Region* (region, ROI, tissue) outline the "
            "annotated area; without any, it is the nuclei's bounding box plus 50 µm.",
        ),
    ] = None,
    mpp: Annotated[float | None, typer.Option(help="µm/px of IMAGES.")] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="More training data at its own scale: [NAME=]IMAGES:ANNOTATIONS:MPP (IMAGES a "
            "file, folder or quoted glob pattern; ANNOTATIONS comma-separated files or folders "
            "as for -a; MPP its µm/px). Repeatable. NAME (default: the images' folder, or its "
            "parent when it is called images) groups sources: with several names, validation "
            "scores (checkpoint, watershed) are means over the sources and held-out scores are "
            "given per source. Image stems must be unique over all sources.",
        ),
    ] = None,
    target_mpp: Annotated[
        float, typer.Option(help="µm/px the model works at (with --init: the starting model's).")
    ] = 0.4,
    holdout: Annotated[
        str,
        typer.Option(
            help="Comma-separated image stems kept out of training and of every choice, "
            "scored at the end only."
        ),
    ] = "",
    val: Annotated[
        str,
        typer.Option(
            help="Comma-separated image stems kept out of training to choose the checkpoint and "
            "tune the watershed."
        ),
    ] = "",
    init: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune from this model (name or folder) instead of training from scratch."
        ),
    ] = None,
    encoder: EncoderOpt = DEFAULT_ENCODER,
    decoder_channels: DecoderOpt = DEFAULT_DECODER_TEXT,
    pretrained: PretrainedOpt = None,
    steps: StepsOpt = 3000,
    batch_size: BatchSizeOpt = 8,
    tile: TileOpt = 256,
    lr: LrOpt = 2e-3,
    stain: Annotated[
        float, typer.Option(help="Stain/colour augmentation strength (0 = none, 1 = strong).")
    ] = 1.0,
    density: Annotated[
        str,
        typer.Option(
            help="Range LOW,HIGH of a global stain-intensity factor drawn per tile (1,1 = off): "
            "below 1 lightens the stain, which teaches pale (vesicular) nuclei."
        ),
    ] = "1,1",
    boundary_px: Annotated[
        int, typer.Option(help="Width of the nucleus-boundary class (pixels at --target-mpp).")
    ] = 1,
    core: Annotated[
        float,
        typer.Option(
            help="Add a nucleus-core class: the pixels at least this fraction of the way from "
            "a nucleus's edge to its centre (0 = no core class). Its confident pixels seed the "
            "watershed: one compact seed per nucleus, even where neighbours' interiors touch."
        ),
    ] = 0.0,
    boundary_weight: Annotated[
        float,
        typer.Option(
            help="Cross-entropy weight of the boundary class (background and interior: 1)."
        ),
    ] = 1.0,
    tta: Annotated[
        str,
        typer.Option(
            help="Comma-separated test-time views written to the card (hflip, vflip, rot180, "
            "transpose): predictions average over them; the watershed is tuned with them."
        ),
    ] = "",
    eval_every: EvalEveryOpt = 200,
    patience: PatienceOpt = 6,
    minutes: MinutesOpt = None,
    seed: SeedOpt = 0,
    precision: PrecisionOpt = "auto",
    data_note: Annotated[str, typer.Option(help="Training-data description for the card.")] = "",
    licence: Annotated[str, typer.Option(help="Licence note for the card.")] = "",
    domain_stain: DomainStainOpt = None,
    tissue: TissueOpt = "",
    model_version: ModelVersionOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train or fine-tune a nucleus model on images with masks and/or instance polygons."""
    import json

    from shindan.models.card import MODEL_FILES
    from shindan.nuclei.train import parse_source, train_nuclei
    from shindan.util.atomic import atomic_path, check_replaceable

    annotations = annotations or []
    sources = [parse_source(s) for s in source or []]
    if images is None and not sources:
        raise InputError("give IMAGES with --annotations and --mpp, or --source")
    if images is not None and (not annotations or mpp is None):
        raise InputError(f"{images}: give its --annotations and --mpp")
    if images is None and (annotations or mpp is not None):
        raise InputError("--annotations and --mpp belong to IMAGES; with --source only, drop them")
    if images is not None and not images.exists():
        raise InputError(f"{images}: no such file or folder")
    if mpp is not None and not 0.01 <= mpp <= 100:
        raise InputError(f"--mpp must be in [0.01, 100] µm/px, got {mpp}")
    for a in annotations:
        if not a.exists():
            raise InputError(f"{a}: no such file or folder")
    check_model_version(model_version)
    if boundary_px < 1 or boundary_weight <= 0:
        raise InputError("--boundary-px must be >= 1 and --boundary-weight > 0")
    if not 0 <= core < 1:
        raise InputError(f"--core must be in [0, 1), got {core}")
    try:
        low, high = (float(v) for v in density.split(","))
    except ValueError:
        raise InputError(f"--density must be LOW,HIGH (two numbers), got {density!r}") from None
    if not 0 < low <= high:
        raise InputError(f"--density needs 0 < LOW <= HIGH, got {density!r}")
    check_replaceable(out, MODEL_FILES)  # before the training, not after
    if pretrained and init:
        raise InputError("--pretrained starts a new model; it cannot be combined with --init")
    encoder, widths, arch_words = parse_architecture(encoder, decoder_channels, pretrained)
    cfg, loop_words = loop_config(
        steps,
        batch_size=batch_size,
        tile=tile,
        lr=lr,
        eval_every=eval_every,
        patience=patience,
        minutes=minutes,
        seed=seed,
        precision=precision,
        dice_classes=[1, 2, 3] if core else [1, 2],
        class_weights=None
        if boundary_weight == 1
        else [1.0, 1.0, boundary_weight, *([1.0] if core else [])],
    )
    q = shlex.quote
    parts = [
        "shindan nuclei train",
        *([q(str(images))] if images is not None else []),
        *[f"-a {q(str(a))}" for a in annotations],
        *[f"--source {q(s)}" for s in source or []],
        f"--out {q(str(out))}",
        *([f"--mpp {mpp}"] if mpp is not None else []),
        *([] if init else [f"--target-mpp {target_mpp}"]),  # --init fixes the scale
        *([f"--holdout {holdout}"] if holdout else []),
        *([f"--val {val}"] if val else []),
        *([f"--init {init}"] if init else []),
        *arch_words,
        *loop_words,
        f"--stain {stain}",
        *([f"--density {low},{high}"] if (low, high) != (1.0, 1.0) else []),
        f"--boundary-px {boundary_px}",
        f"--boundary-weight {boundary_weight}",
        *([f"--core {core}"] if core else []),
        *([f"--tta {tta}"] if tta else []),
        *([f"--data-note {q(data_note)}"] if data_note else []),
        *([f"--licence {q(licence)}"] if licence else []),
        *[f"--domain-stain {q(s)}" for s in domain_stain or []],
        *([f"--tissue {q(tissue)}"] if tissue else []),
        *([f"--model-version {model_version}"] if model_version else []),
    ]
    command = " ".join(parts)
    held = [s for s in holdout.split(",") if s]
    val_stems = [s for s in val.split(",") if s]
    res = train_nuclei(
        images,
        annotations,
        out,
        mpp=mpp,
        sources=sources,
        pretrained=pretrained,
        target_mpp=target_mpp,
        holdout=held,
        val=val_stems,
        config=cfg,
        tile=tile,
        stain=stain,
        density=(low, high),
        boundary_px=boundary_px,
        core=core,
        tta=[v for v in tta.split(",") if v],
        init=init,
        encoder=encoder,
        decoder_channels=widths,
        command=command,
        data_note=data_note,
        licence=licence,
        stains=list(domain_stain or []),
        tissue=tissue,
        version=model_version,
        progress=not quiet,
    )
    with atomic_path(out / "training_log.json") as tmp:
        tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    typer.echo(f"wrote {out}", err=True)
