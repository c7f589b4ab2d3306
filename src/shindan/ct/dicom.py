"""DICOM CT studies: find the image series in a folder, order their slices, read them in HU.

A study folder is scanned recursively; files that are not DICOM, ``DICOMDIR`` files and objects
without an image (presentation states, reports, private objects) are skipped. Images are grouped
into series by ``SeriesInstanceUID`` and each series' slices are ordered by their position along
the slice normal (``ImagePositionPatient`` projected on the cross product of the
``ImageOrientationPatient`` cosines), or by ``InstanceNumber`` when positions are missing.

Geometry follows DICOM patient coordinates (LPS, mm). A voxel index is ``(k, r, c)``: slice in
sorted order, row, column; arrays are ``(slices, rows, cols)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import MediaStorageDirectoryStorage

from shindan.errors import InputError
from shindan.util.progress import progress_bar

__all__ = [
    "Grid",
    "Instance",
    "Series",
    "SeriesHeader",
    "header_grid",
    "load_series",
    "only_ct",
    "scan_dicom",
]

# Positions closer than this along the normal (mm) are the same slice.
_SAME_POSITION_MM = 1e-3


@dataclass(frozen=True)
class Grid:
    """A stack of parallel image planes in patient space.

    Attributes
    ----------
    origin : ndarray (3,)
        Patient position (mm) of voxel ``(0, 0, 0)``: centre of the first row/column of slice 0.
    row_dir, col_dir : ndarray (3,)
        Unit vectors along which the column index and the row index grow (DICOM
        ``ImageOrientationPatient`` first and last three values).
    spacing : (float, float)
        ``(row spacing, column spacing)`` in mm (DICOM ``PixelSpacing`` order).
    positions : ndarray (Z,)
        Slice positions along ``normal`` (mm), strictly increasing; need not be evenly spaced.
    shape : (int, int, int)
        ``(slices, rows, cols)``.
    """

    origin: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float]
    positions: np.ndarray
    shape: tuple[int, int, int]
    thickness: float = 1.0  # mm a single slice covers (only used when there is one slice)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (``row_dir × col_dir``)."""
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    @property
    def slice_spacing(self) -> float:
        """Median distance between neighbouring slices in mm (0 for a single slice)."""
        return float(np.median(np.diff(self.positions))) if len(self.positions) > 1 else 0.0

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Patient coordinates (mm) of fractional voxel indices ``(..., 3)`` as ``(k, r, c)``."""
        idx = np.asarray(index, dtype=np.float64)
        k, r, c = idx[..., 0], idx[..., 1], idx[..., 2]
        z = _interp_linear(
            k,
            np.arange(len(self.positions), dtype=np.float64),
            self.positions,
            1.0 / self.thickness,
        )
        dz = z - self.positions[0]
        dy, dx = self.spacing
        return (
            self.origin
            + c[..., None] * dx * self.row_dir
            + r[..., None] * dy * self.col_dir
            + dz[..., None] * self.normal
        )

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """Fractional voxel indices ``(..., 3)`` as ``(k, r, c)`` of patient points in mm."""
        p = np.asarray(points, dtype=np.float64)
        d = p - self.origin
        dy, dx = self.spacing
        c = d @ self.row_dir / dx
        r = d @ self.col_dir / dy
        k = _interp_linear(
            p @ self.normal,
            self.positions,
            np.arange(len(self.positions), dtype=np.float64),
            self.thickness,
        )
        return np.stack([k, r, c], axis=-1)


def _interp_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray, single_step: float) -> np.ndarray:
    """``np.interp`` that extrapolates linearly beyond the ends instead of clamping.

    With a single point the slope is ``1 / single_step``.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(xp) == 1:
        return fp[0] + (x - xp[0]) / single_step
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y = np.where(lo, fp[0] + (x - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0]), y)
    return np.where(hi, fp[-1] + (x - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2]), y)


@dataclass(frozen=True)
class Instance:
    """One image file of a series, from its header."""

    path: Path
    rows: int
    cols: int
    position: tuple[float, float, float] | None  # ImagePositionPatient, mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 cosines)
    number: int | None  # InstanceNumber
    frames: int = 1


@dataclass(frozen=True)
class SeriesHeader:
    """A series found by :func:`scan_dicom`: its description and ordered image files.

    No pixel data is read until :func:`load_series`.
    """

    uid: str
    description: str
    modality: str
    study_uid: str
    number: int | None
    instances: tuple[Instance, ...]
    image_type: tuple[str, ...] = ()
    acquisition_time: str = ""
    slice_thickness: float | None = None

    @property
    def n_slices(self) -> int:
        return len(self.instances)

    @property
    def is_localizer(self) -> bool:
        """A scout / topogram: not a phase of the study."""
        return (
            "LOCALIZER" in self.image_type
            or self.n_slices < 2
            and any(
                w in self.description.lower() for w in ("scout", "topogram", "localizer", "surview")
            )
        )

    @property
    def orientation(self) -> np.ndarray | None:
        o = self.instances[0].orientation
        return None if o is None else np.asarray(o, dtype=np.float64)

    @property
    def is_axial(self) -> bool:
        """Slices (nearly) perpendicular to the patient's head–foot axis."""
        o = self.orientation
        if o is None:
            return True
        n = np.cross(o[:3], o[3:])
        return abs(n[2]) / np.linalg.norm(n) > 0.9

    def label(self) -> str:
        """Short human-readable name for messages: number, description and UID."""
        num = f"#{self.number} " if self.number is not None else ""
        desc = f"{self.description!r} " if self.description else ""
        return f"series {num}{desc}({self.uid})"


@dataclass(frozen=True)
class Series:
    """A loaded series: voxels in Hounsfield units (CT) or modality values, and geometry.

    Attributes
    ----------
    header : SeriesHeader
    hu : ndarray (Z, Y, X) float32
        Modality values after the DICOM rescale (``RescaleSlope`` and ``RescaleIntercept`` of
        each slice) or Modality LUT: Hounsfield units for CT.
    grid : Grid
        Where each voxel sits in patient space.
    has_position : bool
        False when the files carry no ``ImagePositionPatient``: the grid is then a local one
        (slices ordered by ``InstanceNumber``) and cannot be aligned with other series.
    """

    header: SeriesHeader
    hu: np.ndarray
    grid: Grid
    has_position: bool = True
    first_slice: int = field(default=0)

    @property
    def uid(self) -> str:
        return self.header.uid

    @property
    def description(self) -> str:
        return self.header.description

    @property
    def modality(self) -> str:
        return self.header.modality

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(slice, row, column)`` in mm; slice = median distance between slices."""
        dz = self.grid.slice_spacing or (self.header.slice_thickness or 0.0)
        return (dz, *self.grid.spacing)


def _float_tuple(value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None


def _iter_files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM file, or None when the file is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (
        InvalidDicomError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
    ):
        return None


def scan_dicom(folder: str | Path, *, progress: bool = False) -> list[SeriesHeader]:
    """Every image series under ``folder`` (recursive), slices in anatomical order.

    Parameters
    ----------
    folder : path
        A study folder (searched recursively), a single DICOM file, or a ``DICOMDIR`` (its
        folder is searched; files it lists but that are absent are simply not found).
    progress : bool
        Show a progress bar on stderr while reading headers.

    Returns
    -------
    list of SeriesHeader
        Sorted by series number, then UID. Only headers are read.

    Raises
    ------
    InputError
        ``folder`` is missing, holds no DICOM image, or a series mixes image sizes.
    """
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    if root.is_file() and root.name.upper() == "DICOMDIR":
        root = root.parent  # a DICOMDIR stands for the media folder it indexes
    files = list(_iter_files(root))
    groups: dict[str, list[tuple[pydicom.Dataset, Path]]] = {}
    skipped = {"dicomdir": 0, "non-image": 0, "non-dicom": 0}
    with progress_bar("reading DICOM headers", len(files), enabled=progress) as advance:
        for path in files:
            advance(1)
            ds = _read_header(path)
            if ds is None:
                skipped["non-dicom"] += 1
                continue
            sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
            if sop == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
                skipped["dicomdir"] += 1
                continue
            if "Rows" not in ds or "Columns" not in ds or "SeriesInstanceUID" not in ds:
                skipped["non-image"] += 1
                continue
            groups.setdefault(str(ds.SeriesInstanceUID), []).append((ds, path))
    if not groups:
        what = ", ".join(f"{n} {k}" for k, n in skipped.items() if n) or "no files"
        raise InputError(f"{root}: no DICOM images found ({what})")
    series = [_header(uid, items) for uid, items in groups.items()]
    return sorted(series, key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))


def _header(uid: str, items: list[tuple[pydicom.Dataset, Path]]) -> SeriesHeader:
    first = items[0][0]
    instances = []
    for ds, path in items:
        number = ds.get("InstanceNumber")
        instances.append(
            Instance(
                path=path,
                rows=int(ds.Rows),
                cols=int(ds.Columns),
                position=_float_tuple(ds.get("ImagePositionPatient")),  # type: ignore[arg-type]
                orientation=_float_tuple(ds.get("ImageOrientationPatient")),
                number=int(number) if number not in (None, "") else None,
                frames=int(ds.get("NumberOfFrames") or 1),
            )
        )
    number = first.get("SeriesNumber")
    thick = first.get("SliceThickness")
    header = SeriesHeader(
        uid=uid,
        description=str(first.get("SeriesDescription", "") or ""),
        modality=str(first.get("Modality", "") or ""),
        study_uid=str(first.get("StudyInstanceUID", "") or ""),
        number=int(number) if number not in (None, "") else None,
        instances=tuple(instances),
        image_type=tuple(str(v).upper() for v in (first.get("ImageType") or ())),
        acquisition_time=str(first.get("AcquisitionTime", "") or first.get("SeriesTime", "")),
        slice_thickness=float(thick) if thick not in (None, "") else None,
    )
    sizes = sorted({(i.rows, i.cols) for i in instances})
    if len(sizes) > 1:
        shown = " and ".join(f"{c}x{r}" for r, c in sizes[:3])
        raise InputError(f"{header.label()}: mixed image sizes {shown} in one series")
    return _sorted(header)


def _sorted(header: SeriesHeader) -> SeriesHeader:
    """The header with its instances in slice order (position along the normal, else number)."""
    inst = header.instances
    if all(i.position is not None and i.orientation is not None for i in inst):
        o = np.asarray(inst[0].orientation)
        normal = np.cross(o[:3], o[3:])
        order = sorted(
            range(len(inst)),
            key=lambda j: (float(np.dot(inst[j].position, normal)), inst[j].number or 0),
        )
    elif all(i.number is not None for i in inst):
        order = sorted(range(len(inst)), key=lambda j: inst[j].number)  # type: ignore[arg-type,return-value]
    else:
        order = sorted(range(len(inst)), key=lambda j: str(inst[j].path))
    return replace(header, instances=tuple(inst[j] for j in order))


def header_grid(header: SeriesHeader) -> tuple[Grid, bool]:
    """The geometry of a whole series from its headers (reads one header, no pixels).

    Returns
    -------
    grid : Grid
    has_position : bool
        False when ``ImagePositionPatient``/``ImageOrientationPatient`` are missing; the grid is
        then local (slices ``SliceThickness`` apart) and says nothing about patient space.
    """
    try:
        first_ds = pydicom.dcmread(header.instances[0].path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - the file changed or vanished since the scan
        raise InputError(f"{header.instances[0].path}: unreadable DICOM ({exc})") from None
    return _geometry(header, header.instances, first_ds.get("PixelSpacing"))


def _geometry(
    header: SeriesHeader, instances: Sequence[Instance], pixel_spacing
) -> tuple[Grid, bool]:
    rows, cols = instances[0].rows, instances[0].cols
    if pixel_spacing is None or len(pixel_spacing) != 2 or min(pixel_spacing) <= 0:
        raise InputError(f"{header.label()}: no valid PixelSpacing")
    spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    have_pos = all(i.position is not None and i.orientation is not None for i in instances)
    if have_pos:
        o = np.asarray(instances[0].orientation, dtype=np.float64)
        if any(not np.allclose(i.orientation, o, atol=1e-4) for i in instances):
            raise InputError(f"{header.label()}: slices have different orientations")
        row_dir = o[:3] / np.linalg.norm(o[:3])
        col_dir = o[3:] / np.linalg.norm(o[3:])
        normal = np.cross(row_dir, col_dir)
        pos = np.asarray([i.position for i in instances], dtype=np.float64)
        z = pos @ normal
        if len(z) > 1 and np.min(np.diff(z)) < _SAME_POSITION_MM:
            raise InputError(
                f"{header.label()}: two slices at the same position "
                "(several acquisitions in one series?)"
            )
        # Slices must stack straight along the normal; a tilted gantry shears them.
        inplane = pos - np.outer(z - z[0], normal) - pos[0]
        if np.abs(inplane).max(initial=0.0) > 0.05 * min(spacing):
            raise InputError(f"{header.label()}: slices are sheared (gantry tilt); not supported")
        origin = pos[0]
    else:
        row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
        step = header.slice_thickness or 1.0
        z = np.arange(len(instances), dtype=np.float64) * step
        origin = np.zeros(3)
    grid = Grid(
        origin=origin,
        row_dir=row_dir,
        col_dir=col_dir,
        spacing=spacing,
        positions=z,
        shape=(len(instances), rows, cols),
        thickness=header.slice_thickness or 1.0,
    )
    return grid, have_pos


def load_series(
    header: SeriesHeader,
    *,
    require_ct: bool = True,
    roi: np.ndarray | None = None,
    progress: bool = False,
) -> Series:
    """Read a series' pixels and rescale them to HU.

    Parameters
    ----------
    header : SeriesHeader
        From :func:`scan_dicom`.
    require_ct : bool
        Refuse series whose ``Modality`` is not ``CT``.
    roi : ndarray (N, 3), optional
        Patient points (mm). Only the slices spanning them along the normal (plus one slice
        either side, for interpolation) are read: a lesion needs a few slices, not the study.
    progress : bool
        Show a progress bar on stderr.

    Raises
    ------
    InputError
        Not CT (with ``require_ct``), multi-frame files, missing pixel data or spacing,
        inconsistent orientation, duplicate or sheared slice positions.
    """
    if require_ct and header.modality.upper() != "CT":
        raise InputError(
            f"{header.label()}: modality is {header.modality or 'unknown'}, CT required"
        )
    if any(i.frames > 1 for i in header.instances):
        raise InputError(
            f"{header.label()}: multi-frame (enhanced) DICOM is not supported; "
            "convert to one file per slice"
        )
    instances = list(header.instances)
    first = 0
    grid, have_pos = header_grid(header)
    if roi is not None and have_pos and len(instances) > 1:
        w = np.asarray(roi, dtype=np.float64).reshape(-1, 3) @ grid.normal
        lo = max(int(np.searchsorted(grid.positions, w.min(), side="right")) - 2, 0)
        hi = min(int(np.searchsorted(grid.positions, w.max(), side="left")) + 2, len(instances))
        if hi <= lo:  # the region misses the series: keep the nearest slice for a clear result
            lo = min(max(lo, 0), len(instances) - 1)
            hi = lo + 1
        first, instances = lo, instances[lo:hi]
        grid = replace(
            grid,
            origin=grid.index_to_world(np.array([lo, 0.0, 0.0])),
            positions=grid.positions[lo:hi],
            shape=(hi - lo, grid.shape[1], grid.shape[2]),
        )
    slices = []
    with progress_bar(
        f"reading {header.description or header.uid}", len(instances), enabled=progress
    ) as advance:
        for inst in instances:
            try:
                ds = pydicom.dcmread(inst.path)
            except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
                raise InputError(f"{inst.path}: unreadable DICOM ({exc})") from None
            if "PixelData" not in ds and "FloatPixelData" not in ds:
                raise InputError(f"{inst.path}: no pixel data")
            try:
                arr = ds.pixel_array
            except Exception as exc:  # noqa: BLE001 - codec missing or corrupt data
                raise InputError(f"{inst.path}: cannot decode pixel data ({exc})") from None
            if arr.ndim != 2:
                raise InputError(f"{inst.path}: expected a greyscale image, got shape {arr.shape}")
            slices.append(np.asarray(apply_modality_lut(arr, ds), dtype=np.float32))
            advance(1)
    hu = np.stack(slices)
    hu.setflags(write=False)
    return Series(header=header, hu=hu, grid=grid, has_position=have_pos, first_slice=first)


def only_ct(headers: Sequence[SeriesHeader], source: str | Path = "study") -> list[SeriesHeader]:
    """The CT series among ``headers``; :class:`InputError` naming what was found if none."""
    ct = [h for h in headers if h.modality.upper() == "CT"]
    if not ct:
        counts: dict[str, int] = {}
        for h in headers:
            counts[h.modality or "unknown"] = counts.get(h.modality or "unknown", 0) + 1
        found = ", ".join(f"{m}: {n} series" for m, n in sorted(counts.items()))
        raise InputError(f"{source}: no CT series (found {found})")
    return ct
