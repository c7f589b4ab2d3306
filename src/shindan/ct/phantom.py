"""Synthetic multiphase renal CT studies with known truth, written as real DICOM files.

No kidney CT ships with shindan, so tests, demos and benchmarks use these phantoms: a body
with a kidney and a spherical "lesion" scanned in four contrast phases, each phase a separate
DICOM series with its own slice spacing, pixel size, field of view, rescale slope/intercept and
(optionally) in-plane rotation, files in shuffled order with random names. Benign and malignant
lesions differ in their enhancement over the phases (malignant: avid corticomedullary
enhancement with wash-out, like clear-cell RCC; benign: slow, persistent enhancement), with
per-case variation so a classifier has something real (if simple) to learn.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from shindan.ct.phases import PHASES
from shindan.util.atomic import atomic_dir, check_output_folder

__all__ = [
    "CLASSES",
    "ENHANCEMENT",
    "PhaseScan",
    "StudyTruth",
    "write_cohort",
    "write_study",
]

CLASSES = ("benign", "malignant")

# Mean HU per phase (non-contrast, corticomedullary, nephrographic, excretory).
ENHANCEMENT: dict[str, tuple[float, float, float, float]] = {
    "cortex": (35.0, 190.0, 160.0, 120.0),
    "medulla": (35.0, 70.0, 150.0, 110.0),
    "malignant": (35.0, 160.0, 100.0, 70.0),
    "benign": (40.0, 70.0, 105.0, 95.0),
    "soft": (40.0, 60.0, 80.0, 70.0),
    "fat": (-100.0, -100.0, -95.0, -95.0),
}

_DESCRIPTIONS = {
    "non-contrast": "ABD NON-CONTRAST 5.0",
    "corticomedullary": "RENAL ARTERIAL 2.5 B30f",
    "nephrographic": "Nephrographic 3.0",
    "excretory": "EXCRETORY DELAYED 4.0",
}


@dataclass(frozen=True)
class PhaseScan:
    """How one phase is scanned: grid, rescale, and the series description."""

    rows: int = 48
    cols: int = 48
    pixel_mm: float = 2.0
    slice_mm: float = 3.0
    n_slices: int = 12
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # grid shift vs the centred grid
    rotation_deg: float = 0.0  # in-plane rotation of the image axes about the body axis
    slope: float = 1.0
    intercept: float = -1024.0
    signed: bool = False
    description: str = ""


DEFAULT_SCANS: dict[str, PhaseScan] = {
    "non-contrast": PhaseScan(
        rows=44,
        cols=44,
        pixel_mm=2.2,
        slice_mm=5.0,
        n_slices=8,
        offset_mm=(1.3, -0.7, 1.0),
        slope=0.5,
        intercept=-1000.0,
        signed=True,
    ),
    "corticomedullary": PhaseScan(
        rows=52,
        cols=52,
        pixel_mm=1.9,
        slice_mm=2.5,
        n_slices=15,
        offset_mm=(-0.9, 0.6, -0.5),
        slope=1.0,
        intercept=-1024.0,
    ),
    "nephrographic": PhaseScan(
        rows=48, cols=48, pixel_mm=2.0, slice_mm=3.0, n_slices=12, slope=1.0, intercept=-1024.0
    ),
    "excretory": PhaseScan(
        rows=48,
        cols=48,
        pixel_mm=2.1,
        slice_mm=4.0,
        n_slices=10,
        offset_mm=(0.5, 1.1, 0.7),
        rotation_deg=8.0,
        slope=2.0,
        intercept=-2048.0,
    ),
}


@dataclass(frozen=True)
class StudyTruth:
    """What a phantom study holds.

    Attributes
    ----------
    folder : Path
    label : str
        ``benign`` or ``malignant``.
    centre_mm : (x, y, z)
        Lesion centre in patient coordinates (mm).
    radius_mm : float
    box_mm : ((x0, y0, z0), (x1, y1, z1))
        A box around the lesion (patient mm).
    lesion_hu : dict
        phase → mean lesion HU (before noise).
    series : dict
        phase → SeriesInstanceUID.
    descriptions : dict
        phase → SeriesDescription.
    """

    folder: Path
    label: str
    centre_mm: tuple[float, float, float]
    radius_mm: float
    box_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    lesion_hu: dict[str, float]
    series: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)


def _ellipsoid(p: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return (((p - centre) / axes) ** 2).sum(axis=-1)


def phantom_hu(
    points: np.ndarray,
    phase_index: int,
    lesion_centre: np.ndarray,
    lesion_radius: float,
    lesion_hu: float,
) -> np.ndarray:
    """Noise-free HU of the phantom at patient points ``(..., 3)`` mm in one phase."""
    body = _ellipsoid(points, np.array([0.0, 0.0, 0.0]), np.array([44.0, 34.0, 1e9]))
    kidney = _ellipsoid(points, np.array([8.0, 4.0, 0.0]), np.array([22.0, 14.0, 30.0]))
    medulla = _ellipsoid(points, np.array([8.0, 4.0, 0.0]), np.array([13.0, 7.0, 20.0]))
    lesion = np.linalg.norm(points - lesion_centre, axis=-1) / lesion_radius
    hu = np.full(points.shape[:-1], -1000.0)
    hu = np.where(body <= 1, ENHANCEMENT["soft"][phase_index], hu)
    hu = np.where((body <= 1) & (body > 0.75), ENHANCEMENT["fat"][phase_index], hu)
    hu = np.where(kidney <= 1, ENHANCEMENT["cortex"][phase_index], hu)
    hu = np.where(medulla <= 1, ENHANCEMENT["medulla"][phase_index], hu)
    return np.where(lesion <= 1, lesion_hu, hu)


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _write_series(
    folder: Path,
    scan: PhaseScan,
    phase: str,
    phase_index: int,
    study_uid: str,
    series_uid: str,
    series_number: int,
    centre: np.ndarray,
    radius: float,
    lesion_hu: float,
    rng: np.random.Generator,
    noise_hu: float,
    patient: dict[str, str],
    names: list[str],
) -> None:
    theta = math.radians(scan.rotation_deg)
    row_dir = np.array([math.cos(theta), math.sin(theta), 0.0])
    col_dir = np.array([-math.sin(theta), math.cos(theta), 0.0])
    half = np.array([(scan.cols - 1) / 2, (scan.rows - 1) / 2]) * scan.pixel_mm
    z0 = -(scan.n_slices - 1) / 2 * scan.slice_mm
    off = np.asarray(scan.offset_mm)
    rr, cc = np.meshgrid(np.arange(scan.rows), np.arange(scan.cols), indexing="ij")
    numbers = list(range(1, scan.n_slices + 1))[::-1]  # head-first numbering: 1 = top slice
    for k in range(scan.n_slices):
        ipp = (
            off
            - half[0] * row_dir
            - half[1] * col_dir
            + np.array([0.0, 0.0, z0 + k * scan.slice_mm])
        )
        pts = (
            ipp + cc[..., None] * scan.pixel_mm * row_dir + rr[..., None] * scan.pixel_mm * col_dir
        )
        hu = phantom_hu(pts, phase_index, centre, radius, lesion_hu)
        hu = hu + rng.normal(0.0, noise_hu, hu.shape)
        stored = np.rint((hu - scan.intercept) / scan.slope)
        dtype = np.int16 if scan.signed else np.uint16
        info = np.iinfo(dtype)
        stored = np.clip(stored, info.min, info.max).astype(dtype)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = _uid(series_uid, k)
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "CT"
        ds.PatientName = patient["name"]
        ds.PatientID = patient["id"]
        ds.PatientSex = patient["sex"]
        ds.PatientAge = patient["age"]
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.InstanceNumber = numbers[k]
        ds.SeriesDescription = scan.description or _DESCRIPTIONS.get(phase, phase)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.AcquisitionTime = f"1200{10 * phase_index:02d}"
        ds.ImagePositionPatient = [round(float(v), 4) for v in ipp]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [scan.pixel_mm, scan.pixel_mm]
        ds.SliceThickness = scan.slice_mm
        ds.RescaleSlope = scan.slope
        ds.RescaleIntercept = scan.intercept
        ds.RescaleType = "HU"
        ds.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
        ds.save_as(folder / names.pop(), enforce_file_format=True)


def write_study(
    out_dir: str | Path,
    label: str,
    *,
    seed: int = 0,
    radius_mm: float = 9.0,
    centre_mm: tuple[float, float, float] | None = None,
    phases: tuple[str, ...] = PHASES,
    scans: dict[str, PhaseScan] | None = None,
    noise_hu: float = 10.0,
    variation_hu: float = 15.0,
    patient: dict[str, str] | None = None,
) -> StudyTruth:
    """Write one synthetic multiphase renal CT study (one DICOM file per slice).

    Parameters
    ----------
    out_dir : path
        Study folder to create; written under a temporary name and renamed when complete.
    label : {"benign", "malignant"}
        Sets the lesion's enhancement pattern (:data:`ENHANCEMENT`).
    seed : int
        Noise, per-case enhancement variation, file names and UIDs.
    radius_mm : float
        Lesion radius (mm).
    centre_mm : (x, y, z), optional
        Lesion centre (mm); default on the kidney's lateral edge.
    phases : tuple of str
        Phases to write (each a series).
    scans : dict, optional
        phase → :class:`PhaseScan` (default :data:`DEFAULT_SCANS`).
    noise_hu : float
        Gaussian image noise (HU, standard deviation).
    variation_hu : float
        Per-case random shift of the lesion HU in each phase (standard deviation).
    patient : dict, optional
        ``name``, ``id``, ``sex`` (M/F), ``age`` (DICOM age string, e.g. ``061Y``).
    """
    if label not in CLASSES:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}")
    rng = np.random.default_rng(seed)
    scans = {**DEFAULT_SCANS, **(scans or {})}
    centre = np.asarray(centre_mm if centre_mm is not None else (22.0, 6.0, 1.5), dtype=float)
    means = ENHANCEMENT[label]
    shift = rng.normal(0.0, variation_hu, 4)
    lesion_hu = {ph: float(means[i] + shift[i]) for i, ph in enumerate(PHASES)}
    patient = patient or {
        "name": f"PHANTOM^{seed}",
        "id": f"PH{seed:05d}",
        "sex": "O",
        "age": "060Y",
    }
    study_uid = _uid("study", seed, label)
    out = Path(out_dir)
    series: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    n_files = sum(scans[ph].n_slices for ph in phases)
    # Random, unordered file names: the loader must sort by position, not by name.
    names = [f"{rng.integers(0, 16**8):08x}" for _ in range(n_files)]
    rng.shuffle(names)
    with atomic_dir(out) as tmp:
        for number, phase in enumerate(phases, start=1):
            i = PHASES.index(phase)
            uid = _uid("series", seed, label, phase)
            series[phase] = uid
            scan = scans[phase]
            descriptions[phase] = scan.description or _DESCRIPTIONS.get(phase, phase)
            sub = tmp / f"s{number}"
            sub.mkdir()
            _write_series(
                sub,
                scan,
                phase,
                i,
                study_uid,
                uid,
                number,
                centre,
                radius_mm,
                lesion_hu[phase],
                rng,
                noise_hu,
                patient,
                names,
            )
    box = (tuple(float(v) for v in centre - radius_mm), tuple(float(v) for v in centre + radius_mm))
    return StudyTruth(
        folder=out,
        label=label,
        centre_mm=tuple(float(v) for v in centre),
        radius_mm=radius_mm,
        box_mm=box,
        lesion_hu=lesion_hu,
        series=series,
        descriptions=descriptions,
    )  # type: ignore[arg-type]


CASE_COLUMNS = (
    "case",
    "study",
    "x_min",
    "y_min",
    "z_min",
    "x_max",
    "y_max",
    "z_max",
    "box_units",
    "label",
    "age",
    "sex",
    "size_mm",
    "group",
)


def is_cohort_entry(name: str) -> bool:
    """Whether ``name`` is something :func:`write_cohort` writes (a rerun replaces those)."""
    return name == "cases.csv" or re.fullmatch(r"case\d{3,}", name) is not None


def write_cohort(
    out_dir: str | Path,
    n_cases: int,
    *,
    seed: int = 0,
    malignant_fraction: float = 0.5,
    noise_hu: float = 10.0,
    variation_hu: float = 15.0,
) -> Path:
    """Write ``n_cases`` phantom studies and ``cases.csv`` describing them; return the CSV.

    Ages, sexes and sizes are drawn so that malignancy is mildly associated with older age,
    male sex and larger size, as in renal-mass cohorts; the CSV has the columns
    :data:`CASE_COLUMNS` with ``study`` paths relative to the CSV.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    check_output_folder(out, is_cohort_entry)  # before any work
    with atomic_dir(out, owned=is_cohort_entry) as tmp:  # the whole cohort, or nothing
        _write_cases(tmp, n_cases, rng, malignant_fraction, noise_hu, variation_hu, seed)
    return out / "cases.csv"


def _write_cases(
    out: Path,
    n_cases: int,
    rng: np.random.Generator,
    malignant_fraction: float,
    noise_hu: float,
    variation_hu: float,
    seed: int,
) -> None:
    n_mal = int(round(n_cases * malignant_fraction))
    labels = np.array(["malignant"] * n_mal + ["benign"] * (n_cases - n_mal))
    rng.shuffle(labels)
    rows = []
    for i, label in enumerate(labels):
        mal = label == "malignant"
        age = int(np.clip(rng.normal(62 if mal else 55, 11), 25, 90))
        sex = "M" if rng.random() < (0.65 if mal else 0.45) else "F"
        radius = float(np.clip(rng.normal(10.0 if mal else 8.5, 1.5), 5.0, 13.0))
        centre = (22.0 + rng.normal(0, 1.5), 6.0 + rng.normal(0, 1.5), rng.normal(0, 3.0))
        name = f"case{i:03d}"
        truth = write_study(
            out / name,
            str(label),
            seed=seed * 100_003 + i,
            radius_mm=radius,
            centre_mm=centre,
            noise_hu=noise_hu,
            variation_hu=variation_hu,
            patient={"name": f"PHANTOM^{name}", "id": name, "sex": sex, "age": f"{age:03d}Y"},
        )
        (x0, y0, z0), (x1, y1, z1) = truth.box_mm
        rows.append(
            {
                "case": name,
                "study": name,
                "x_min": f"{x0:.2f}",
                "y_min": f"{y0:.2f}",
                "z_min": f"{z0:.2f}",
                "x_max": f"{x1:.2f}",
                "y_max": f"{y1:.2f}",
                "z_max": f"{z1:.2f}",
                "box_units": "mm",
                "label": label,
                "age": age,
                "sex": sex,
                "size_mm": f"{2 * radius:.1f}",
                "group": name,
            }
        )
    with (out / "cases.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CASE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
