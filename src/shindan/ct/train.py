"""Train and evaluate the renal-mass classifier on multiphase CT lesion inputs.

The network, training loop and saved format are the same as for the image classifiers
(:func:`shindan.engine.train_classifier.fit`, :func:`shindan.models.save_model`); only the
input differs: one channel per contrast phase (:mod:`shindan.ct.lesion`). Evaluation adds a
multivariable logistic model of the CNN score with age, sex and lesion size
(:func:`shindan.stats.logistic.fit_logistic`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from shindan.ct.dataset import CLASSES, LesionDataset, input_spec, read_cases
from shindan.ct.outputs import EVALUATION_FILES, PREDICTION_COLUMNS
from shindan.ct.phases import PHASES
from shindan.errors import InputError, ModelError
from shindan.util.atomic import atomic_dir, check_output_folder

__all__ = ["TrainOptions", "evaluate_ct", "predict_ct", "train_ct"]

# ``ct evaluate --split``: the cases the model did not train on, or every case.
SPLITS = ("held-out", "all")

# Odds ratios are reported per these steps: per 0.1 of CNN score, per decade, per centimetre.
OR_UNITS = {"cnn_score": 0.1, "age": 10.0, "size_mm": 10.0}


@dataclass
class TrainOptions:
    """Options of :func:`train_ct` (the CLI's flags)."""

    arch: str = "resnet10t"
    size: int = 64
    phases: Sequence[str] = PHASES
    window: str = "kidney"
    margin_mm: float = 10.0
    slice_mode: str = "center"
    reference: str | None = "nephrographic"
    missing: str = "error"
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    val_fraction: float = 0.2
    seed: int = 0
    threads: int = 1
    name: str = "ct-renal-mass"
    data: str = ""
    licence: str = "the user's data; check its terms before sharing the model"
    command: str = ""
    synthetic: bool = False
    progress: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)


def _split(ds: LesionDataset, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices, stratified by label and grouped by patient."""
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(ds)
    if val_fraction == 0:
        return np.arange(n), np.zeros(0, np.int64)
    if not 0 < val_fraction < 0.5:
        raise InputError(f"--val-fraction must be 0 or in (0, 0.5), got {val_fraction}")
    groups = np.unique([c.group for c in ds.cases], return_inverse=True)[1]
    k = max(2, round(1 / val_fraction))
    if len(np.unique(groups)) < k or np.bincount(ds.labels, minlength=2).min() < k:
        raise InputError(
            f"too few cases ({n}, by class {np.bincount(ds.labels).tolist()}) "
            f"for a {val_fraction:g} validation split; add cases or use "
            "--val-fraction 0"
        )
    skf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    train, val = next(iter(skf.split(np.zeros(n), ds.labels, groups)))
    return np.sort(train), np.sort(val)


def case_fingerprints(images: np.ndarray) -> list[str]:
    """A short hash of each case's windowed input (N, C, H, W), rounded to 1e-3.

    The same study, lesion box and input spec give the same fingerprint, so an evaluation can
    tell which of its cases a model was trained on (the card records the training cases').

    Examples
    --------
    >>> a = np.zeros((2, 4, 8, 8), np.float32)
    >>> a[1, 0, 0, 0] = np.nan  # a missing phase
    >>> f = case_fingerprints(a)
    >>> len(f[0]), f[0] == f[1], f[0] == case_fingerprints(a[:1])[0]
    (16, False, True)
    """
    out = []
    for image in np.asarray(images):
        a = np.round(np.asarray(image, np.float64), 3)
        a = np.where(np.isnan(a), -1.0, a).astype(np.float32)
        out.append(hashlib.sha256(a.tobytes()).hexdigest()[:16])
    return out


def _round_fp16(net: nn.Module) -> None:
    # The saved weights are fp16: evaluate what is shipped.
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())


def _scores(net: nn.Module, ds: LesionDataset) -> np.ndarray:
    from shindan.engine.train_classifier import predict_dataset

    probs, _ = predict_dataset(net, ds)
    return probs


def binary_metrics(
    labels: np.ndarray, score: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """ROC-AUC with bootstrap 95% CI, Youden cut-off with its accuracy, sensitivity and
    specificity, and accuracy at 0.5, for ``score`` = P(malignant)."""
    from shindan.stats.metrics import bootstrap_auc, youden_cutoff

    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(score, dtype=np.float64)
    auc, lo, hi = bootstrap_auc(y, s, n_boot=n_boot, seed=seed)  # n_boot 0: no interval
    cut = youden_cutoff(y, s)
    thr = cut["threshold"]
    acc_cut = float(np.mean((s >= thr) == (y == 1))) if np.isfinite(thr) else float("nan")
    return _json_clean(
        {
            "n": int(len(y)),
            "malignant": int(y.sum()),
            "benign": int((y == 0).sum()),
            "auc": auc,
            "auc_ci95": [lo, hi],
            "youden": {**cut, "accuracy": acc_cut},
            "accuracy_at_0.5": float(np.mean((s >= 0.5) == (y == 1))) if len(y) else None,
        }
    )


def _json_clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _card(opts: TrainOptions, spec: dict[str, Any], cases_csv: Path) -> dict[str, Any]:
    return {
        "name": opts.name,
        "version": "1.0",
        "task": "classification",
        "summary": (
            "Renal mass benign vs malignant from multiphase CT "
            f"({', '.join(spec['phases'])}), {opts.arch}, {spec['size']} px lesion "
            "crops, trained from scratch."
        ),
        "architecture": {"library": "timm", "name": opts.arch, "kwargs": dict(opts.kwargs)},
        "classes": list(CLASSES),
        "input": spec,
        "files": {"weights": "weights.safetensors"},
        "training": {
            "data": opts.data or cases_csv.name,
            "licence": opts.licence,
            "command": opts.command or f"shindan ct train {cases_csv.name}",
            "seed": opts.seed,
            "synthetic": opts.synthetic,
        },
    }


def train_ct(
    cases_csv: str | Path,
    out: str | Path,
    opts: TrainOptions | None = None,
    *,
    phase_map: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
):
    """Train the CT classifier on the cases of ``cases_csv`` and save it to ``out``.

    Splits by patient (``group``) and label into training and validation (early stopping),
    standardises each phase channel with training statistics, trains with the shared loop on
    ``opts.threads`` threads and writes the model folder (card, fp16 weights, ONNX) atomically.
    Validation AUC and Youden accuracy go into the card.

    Returns
    -------
    ModelCard
        The saved model's card.
    """
    from shindan.engine.train_classifier import fit
    from shindan.models import save_model

    opts = opts or TrainOptions()
    t0 = time.perf_counter()
    csv_path = Path(cases_csv)
    cases = read_cases(csv_path, require_label=True)
    spec = input_spec(
        size=opts.size,
        phases=opts.phases,
        window=opts.window,
        margin_mm=opts.margin_mm,
        slice_mode=opts.slice_mode,
        reference=opts.reference,
        missing=opts.missing,
    )
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, opts.threads))
    try:
        ds = LesionDataset(cases, spec, phase_map=phase_map, progress=opts.progress)
        if len(np.unique(ds.labels)) < 2:
            raise InputError(f"{csv_path}: training needs both benign and malignant cases")
        tr_idx, va_idx = _split(ds, opts.val_fraction, opts.seed)
        train = ds.subset(tr_idx, augment=True)
        mean, std = train.channel_stats()
        spec = {**spec, "mean": mean, "std": std}
        train.set_normalisation(mean, std)
        val = ds.subset(va_idx) if len(va_idx) else None
        if val is not None:
            val.set_normalisation(mean, std)
        card = _card(opts, spec, csv_path)
        if log:
            log(
                f"{len(ds)} cases ({int(ds.labels.sum())} malignant); train {len(tr_idx)}, "
                f"validation {len(va_idx)}"
            )
        net, hist = fit(
            card,
            train,
            val,
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            lr=opts.lr,
            weight_decay=opts.weight_decay,
            patience=opts.patience,
            seed=opts.seed,
            class_weights=True,
            progress=opts.progress,
            num_threads=max(1, opts.threads),
            log=log,
        )
        _round_fp16(net)
        metrics: dict[str, Any] = {}
        if val is not None:
            probs = _scores(net, val)
            metrics["validation"] = binary_metrics(val.labels, probs[:, 1], seed=opts.seed)
            m = metrics["validation"]
            card["headline"] = (
                f"validation AUC {m['auc']:.3f} (n={m['n']}, unseen patients)"
                if m["auc"] is not None
                else ""
            )
        card["metrics"] = metrics
        card["training"].update(
            {
                "cases": len(ds),
                "train_cases": len(tr_idx),
                "validation_cases": len(va_idx),
                # which cases trained the model, so ct evaluate leaves them out
                "case_fingerprints": {
                    "train": case_fingerprints(ds.images[tr_idx]),
                    "validation": case_fingerprints(ds.images[va_idx]),
                },
                "counts": {c: int((ds.labels == i).sum()) for i, c in enumerate(CLASSES)},
                "split": "StratifiedGroupKFold by group (patient), shuffled with the seed",
                "epochs": opts.epochs,
                "batch_size": opts.batch_size,
                "lr": opts.lr,
                "augmentation": "flips, quarter turns, ±5% gain and offset per phase",
                "best_epoch": hist.get("best_epoch"),
                "epochs_run": hist.get("epochs_run"),
                "history": {
                    k: hist[k] for k in ("train_loss", "val_loss", "val_accuracy") if k in hist
                },
                "wall_seconds": round(time.perf_counter() - t0, 1),
            }
        )
        card["limits"] = [
            "Trained on the cases given; performance elsewhere (other scanners, protocols, "
            "populations) is unknown until measured.",
            "2.5-D input: one plane through the lesion per phase; no 3-D context.",
        ] + (["Trained on synthetic phantoms: not for clinical use."] if opts.synthetic else [])
        return save_model(net, card, out)
    finally:
        torch.set_num_threads(old_threads)


def _load_ct_model(model: str | Path):
    from shindan.models import load_card, load_network

    card = load_card(model)
    spec = card.data["input"]
    if "phases" not in spec or "window" not in spec:
        raise ModelError(f"{model}: not a CT lesion model (its card has no input phases/window)")
    return card, load_network(card)


def predict_ct(
    model: str | Path,
    cases_csv: str | Path,
    *,
    phase_map: Mapping[str, str] | None = None,
    progress: bool = True,
    threads: int = 1,
) -> pd.DataFrame:
    """P(benign), P(malignant) per case of ``cases_csv`` (labels optional).

    Returns a DataFrame: ``case``, ``label`` (true, if given), ``prediction``, ``p_benign``,
    ``p_malignant``, ``age``, ``sex``, ``size_mm``.
    """
    return _predict(model, cases_csv, phase_map=phase_map, progress=progress, threads=threads)[0]


def _predict(
    model: str | Path,
    cases_csv: str | Path,
    *,
    phase_map: Mapping[str, str] | None = None,
    progress: bool = True,
    threads: int = 1,
) -> tuple[pd.DataFrame, list[str]]:
    """:func:`predict_ct`'s table, and each case's :func:`case_fingerprints`."""
    card, net = _load_ct_model(model)
    cases = read_cases(cases_csv, require_label=False)
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        ds = LesionDataset(cases, card.data["input"], phase_map=phase_map, progress=progress)
        probs = _scores(net, ds)
    finally:
        torch.set_num_threads(old)
    table = pd.DataFrame(
        {
            "case": [c.case for c in cases],
            "label": [CLASSES[c.label] if c.label is not None else "" for c in cases],
            "prediction": [CLASSES[i] for i in probs.argmax(1)],
            "p_benign": probs[:, 0],
            "p_malignant": probs[:, 1],
            "age": [c.age for c in cases],
            "sex": [c.sex for c in cases],
            "size_mm": ds.sizes_mm,
        }
    )
    return table[list(PREDICTION_COLUMNS)], case_fingerprints(ds.images)


def _training_cases(card: Any, fingerprints: Sequence[str]) -> np.ndarray:
    """Which of the cases (by fingerprint) trained the model, as its card records."""
    recorded = (card.data.get("training", {}).get("case_fingerprints") or {}).get("train") or []
    return np.isin(np.asarray(fingerprints, dtype=object), np.asarray(recorded, dtype=object))


def logistic_models(pred: pd.DataFrame) -> dict[str, Any]:
    """Logistic models of malignancy: CNN score + age + sex + size, and the covariates alone.

    Covariates absent from every case are left out (and said so); a model that cannot be
    fitted (too few events, separation) is reported as ``{"error": ...}``.
    """
    from shindan.stats.logistic import LogisticFitError, fit_logistic

    df = pd.DataFrame(
        {
            "malignant": (pred["label"] == "malignant").astype(int),
            "cnn_score": pred["p_malignant"].astype(float),
            "age": pd.to_numeric(pred["age"], errors="coerce"),
            "sex": pred["sex"].where(pred["sex"].notna(), None),
            "size_mm": pd.to_numeric(pred["size_mm"], errors="coerce"),
        }
    )
    covariates = [c for c in ("age", "sex", "size_mm") if df[c].notna().any()]
    out: dict[str, Any] = {
        "or_units": OR_UNITS,
        "left_out": [c for c in ("age", "sex", "size_mm") if c not in covariates],
    }
    for name, preds in (("combined", ["cnn_score", *covariates]), ("clinical", covariates)):
        if not preds:
            out[name] = {"error": "no covariates"}
            continue
        try:
            out[name] = fit_logistic(df, "malignant", preds, units=OR_UNITS).to_dict()
        except LogisticFitError as exc:
            out[name] = {"error": str(exc)}
    return out


def evaluate_ct(
    model: str | Path,
    cases_csv: str | Path,
    out: str | Path,
    *,
    phase_map: Mapping[str, str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    threads: int = 1,
    split: str = "held-out",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a CT model on labelled cases; write ``evaluation.json`` and ``predictions.csv``.

    ``split`` ``held-out`` (the default) leaves out the cases the model was trained on (its
    card records them), ``all`` scores every case, with a warning when some trained the model:
    a model scores its own training cases optimistically.

    ``evaluation.json`` holds ``metrics`` (AUC with bootstrap 95% CI, accuracy, sensitivity and
    specificity at the Youden cut-off, accuracy at 0.5), ``report`` (the full classification
    report of :func:`shindan.stats.metrics.classification_report`) and ``logistic`` (see
    :func:`logistic_models`). Both files appear only when complete.
    """
    from shindan.stats.metrics import classification_report

    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    check_output_folder(out, EVALUATION_FILES)  # before any work
    pred, fingerprints = _predict(
        model, cases_csv, phase_map=phase_map, progress=progress, threads=threads
    )
    if (pred["label"] == "").any():
        raise InputError(f"{cases_csv}: every case needs a label to evaluate")
    card, _ = _load_ct_model(model)
    seen = _training_cases(card, fingerprints)
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if seen.any() and split == "held-out":
        if seen.all():
            raise InputError(
                f"{cases_csv}: all {len(seen)} cases trained {card.name}, none is held out; "
                "--split all scores them anyway (optimistically)"
            )
        say(
            f"note: leaving out the {int(seen.sum())} of {len(seen)} cases that trained "
            f"{card.name}; scoring the {int((~seen).sum())} held-out ones (--split all: every case)"
        )
        pred = pred[~seen].reset_index(drop=True)
    elif seen.any():
        say(
            f"warning: {int(seen.sum())} of the {len(seen)} cases trained {card.name}: their "
            "scores are optimistic (the default --split held-out leaves them out)"
        )
    y = (pred["label"] == "malignant").to_numpy(dtype=np.int64)
    probs = pred[["p_benign", "p_malignant"]].to_numpy()
    result = {
        "model": {"name": card.name, "version": card.version, "path": str(card.directory)},
        "cases": str(cases_csv),
        "split": split,
        # cases that trained the model (by the card's fingerprints), and whether they count
        "training_cases": {"found": int(seen.sum()), "left_out": split == "held-out"},
        "metrics": binary_metrics(y, probs[:, 1], n_boot=n_boot, seed=seed),
        "report": _json_clean(
            classification_report(y, probs, list(CLASSES), n_boot=n_boot, seed=seed)
        ),
        "logistic": logistic_models(pred),
    }
    buf = io.StringIO()
    pred.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    with atomic_dir(out, owned=EVALUATION_FILES) as tmp:  # both files, or neither
        (tmp / "predictions.csv").write_text(buf.getvalue())
        (tmp / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
