"""``shindan kidney train``: train or fine-tune the compartment model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from shindan.errors import InputError
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


def _parse_classes(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, code = item.rpartition("=")
        if not sep or not code.strip().isdigit() or int(code) > 4:
            raise InputError(f"--classes: expected NAME=CODE with CODE 0-4, got {item!r}")
        out[name.strip()] = int(code)
    return out


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the ``shindan kidney`` app."""

    @app.command()
    def train(
        inputs: Annotated[
            list[Path] | None,
            typer.Argument(
                help="Slides or images (or folders) to train on, each with an annotation file of "
                "the same name stem."
            ),
        ] = None,
        out: Annotated[Path, typer.Option("--out", help="Model folder to write.")] = Path(
            "kidney-compartments-model"
        ),
        annotations: Annotated[
            list[Path] | None,
            typer.Option(
                "--annotations",
                "-a",
                help="Annotation files or folders: QuPath GeoJSON, ImageScope XML, labelme JSON, "
                "or label-mask PNGs (0 non-tissue, 1 interstitium, 2 glomerulus, 3 tubule, "
                "4 vessel, 255 unknown). Unannotated pixels: see --unannotated.",
            ),
        ] = None,
        unannotated: Annotated[
            str,
            typer.Option(
                help="What unannotated pixels of an annotated image (or region) are: 'ignore' "
                "(not trained on) or 'other' (none of the classes annotated in that image, "
                "e.g. 'not glomerulus' where every glomerulus, and nothing else, was outlined).",
            ),
        ] = "ignore",
        domain_stain: DomainStainOpt = None,
        tissue: TissueOpt = "",
        model_version: ModelVersionOpt = None,
        builtin: Annotated[
            Path | None,
            typer.Option(
                help="Run the built-in real-data recipe on this data folder (…/shared/data/kidney) "
                "instead of INPUTS."
            ),
        ] = None,
        phantoms: Annotated[
            int,
            typer.Option(
                help="With --builtin: add this many synthetic phantom biopsies to training."
            ),
        ] = 0,
        mpp: Annotated[
            float | None, typer.Option(help="µm/px of the inputs when the files have none.")
        ] = None,
        target_mpp: Annotated[float, typer.Option(help="µm/px the model works at.")] = 1.0,
        classes: Annotated[
            str,
            typer.Option(
                help="Extra class-name mapping, e.g. 'Glom=2,Tub=3' (names are case-insensitive; "
                "common names such as glomerulus, tubule, artery are known)."
            ),
        ] = "",
        init: Annotated[
            str | None,
            typer.Option(
                help="Fine-tune from this model (e.g. kidney-compartments) instead of training "
                "from scratch."
            ),
        ] = None,
        encoder: EncoderOpt = DEFAULT_ENCODER,
        decoder_channels: DecoderOpt = DEFAULT_DECODER_TEXT,
        pretrained: PretrainedOpt = None,
        steps: StepsOpt = 3000,
        batch_size: BatchSizeOpt = 8,
        tile: TileOpt = 256,
        lr: LrOpt = 2e-3,
        eval_every: EvalEveryOpt = 200,
        patience: PatienceOpt = 6,
        minutes: MinutesOpt = None,
        seed: SeedOpt = 0,
        precision: PrecisionOpt = "auto",
        test_tile: Annotated[
            str,
            typer.Option(
                help="With --builtin: the AAPI tile held out for the final H&E test "
                "(HE_001 or 13600_18000_0)."
            ),
        ] = "HE_001",
        exclude_cutouts: Annotated[
            str,
            typer.Option(
                help="With --builtin: leave out cut-outs whose name contains any of these "
                "comma-separated strings (e.g. 'HE_00')."
            ),
        ] = "",
        glomerulus_focus: Annotated[
            float,
            typer.Option(
                help="Chance (0-1) that a training crop of a labelled image is placed on a "
                "glomerulus (they cover a few % of cortex, so random crops rarely show them)."
            ),
        ] = 0.0,
        aidpath_train_labs: Annotated[
            str,
            typer.Option(
                help="With --builtin: also train on the AIDPATH PAS glomerulus crops of these "
                "comma-separated labs (SAS, SESCAM, VUHSK; non-commercial licence); the other "
                "labs' crops become the unseen-lab test."
            ),
        ] = "",
        aidpath_share: Annotated[
            float,
            typer.Option(help="Share (0-1) of the PAS training tiles drawn from those crops."),
        ] = 0.5,
        crops_keep_stain: Annotated[
            bool,
            typer.Option(
                "--crops-keep-stain",
                help="Stain transfer re-colours those crops only to PAS, never to H&E.",
            ),
        ] = False,
        select_by_source: Annotated[
            bool,
            typer.Option(
                "--select-by-source",
                help="Built-in data: choose the checkpoint on the mean of each validation "
                "source's Dice (H&E, HuBMAP, AIDPATH) instead of their pooled pixels.",
            ),
        ] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        """Train or fine-tune the compartment model on your annotations or the built-in data."""
        from shindan.kidney.training.run import train_compartments
        from shindan.models.card import MODEL_FILES
        from shindan.util.atomic import atomic_path, check_replaceable

        if builtin is None and not inputs:
            raise InputError("give INPUTS with --annotations, or --builtin DATA_FOLDER")
        if builtin is not None and not (builtin / "tiles-aapi-he").is_dir():
            raise InputError(f"{builtin}: not the kidney data folder (no tiles-aapi-he/)")
        if builtin is not None and test_tile not in ("HE_001", "13600_18000_0"):
            raise InputError(
                f"--test-tile: test tile must be HE_001 or 13600_18000_0, got {test_tile!r}"
            )
        if not 0.0 <= glomerulus_focus <= 1.0:
            raise InputError(f"--glomerulus-focus must be between 0 and 1, got {glomerulus_focus}")
        if aidpath_train_labs and builtin is None:
            raise InputError("--aidpath-train-labs needs --builtin")
        if not 0.0 <= aidpath_share <= 1.0:
            raise InputError(f"--aidpath-share must be between 0 and 1, got {aidpath_share}")
        if crops_keep_stain and not aidpath_train_labs:
            raise InputError("--crops-keep-stain needs --aidpath-train-labs (the crops)")
        if select_by_source and builtin is None:
            raise InputError("--select-by-source needs --builtin (its validation sources)")
        if inputs and not annotations:
            raise InputError("--annotations is required with INPUTS")
        if unannotated != "ignore" and builtin is not None:
            raise InputError("--unannotated is for INPUTS with --annotations, not --builtin")
        if mpp is not None and mpp <= 0:
            raise InputError(f"--mpp must be positive, got {mpp}")
        if pretrained and init:
            raise InputError("--pretrained starts a new model; it cannot be combined with --init")
        check_model_version(model_version)
        check_replaceable(out, MODEL_FILES)  # before hours of training, not after
        cls = _parse_classes(classes)
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
        )
        q = shlex.quote
        parts = [
            "shindan kidney train",
            *[q(str(p)) for p in inputs or []],
            *[f"-a {q(str(a))}" for a in annotations or []],
            *([f"--unannotated {unannotated}"] if unannotated != "ignore" else []),
            *[f"--domain-stain {q(s)}" for s in domain_stain or []],
            *([f"--tissue {q(tissue)}"] if tissue else []),
            *([f"--model-version {model_version}"] if model_version else []),
            *([f"--builtin {q(str(builtin))}"] if builtin else []),
            *([f"--phantoms {phantoms}"] if phantoms else []),
            f"--out {q(str(out))}",
            *([f"--mpp {mpp}"] if mpp else []),
            *([] if init else [f"--target-mpp {target_mpp}"]),  # --init fixes the scale
            *([f"--classes {q(classes)}"] if classes else []),
            *([f"--init {q(init)}"] if init else []),
            *arch_words,
            *loop_words,
            *([f"--test-tile {test_tile}"] if builtin and test_tile != "HE_001" else []),
            *([f"--exclude-cutouts {q(exclude_cutouts)}"] if exclude_cutouts else []),
            *([f"--glomerulus-focus {glomerulus_focus}"] if glomerulus_focus else []),
            *([f"--aidpath-train-labs {q(aidpath_train_labs)}"] if aidpath_train_labs else []),
            *([f"--aidpath-share {aidpath_share}"] if aidpath_train_labs else []),
            *(["--crops-keep-stain"] if crops_keep_stain else []),
            *(["--select-by-source"] if select_by_source else []),
        ]
        res = train_compartments(
            out,
            builtin=builtin,
            phantoms=phantoms,
            inputs=inputs or [],
            annotations=annotations or [],
            mpp=mpp,
            target_mpp=target_mpp,
            classes=cls,
            init=init,
            unannotated=unannotated,
            stains=list(domain_stain or []),
            tissue=tissue,
            version=model_version,
            encoder=encoder,
            decoder_channels=widths,
            pretrained=pretrained,
            config=cfg,
            tile=tile,
            test_tile=test_tile,
            exclude_cutouts=[e.strip() for e in exclude_cutouts.split(",") if e.strip()],
            glomerulus_focus=glomerulus_focus,
            aidpath_train_labs=[e.strip() for e in aidpath_train_labs.split(",") if e.strip()],
            aidpath_share=aidpath_share,
            crops_keep_stain=crops_keep_stain,
            select_by_source=select_by_source,
            command=" ".join(parts),
            progress=not quiet,
        )
        with atomic_path(out / "training_log.json") as tmp:
            tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
        typer.echo(f"wrote {out}", err=True)
