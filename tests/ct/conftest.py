"""CT fixtures: DICOM series built with pydicom, and phantom studies/cohorts (session-scoped)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from shindan.ct.phantom import write_cohort, write_study


def write_slice(
    path: Path,
    hu: np.ndarray,
    *,
    series_uid: str,
    position: Sequence[float] | None,
    orientation: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    spacing: Sequence[float] | None = (0.8, 0.8),
    number: int | None = 1,
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    description: str = "",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    pixels: bool = True,
    thickness: float | None = 2.0,
) -> Path:
    """One DICOM slice whose stored values are ``(hu - intercept) / slope`` (int16)."""
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = description
    if number is not None:
        ds.InstanceNumber = number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if spacing is not None:
        ds.PixelSpacing = [float(v) for v in spacing]
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    stored = np.rint((np.asarray(hu, np.float64) - intercept) / slope).astype(np.int16)
    if pixels:
        ds.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
    else:
        ds.Rows, ds.Columns = stored.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation, ds.SamplesPerPixel = 1, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory):
    """One malignant four-phase phantom study and its truth."""
    return write_study(tmp_path_factory.mktemp("ct") / "study", "malignant", seed=3)


@pytest.fixture(scope="session")
def train_cohort(tmp_path_factory) -> Path:
    """cases.csv of 20 phantom studies (10 benign, 10 malignant) for training."""
    return write_cohort(tmp_path_factory.mktemp("ct-train"), 20, seed=11)


@pytest.fixture(scope="session")
def test_cohort(tmp_path_factory) -> Path:
    """cases.csv of 16 other phantom studies for evaluation."""
    return write_cohort(tmp_path_factory.mktemp("ct-test"), 16, seed=12)
