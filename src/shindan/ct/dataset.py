"""Cases of a renal-mass CT cohort: a CSV of studies, lesion boxes and labels → a torch Dataset.

``cases.csv`` columns (one row per lesion):

========================  ====================================================================
``study``                 study folder (DICOM, scanned recursively), relative to the CSV
``x_min`` … ``z_max``     lesion box corners (``x_min, y_min, z_min, x_max, y_max, z_max``)
``box_units``             ``mm`` (patient LPS coordinates) or ``voxel`` (column, row, slice
                          index of the ``box_phase`` series); optional, default ``mm``
``box_phase``             phase whose series voxel boxes index (optional; default reference)
``label``                 ``benign``/``malignant`` (or 0/1); needed to train and evaluate
``age``, ``sex``          covariates for the logistic model (years; M/F)
``size_mm``               lesion diameter (mm); from the box when absent
``group``                 patient ID: cases of one patient stay on one side of a split
``case``                  case ID (default: the row number)
``mask``                  optional lesion mask ``.npy`` (on the box's series grid) for
                          ``max-area`` slices
``phase_map``             optional per-study phase map (CSV/JSON), relative to the CSV
========================  ====================================================================
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shindan.ct.lesion import LesionBox, lesion_input
from shindan.ct.phases import PHASES, normalise_phase, read_phase_map
from shindan.ct.window import get_window
from shindan.errors import InputError, ShindanError
from shindan.util.progress import progress_bar

__all__ = ["CLASSES", "BOX_COLUMNS", "Case", "LesionDataset", "input_spec", "read_cases"]

CLASSES = ("benign", "malignant")
BOX_COLUMNS = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")
_LABELS = {"benign": 0, "0": 0, "malignant": 1, "1": 1}


@dataclass(frozen=True)
class Case:
    """One lesion of ``cases.csv`` (see the module docstring for the columns)."""

    case: str
    study: Path
    box: LesionBox
    label: int | None
    age: float | None
    sex: str | None
    size_mm: float | None
    group: str
    mask: Path | None = None
    phase_map: Path | None = None


def _float(value: str | None, what: str, where: str) -> float | None:
    if value is None or str(value).strip() in ("", "NA", "nan", "NaN", "None"):
        return None
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        return None
    return v


def _sex(value: str | None, where: str) -> str | None:
    v = (value or "").strip().upper()
    if v in ("", "NA", "NAN", "NONE"):
        return None
    if v in ("M", "MALE", "1"):
        return "M"
    if v in ("F", "FEMALE", "0"):
        return "F"
    raise InputError(f"{where}: sex must be M or F, got {value!r}")


def read_cases(path: str | Path, *, require_label: bool = True) -> list[Case]:
    """Parse ``cases.csv``; paths in it are relative to the CSV's folder.

    Raises
    ------
    InputError
        Missing file or columns, a bad number, an unknown label, a missing study folder.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: cases file not found")
    try:
        rows = list(csv.DictReader(p.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: unreadable CSV ({exc})") from None
    if not rows:
        raise InputError(f"{p}: no cases")
    cols = set(rows[0].keys())
    need = {"study", *BOX_COLUMNS} | ({"label"} if require_label else set())
    if need - cols:
        raise InputError(f"{p}: missing column(s) {', '.join(sorted(need - cols))}")
    base = p.parent
    cases = []
    for i, row in enumerate(rows, start=1):
        where = f"{p}:{i + 1}"
        name = (row.get("case") or "").strip() or f"row{i}"
        study = base / (row["study"] or "").strip()
        if not (row["study"] or "").strip() or not study.exists():
            raise InputError(f"{where}: study folder {study} not found")
        coords = [_float(row[c], c, where) for c in BOX_COLUMNS]
        if any(c is None for c in coords):
            raise InputError(f"{where}: the lesion box needs all of {', '.join(BOX_COLUMNS)}")
        units = (row.get("box_units") or "mm").strip().lower()
        phase = (row.get("box_phase") or "").strip() or None
        try:
            box = LesionBox(
                tuple(coords[:3]),
                tuple(coords[3:]),
                units=units,  # type: ignore[arg-type]
                phase=normalise_phase(phase) if phase else None,
            )
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        raw_label = (row.get("label") or "").strip().lower()
        if raw_label:
            if raw_label not in _LABELS:
                raise InputError(
                    f"{where}: label must be benign or malignant (or 0/1), got {row.get('label')!r}"
                )
            label: int | None = _LABELS[raw_label]
        elif require_label:
            raise InputError(f"{where}: no label")
        else:
            label = None
        mask = (row.get("mask") or "").strip()
        pmap = (row.get("phase_map") or "").strip()
        cases.append(
            Case(
                case=name,
                study=study,
                box=box,
                label=label,
                age=_float(row.get("age"), "age", where),
                sex=_sex(row.get("sex"), where),
                size_mm=_float(row.get("size_mm") or row.get("size"), "size_mm", where),
                group=(row.get("group") or "").strip() or name,
                mask=base / mask if mask else None,
                phase_map=base / pmap if pmap else None,
            )
        )
    return cases


def input_spec(
    *,
    size: int = 64,
    phases: Sequence[str] = PHASES,
    window: str | tuple[float, float] = "kidney",
    margin_mm: float = 10.0,
    slice_mode: str = "center",
    reference: str | None = "nephrographic",
    missing: str = "error",
) -> dict[str, Any]:
    """The ``input`` section of a CT model card (without ``mean``/``std``): how to build a
    lesion's input. The card is the single source of this preprocessing."""
    win = get_window(window)
    if slice_mode not in ("center", "max-area"):
        raise InputError(f"unknown slice mode {slice_mode!r} (center or max-area)")
    if missing not in ("error", "blank"):
        raise InputError(f"missing must be 'error' or 'blank', got {missing!r}")
    if size < 16:
        raise InputError(f"input size must be at least 16 px, got {size}")
    names = [normalise_phase(p) for p in phases]
    if not names or len(set(names)) != len(names):
        raise InputError(f"phases must be distinct and at least one, got {list(phases)}")
    if reference and normalise_phase(reference) not in names:
        raise InputError(
            f"reference phase {normalise_phase(reference)} is not among the "
            f"phases ({', '.join(names)})"
        )
    return {
        "size": int(size),
        "channels": len(phases),
        "mpp": None,
        "phases": names,
        "window": {"name": window if isinstance(window, str) else None, **win.as_dict()},
        "margin_mm": float(margin_mm),
        "slice": slice_mode,
        "reference": normalise_phase(reference) if reference else None,
        "missing": missing,
    }


def _case_image(
    case: Case, spec: Mapping[str, Any], phase_map: Mapping[str, str] | None
) -> tuple[np.ndarray, float]:
    pmap = dict(phase_map or {})
    if case.phase_map is not None:
        pmap.update(read_phase_map(case.phase_map))
    mask = None
    if case.mask is not None:
        try:
            mask = np.load(case.mask, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{case.mask}: unreadable mask ({exc})") from None
    win = spec["window"]
    li = lesion_input(
        case.study,
        case.box,
        phases=spec["phases"],
        phase_map=pmap,
        reference=spec.get("reference"),
        size=int(spec["size"]),
        margin_mm=float(spec.get("margin_mm", 10.0)),
        window=(win["width"], win["level"]),
        slice_mode=spec.get("slice", "center"),
        mask=mask,
        missing=spec.get("missing", "error"),
    )
    return li.image, li.size_mm


class LesionDataset(Dataset):
    """Lesions as ``(float32 tensor C×H×W normalised, int label)`` for the shared trainer.

    Every case's input is built once at construction (DICOM reading is the slow part) and kept
    in memory: ``C × size²`` floats per case.

    Parameters
    ----------
    cases : sequence of Case
    spec : mapping
        The card's ``input`` (:func:`input_spec`, plus ``mean``/``std`` once known).
    phase_map : mapping, optional
        Series UID or description → phase, for every study.
    augment : bool
        Random flips and quarter turns (uses torch's RNG, which the trainer seeds) and a small
        random intensity scale per channel.
    progress : bool
        Progress bar on stderr while reading studies.

    Attributes
    ----------
    images : ndarray (N, C, H, W) float32
        Windowed inputs in [0, 1] (NaN where a phase is missing).
    labels : ndarray (N,) int64
        -1 for unlabelled cases.
    sizes_mm : ndarray (N,)
        Lesion sizes: the CSV's ``size_mm``, else the box's longest in-plane side.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        spec: Mapping[str, Any],
        *,
        phase_map: Mapping[str, str] | None = None,
        augment: bool = False,
        progress: bool = True,
    ) -> None:
        self.cases = list(cases)
        self.spec = dict(spec)
        self.augment = augment
        images, sizes = [], []
        with progress_bar("reading CT studies", len(self.cases), enabled=progress) as advance:
            for case in self.cases:
                try:
                    image, size = _case_image(case, self.spec, phase_map)
                except ShindanError as exc:
                    raise type(exc)(f"case {case.case}: {exc}") from None
                images.append(image)
                sizes.append(case.size_mm if case.size_mm is not None else size)
                advance(1)
        c, s = len(self.spec["phases"]), int(self.spec["size"])
        self.images = np.stack(images) if images else np.zeros((0, c, s, s), np.float32)
        self.labels = np.asarray(
            [-1 if k.label is None else k.label for k in self.cases], dtype=np.int64
        )
        self.sizes_mm = np.asarray(sizes, dtype=np.float64)
        self.set_normalisation(self.spec.get("mean"), self.spec.get("std"))

    def set_normalisation(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Per-channel mean/std applied to the windowed inputs (None: 0.5 and 0.25)."""
        c = self.images.shape[1]
        m = np.full(c, 0.5) if mean is None else np.asarray(mean, dtype=np.float64)
        sd = np.full(c, 0.25) if std is None else np.asarray(std, dtype=np.float64)
        if m.shape != (c,) or sd.shape != (c,) or np.any(sd <= 0):
            raise InputError(f"normalisation needs {c} means and positive stds")
        self._mean = m.astype(np.float32).reshape(c, 1, 1)
        self._std = sd.astype(np.float32).reshape(c, 1, 1)

    def subset(
        self, indices: Sequence[int] | np.ndarray, *, augment: bool = False
    ) -> LesionDataset:
        """The cases at ``indices`` (sharing the built inputs, nothing re-read)."""
        idx = np.asarray(indices, dtype=np.int64)
        out = copy.copy(self)
        out.cases = [self.cases[i] for i in idx]
        out.images = self.images[idx]
        out.labels = self.labels[idx]
        out.sizes_mm = self.sizes_mm[idx]
        out.augment = augment
        return out

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the windowed inputs (missing phases ignored)."""
        x = self.images.transpose(1, 0, 2, 3).reshape(self.images.shape[1], -1)
        mean = np.nanmean(x, axis=1) if x.size else np.full(x.shape[0], 0.5)
        std = np.nanstd(x, axis=1) if x.size else np.full(x.shape[0], 0.25)
        mean = np.where(np.isfinite(mean), mean, 0.5)
        std = np.where(np.isfinite(std) & (std > 1e-6), std, 0.25)
        return [float(v) for v in mean], [float(v) for v in std]

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = (self.images[i] - self._mean) / self._std
        x = np.nan_to_num(x, nan=0.0)  # a missing phase reads as the mean
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.augment:
            if torch.rand(()) < 0.5:
                t = t.flip(-1)
            if torch.rand(()) < 0.5:
                t = t.flip(-2)
            t = torch.rot90(t, int(torch.randint(0, 4, ())), dims=(-2, -1))
            # Scanner and contrast-timing differences: a few % gain per phase.
            t = t * (1 + 0.05 * torch.randn(t.shape[0], 1, 1)) + 0.05 * torch.randn(
                t.shape[0], 1, 1
            )
        return t, int(self.labels[i])
