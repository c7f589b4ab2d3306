"""``shindan ct``: multiphase renal-mass CT — inspect studies, train, evaluate, predict."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from shindan.errors import InputError

app = typer.Typer(
    help="Multiphase CT of renal masses: studies, lesion inputs, classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PhaseMapOpt = Annotated[
    Path | None,
    typer.Option(
        "--phase-map",
        help="CSV (series,phase) or JSON {series: phase}: series UID or "
        "description → phase, overriding the description keywords.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]
ThreadsOpt = Annotated[int, typer.Option(help="torch threads.")]


@app.callback()
def _group() -> None:
    """Multiphase CT of renal masses: studies, lesion inputs, classifier."""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _phase_map(path: Path | None) -> dict[str, str] | None:
    from shindan.ct.phases import read_phase_map

    return read_phase_map(path) if path is not None else None


def _quiet(quiet: bool) -> None:
    from shindan.util.progress import set_quiet

    set_quiet(quiet)


def _command_line(sub: str) -> str:
    argv = sys.argv
    idx = argv.index(sub) if sub in argv else len(argv)
    return shlex.join(["shindan", "ct", sub, *argv[idx + 1 :]])


@app.command()
def info(
    study: Annotated[Path, typer.Argument(help="Study folder (searched recursively) or file.")],
    phase_map: PhaseMapOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """List a study's image series as JSON: modality, size, spacing, and the phase of each."""
    from shindan.ct.dicom import header_grid, scan_dicom
    from shindan.ct.phases import assign_phases, guess_phase

    _quiet(quiet)
    headers = scan_dicom(study, progress=not quiet)
    pmap = _phase_map(phase_map)
    ct = [h for h in headers if h.modality.upper() == "CT"]
    chosen = {h.uid: ph for ph, h in assign_phases(ct, pmap, required=False).items()}
    out = []
    for h in headers:
        try:
            grid, has_pos = header_grid(h)
            spacing = [round(grid.slice_spacing, 4), *grid.spacing]
        except InputError as exc:
            spacing, has_pos = None, False
            _err(f"warning: {h.label()}: {exc}")
        out.append(
            {
                "uid": h.uid,
                "number": h.number,
                "description": h.description,
                "modality": h.modality,
                "slices": h.n_slices,
                "rows": h.instances[0].rows,
                "cols": h.instances[0].cols,
                "spacing_mm": spacing,
                "has_position": has_pos,
                "guessed_phase": guess_phase(h.description),
                "phase": chosen.get(h.uid),
            }
        )
    typer.echo(json.dumps({"study": str(study), "series": out}, indent=2))


@app.command()
def phantom(
    out: Annotated[Path, typer.Option("--out", help="Folder for the studies and cases.csv.")],
    cases: Annotated[int, typer.Option(help="Number of synthetic studies.")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    noise: Annotated[float, typer.Option(help="Image noise (HU, s.d.).")] = 10.0,
    variation: Annotated[
        float, typer.Option(help="Per-case lesion enhancement variation (HU, s.d.).")
    ] = 15.0,
) -> None:
    """Write a synthetic multiphase CT cohort (DICOM) with cases.csv, to try the pipeline."""
    from shindan.ct.phantom import is_cohort_entry, write_cohort
    from shindan.util.atomic import check_output_folder

    if cases < 1:
        raise InputError(f"--cases must be at least 1, got {cases}")
    check_output_folder(out, is_cohort_entry)
    path = write_cohort(out, cases, seed=seed, noise_hu=noise, variation_hu=variation)
    _err(f"wrote {cases} studies and {path}")


@app.command()
def train(
    cases: Annotated[Path, typer.Argument(help="cases.csv: study, lesion box, label, ...")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    name: Annotated[str, typer.Option(help="Model name (lower-case, digits, '-').")] = (
        "ct-renal-mass"
    ),
    arch: Annotated[str, typer.Option(help="timm architecture, trained from scratch.")] = (
        "resnet10t"
    ),
    size: Annotated[int, typer.Option(help="Input side in pixels.")] = 64,
    phases: Annotated[str, typer.Option(help="Comma-separated phases (channels), in order.")] = (
        "non-contrast,corticomedullary,nephrographic,excretory"
    ),
    window: Annotated[
        str,
        typer.Option(
            help="CT window: preset (kidney, abdomen, soft-tissue, ...) or WIDTH,LEVEL in HU."
        ),
    ] = ("kidney"),
    margin: Annotated[float, typer.Option(help="Context around the lesion box (mm).")] = 10.0,
    slice_mode: Annotated[
        str, typer.Option("--slice", help="center (box centre) or max-area (needs a mask column).")
    ] = "center",
    reference: Annotated[
        str, typer.Option(help="Phase whose planes are sampled (others are resampled onto them).")
    ] = ("nephrographic"),
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing-phases", help="Blank channels for absent phases instead of an error."
        ),
    ] = False,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Lesions per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 1e-4,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 10,
    val_fraction: Annotated[
        float, typer.Option(help="Share of patients for validation (0: none).")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    data_name: Annotated[
        str | None,
        typer.Option("--data-name", help="Description of the training data for the card."),
    ] = None,
    licence: Annotated[str | None, typer.Option(help="Licence of the training data.")] = None,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Mark the model as trained on synthetic data.")
    ] = False,
    phase_map: PhaseMapOpt = None,
    threads: ThreadsOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Train the benign/malignant classifier on multiphase lesion crops and save it.

    CASES.csv columns: study (folder, relative to the CSV), x_min, y_min, z_min, x_max, y_max,
    z_max (lesion box), box_units (mm or voxel), box_phase, label (benign/malignant), age, sex,
    size_mm, group (patient), mask (.npy, for --slice max-area), phase_map.
    """
    from shindan.models.card import MODEL_FILES
    from shindan.util.atomic import check_output_folder

    check_output_folder(out, MODEL_FILES)  # before any work, not after the training
    import timm

    from shindan.ct.train import TrainOptions, train_ct

    _quiet(quiet)
    if arch not in timm.list_models():
        raise InputError(f"unknown timm architecture {arch!r}")
    if epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {epochs}")
    opts = TrainOptions(
        name=name,
        arch=arch,
        size=size,
        phases=[p.strip() for p in phases.split(",") if p.strip()],
        window=window,
        margin_mm=margin,
        slice_mode=slice_mode,
        reference=reference,
        missing="blank" if allow_missing else "error",
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        val_fraction=val_fraction,
        seed=seed,
        threads=threads,
        data=data_name or "",
        command=_command_line("train"),
        synthetic=synthetic,
        progress=not quiet,
    )
    if licence:
        opts.licence = licence
    card = train_ct(cases, out, opts, phase_map=_phase_map(phase_map), log=None if quiet else _err)
    _err(f"wrote {card.directory}: {card.headline or 'no validation split'}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="Model folder (or shipped CT model name).")],
    cases: Annotated[Path, typer.Argument(help="cases.csv with labels.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for evaluation.json and predictions.csv.")
    ],
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC CI.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    split: Annotated[
        str,
        typer.Option(
            help="held-out: leave out the cases the model was trained on (its card records "
            "them); all: every case (a warning names the training cases)."
        ),
    ] = "held-out",
    phase_map: PhaseMapOpt = None,
    threads: ThreadsOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """AUC (95% CI), accuracy at the Youden cut-off, and a logistic model of the CNN score with
    age, sex and size (odds ratios, 95% CIs), as JSON."""
    from shindan.ct.outputs import EVALUATION_FILES
    from shindan.util.atomic import check_output_folder

    check_output_folder(out, EVALUATION_FILES)  # before any work, before importing torch
    from shindan.ct.train import evaluate_ct

    _quiet(quiet)
    if n_boot < 0:
        raise InputError(f"--n-boot must be >= 0, got {n_boot}")
    res = evaluate_ct(
        model,
        cases,
        out,
        phase_map=_phase_map(phase_map),
        n_boot=n_boot,
        seed=seed,
        progress=not quiet,
        threads=threads,
        split=split,
        log=_err,
    )
    m = res["metrics"]
    auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
    acc = m["youden"].get("accuracy")
    _err(
        f"wrote {Path(out) / 'evaluation.json'}: AUC {auc}, accuracy at Youden cut-off "
        f"{'n/a' if acc is None else f'{acc:.3f}'} (n={m['n']})"
    )


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Model folder (or shipped CT model name).")],
    cases: Annotated[Path, typer.Argument(help="cases.csv (labels optional).")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write.")],
    phase_map: PhaseMapOpt = None,
    threads: ThreadsOpt = 1,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even if shindan did not write it.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """P(benign) and P(malignant) per lesion, as CSV."""
    from shindan.ct.outputs import PREDICTION_COLUMNS
    from shindan.util.atomic import atomic_path, check_output_file

    check_output_file(out, PREDICTION_COLUMNS, force=force)  # before any work, before torch
    from shindan.ct.train import predict_ct

    _quiet(quiet)
    df = predict_ct(
        model, cases, phase_map=_phase_map(phase_map), progress=not quiet, threads=threads
    )
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    _err(f"wrote {out} ({len(df)} cases)")
