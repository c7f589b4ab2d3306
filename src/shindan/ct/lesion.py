"""Phases of one lesion as channels of one input: align, crop around the lesion box, window.

The result is a 2.5-D input: the same plane through the lesion in every phase, one phase per
channel, ``(phases, size, size)`` floats in [0, 1] after a CT window. The plane is a slice of
the *reference* phase (its orientation and slice positions); other phases are resampled onto it
in patient coordinates, so a phase scanned with other slices, pixel size or field of view lines
up voxel for voxel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from skimage.transform import resize

from shindan.ct.dicom import Grid, Series, SeriesHeader, header_grid, load_series, only_ct
from shindan.ct.dicom import scan_dicom as _scan
from shindan.ct.phases import PHASES, assign_phases, normalise_phase
from shindan.ct.resample import AIR_HU, resample_array
from shindan.ct.window import Window, apply_window, get_window
from shindan.errors import InputError

__all__ = [
    "LesionBox",
    "LesionInput",
    "PhaseStack",
    "crop_lesion",
    "lesion_grid",
    "lesion_input",
    "stack_phases",
]

SliceMode = Literal["center", "max-area"]


@dataclass(frozen=True)
class LesionBox:
    """A box around a lesion, corners inclusive.

    Attributes
    ----------
    lo, hi : (x, y, z)
        Opposite corners. In ``mm``: patient coordinates (DICOM LPS). In ``voxel``: column,
        row and slice index (0-based; slices in ascending position along the slice normal,
        i.e. feet→head for ordinary axial scans) of the ``phase`` series.
    units : {"mm", "voxel"}
    phase : str, optional
        For voxel boxes: the phase whose series the indices refer to (default: the reference).
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    units: Literal["mm", "voxel"] = "mm"
    phase: str | None = None

    def __post_init__(self) -> None:
        if self.units not in ("mm", "voxel"):
            raise InputError(f"box units must be 'mm' or 'voxel', got {self.units!r}")
        if len(self.lo) != 3 or len(self.hi) != 3:
            raise InputError("a lesion box needs three lower and three upper coordinates")
        vals = [float(v) for v in (*self.lo, *self.hi)]
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"lesion box has a missing or non-finite coordinate: {vals}")
        lo = tuple(min(a, b) for a, b in zip(vals[:3], vals[3:], strict=True))
        hi = tuple(max(a, b) for a, b in zip(vals[:3], vals[3:], strict=True))
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def corners_world(self, grid: Grid | None = None) -> np.ndarray:
        """The 8 corners in patient mm; voxel boxes need the ``grid`` they index.

        Voxel boxes reach half a voxel beyond their edge voxels' centres.
        """
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        if self.units == "voxel":
            lo, hi = lo - 0.5, hi + 0.5
        xyz = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])],
            dtype=np.float64,
        )
        if self.units == "mm":
            return xyz
        if grid is None:
            raise InputError("a voxel lesion box needs the grid of its series")
        k = xyz[:, 2]
        if (
            k.min() < -0.5 - 1e-6
            or k.max() > grid.shape[0] - 0.5 + 1e-6
            or xyz[:, :2].min() < -0.5 - 1e-6
            or xyz[:, 0].max() > grid.shape[2] - 0.5 + 1e-6
            or xyz[:, 1].max() > grid.shape[1] - 0.5 + 1e-6
        ):
            raise InputError(
                f"voxel lesion box {self.lo}–{self.hi} lies outside its series "
                f"({grid.shape[2]} x {grid.shape[1]} x {grid.shape[0]} voxels)"
            )
        return grid.index_to_world(xyz[:, [2, 1, 0]])


@dataclass(frozen=True)
class PhaseStack:
    """Phases resampled onto one grid: ``hu`` is (phases, Z, Y, X) in HU."""

    hu: np.ndarray
    phases: tuple[str, ...]
    grid: Grid
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class LesionInput:
    """A lesion's 2.5-D input and where it came from.

    Attributes
    ----------
    image : ndarray (C, size, size) float32
        Windowed to [0, 1], one channel per phase; a missing phase (``missing="blank"``) is NaN.
    phases : tuple of str
    size_mm : float
        Longest in-plane side of the lesion box (mm), a stand-in for lesion diameter.
    pixel_mm : float
        Side of one output pixel (mm).
    slice_position : float
        Position of the chosen plane along the reference normal (mm).
    sources : dict
        phase → ``{"uid", "description"}`` of the series used.
    missing : tuple of str
        Phases that had no series (blank channels).
    """

    image: np.ndarray
    phases: tuple[str, ...]
    size_mm: float
    pixel_mm: float
    slice_position: float
    sources: dict[str, dict[str, str]]
    missing: tuple[str, ...] = ()


def stack_phases(
    series: Mapping[str, Series],
    *,
    reference: str | None = None,
    grid: Grid | None = None,
    phases: Sequence[str] | None = None,
) -> PhaseStack:
    """Resample every phase onto one grid and stack them as channels.

    Parameters
    ----------
    series : mapping
        phase → loaded :class:`Series`.
    reference : str, optional
        Phase whose grid is the common one (default: nephrographic if present, else the first
        present in :data:`PHASES` order). Ignored when ``grid`` is given.
    grid : Grid, optional
        An explicit target grid (e.g. a small one around a lesion).
    phases : sequence of str, optional
        Channel order (default: :data:`PHASES` order of the phases given).

    Raises
    ------
    InputError
        A series has no patient position, so it cannot be aligned with the others.
    """
    if not series:
        raise InputError("no phases to stack")
    order = (
        tuple(normalise_phase(p) for p in phases)
        if phases
        else tuple(p for p in PHASES if p in series) + tuple(p for p in series if p not in PHASES)
    )
    missing = [p for p in order if p not in series]
    if missing:
        raise InputError(f"no series for phase(s) {', '.join(missing)}")
    if len(series) > 1:
        for ph, s in series.items():
            if not s.has_position:
                raise InputError(
                    f"{s.header.label()} ({ph}): no ImagePositionPatient, "
                    "cannot align it with the other phases"
                )
    if grid is None:
        ref = _default_reference(series, reference)
        grid = series[ref].grid
    hu = np.stack([resample_array(series[p].hu, series[p].grid, grid) for p in order])
    sources = {p: {"uid": series[p].uid, "description": series[p].description} for p in order}
    return PhaseStack(hu=hu, phases=order, grid=grid, sources=sources)


def _default_reference(available: Mapping[str, object], reference: str | None) -> str:
    if reference is not None:
        ref = normalise_phase(reference)
        if ref not in available:
            raise InputError(
                f"reference phase {ref} is not among the phases ({', '.join(available)})"
            )
        return ref
    for ph in ("nephrographic", *PHASES):
        if ph in available:
            return ph
    return next(iter(available))


def lesion_grid(
    corners: np.ndarray, reference: Grid, *, margin_mm: float = 10.0, all_slices: bool = True
) -> Grid:
    """A square grid around a lesion, on the reference's planes, at its finest pixel size.

    Parameters
    ----------
    corners : ndarray (N, 3)
        Lesion box corners in patient mm.
    reference : Grid
        Planes to follow (orientation and slice positions).
    margin_mm : float
        Context added on every in-plane side (mm).
    all_slices : bool
        Keep every reference slice crossing the box (else only the one nearest its centre).
    """
    if margin_mm < 0:
        raise InputError(f"margin must be >= 0 mm, got {margin_mm}")
    rel = np.asarray(corners, dtype=np.float64) - reference.origin
    u, v = rel @ reference.row_dir, rel @ reference.col_dir
    w = np.asarray(corners, dtype=np.float64) @ reference.normal
    pix = min(reference.spacing)
    side = max(u.max() - u.min(), v.max() - v.min()) + 2 * margin_mm
    n = max(8, math.ceil(side / pix))
    uc, vc, wc = (u.max() + u.min()) / 2, (v.max() + v.min()) / 2, (w.max() + w.min()) / 2
    pos = reference.positions
    if all_slices:
        keep = pos[(pos >= w.min() - 1e-6) & (pos <= w.max() + 1e-6)]
    else:
        keep = pos[:0]
    if keep.size == 0:  # a box thinner than the slice gap: the nearest slice
        keep = pos[[int(np.argmin(np.abs(pos - wc)))]]
    origin = (
        reference.origin
        + (uc - (n - 1) * pix / 2) * reference.row_dir
        + (vc - (n - 1) * pix / 2) * reference.col_dir
        + (keep[0] - reference.origin @ reference.normal) * reference.normal
    )
    return Grid(
        origin=origin,
        row_dir=reference.row_dir,
        col_dir=reference.col_dir,
        spacing=(pix, pix),
        positions=np.asarray(keep, dtype=np.float64),
        shape=(len(keep), n, n),
        thickness=reference.thickness,
    )


def _check_inside(grid: Grid, corners: np.ndarray, what: str) -> None:
    """InputError when the box centre is outside ``grid`` (e.g. mm given for voxels)."""
    centre = (corners.min(axis=0) + corners.max(axis=0)) / 2
    idx = grid.world_to_index(centre)
    if np.any(idx < -0.5) or np.any(idx > np.asarray(grid.shape) - 0.5):
        xyz = ", ".join(f"{v:.1f}" for v in centre)
        raise InputError(
            f"the lesion box centre ({xyz} mm) lies outside {what}; check the "
            "box coordinates and units"
        )


def _pick_slice(
    grid: Grid, corners: np.ndarray, slice_mode: SliceMode, mask_region: np.ndarray | None
) -> int:
    if slice_mode == "center":
        wc = float((corners @ grid.normal).max() + (corners @ grid.normal).min()) / 2
        return int(np.argmin(np.abs(grid.positions - wc)))
    if slice_mode == "max-area":
        if mask_region is None:
            raise InputError("slice 'max-area' needs a lesion mask")
        area = (mask_region > 0.5).sum(axis=(1, 2))
        if area.max(initial=0) == 0:
            raise InputError("the lesion mask is empty inside the lesion box")
        return int(np.argmax(area))
    raise InputError(f"unknown slice mode {slice_mode!r} (center or max-area)")


def _finish(region: np.ndarray, k: int, size: int, window: Window) -> np.ndarray:
    """Plane ``k`` of a (C, Z, n, n) HU region → (C, size, size) windowed floats.

    Channels are resized one by one: a missing (all-NaN) phase must not leak into the others.
    """
    out = np.full((region.shape[0], size, size), np.nan, dtype=np.float32)
    for c, plane in enumerate(region[:, k]):
        if np.isnan(plane).all():
            continue
        if plane.shape != (size, size):
            plane = resize(
                plane,
                (size, size),
                order=1,
                mode="edge",
                anti_aliasing=plane.shape[0] > size,
                preserve_range=True,
            )
        out[c] = apply_window(plane, window, np.float32)
    return out


def crop_lesion(
    stack: PhaseStack,
    box: LesionBox,
    *,
    size: int = 64,
    margin_mm: float = 10.0,
    window: str | Window | tuple[float, float] = "kidney",
    slice_mode: SliceMode = "center",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """A (phases, size, size) windowed crop of a :class:`PhaseStack` around a lesion.

    Parameters
    ----------
    stack : PhaseStack
        Phases on a common grid (:func:`stack_phases`).
    box : LesionBox
        Lesion box; voxel boxes index ``stack.grid``.
    size : int
        Output side in pixels; the square crop (box + margins) is resized to it.
    margin_mm : float
        Context around the box on every in-plane side (mm).
    window : str, Window or (width, level)
        CT window mapping HU to [0, 1].
    slice_mode : {"center", "max-area"}
        The plane through the box centre, or the one where ``mask`` is largest.
    mask : ndarray (Z, Y, X), optional
        Lesion mask on ``stack.grid`` (needed for ``max-area``).
    """
    win = get_window(window)
    corners = box.corners_world(stack.grid)
    _check_inside(stack.grid, corners, "the stacked volume")
    grid = lesion_grid(
        corners, stack.grid, margin_mm=margin_mm, all_slices=slice_mode == "max-area"
    )
    region = np.stack([resample_array(ch, stack.grid, grid) for ch in stack.hu])
    mask_region = (
        None
        if mask is None
        else resample_array(np.asarray(mask, np.float32), stack.grid, grid, order=0, cval=0.0)
    )
    k = _pick_slice(grid, corners, slice_mode, mask_region)
    return _finish(region, k, size, win)


def lesion_input(
    study: str | Path | Sequence[SeriesHeader],
    box: LesionBox,
    *,
    phases: Sequence[str] = PHASES,
    phase_map: Mapping[str, str] | None = None,
    reference: str | None = None,
    size: int = 64,
    margin_mm: float = 10.0,
    window: str | Window | tuple[float, float] = "kidney",
    slice_mode: SliceMode = "center",
    mask: np.ndarray | None = None,
    missing: Literal["error", "blank"] = "error",
) -> LesionInput:
    """Read a study and make the lesion's 2.5-D multiphase input.

    Only the slices around the lesion are read from each phase.

    Parameters
    ----------
    study : path or sequence of SeriesHeader
        A study folder (scanned recursively) or already scanned series.
    box : LesionBox
        The lesion; a voxel box indexes the series of ``box.phase`` (default: the reference).
    phases : sequence of str
        Channels, in order.
    phase_map : mapping, optional
        Series UID or description → phase (see :func:`shindan.ct.phases.read_phase_map`).
    reference : str, optional
        Phase whose planes are sampled (default: nephrographic when present).
    size, margin_mm, window, slice_mode
        As in :func:`crop_lesion`.
    mask : ndarray (Z, Y, X), optional
        Lesion mask on the grid of the box's series; needed for ``slice_mode="max-area"``.
    missing : {"error", "blank"}
        What to do when a phase has no series: raise, or leave its channel NaN.
    """
    headers = list(_scan(study)) if isinstance(study, str | Path) else list(study)
    where = study if isinstance(study, str | Path) else "study"
    wanted = tuple(normalise_phase(p) for p in phases)
    chosen = assign_phases(
        only_ct(headers, where), phase_map, phases=wanted, required=missing == "error", source=where
    )
    if not chosen:
        raise InputError(f"{where}: none of the phases {', '.join(wanted)} found")
    if reference is not None and normalise_phase(reference) not in chosen and missing == "blank":
        reference = None  # the preferred plane is missing: sample another phase's planes
    ref = _default_reference(chosen, reference)
    ref_grid = header_grid(chosen[ref])[0]
    box_phase = normalise_phase(box.phase) if box.phase else ref
    if box.units == "voxel" and box_phase not in chosen:
        raise InputError(f"{where}: the box's phase {box_phase} has no series")
    box_grid = header_grid(chosen[box_phase])[0] if box_phase != ref else ref_grid
    corners = box.corners_world(box_grid)
    _check_inside(ref_grid, corners, f"the {ref} series")
    # The centre plane needs one reference slice; max-area needs all that cross the box.
    grid = lesion_grid(corners, ref_grid, margin_mm=margin_mm, all_slices=slice_mode == "max-area")
    roi = grid.index_to_world(
        np.array(
            [
                [k, r, c]
                for k in (0, grid.shape[0] - 1)
                for r in (0, grid.shape[1] - 1)
                for c in (0, grid.shape[2] - 1)
            ],
            dtype=np.float64,
        )
    )
    loaded = {ph: load_series(h, roi=roi) for ph, h in chosen.items()}
    if len(loaded) > 1:
        for ph, s in loaded.items():
            if not s.has_position:
                raise InputError(
                    f"{s.header.label()} ({ph}): no ImagePositionPatient, "
                    "cannot align it with the other phases"
                )
    region = np.full((len(wanted), *grid.shape), np.nan, dtype=np.float32)
    for c, ph in enumerate(wanted):
        if ph in loaded:
            region[c] = resample_array(loaded[ph].hu, loaded[ph].grid, grid, cval=AIR_HU)
    mask_region = None
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != box_grid.shape:
            raise InputError(
                f"lesion mask shape {m.shape} differs from its series {box_grid.shape}"
            )
        mask_region = resample_array(m.astype(np.float32), box_grid, grid, order=0, cval=0.0)
    k = _pick_slice(grid, corners, slice_mode, mask_region)
    image = _finish(region, k, size, get_window(window))
    rel = corners - ref_grid.origin
    size_mm = float(max(np.ptp(rel @ ref_grid.row_dir), np.ptp(rel @ ref_grid.col_dir)))
    sources = {ph: {"uid": h.uid, "description": h.description} for ph, h in chosen.items()}
    return LesionInput(
        image=image,
        phases=wanted,
        size_mm=size_mm,
        pixel_mm=grid.spacing[0] * grid.shape[1] / size,
        slice_position=float(grid.positions[k]),
        sources=sources,
        missing=tuple(p for p in wanted if p not in chosen),
    )
