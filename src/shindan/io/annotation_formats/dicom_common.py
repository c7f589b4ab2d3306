"""What the DICOM formats share: the source image they reference, codes, equipment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shindan import __version__
from shindan.errors import AnnotationError
from shindan.io.annotation_formats.model import Annotations

NEEDS_SOURCE = (
    "DICOM annotations and segmentations reference the DICOM image they annotate: give "
    "--image SOURCE.dcm (a non-DICOM slide must be converted to DICOM first, e.g. with "
    "wsidicomizer)"
)


def load_source(image: Path | None, out: Path) -> Any:
    """The DICOM source image dataset (pixel data not loaded), or a one-line error."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if image is None:
        raise AnnotationError(f"{out}: {NEEDS_SOURCE}")
    try:
        ds = pydicom.dcmread(image, stop_before_pixels=True)
    except FileNotFoundError:
        raise AnnotationError(f"{image}: no such file") from None
    except (InvalidDicomError, OSError, ValueError):
        raise AnnotationError(f"{image}: not a DICOM image; {NEEDS_SOURCE}") from None
    if "Rows" not in ds or "StudyInstanceUID" not in ds:
        raise AnnotationError(f"{image}: a DICOM file without an image; {NEEDS_SOURCE}")
    return ds


def source_size(ds: Any) -> tuple[int, int]:
    """(width, height) of a DICOM image: its total pixel matrix for a tiled slide."""
    if "TotalPixelMatrixColumns" in ds:
        return int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
    return int(ds.Columns), int(ds.Rows)


def pixel_spacing_mpp(ds: Any) -> float | None:
    """µm/px from a DICOM dataset's pixel spacing (mm), shared functional groups first."""
    try:
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    except (AttributeError, IndexError, KeyError):
        spacing = ds.get("PixelSpacing")
    try:
        return float(spacing[0]) * 1000.0 if spacing else None
    except (TypeError, ValueError, IndexError):
        return None


def check_size(annotations: Annotations, ds: Any, image: Path) -> None:
    """A one-line error when the annotations were made on an image of another size."""
    size = source_size(ds)
    if annotations.image_size is not None and tuple(annotations.image_size) != size:
        w, h = annotations.image_size
        raise AnnotationError(
            f"{image}: is {size[0]}x{size[1]} pixels but the annotations are for a {w}x{h} image"
        )


def coded(code: tuple[str, str, str]) -> Any:
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(*code)


def category() -> Any:
    from pydicom.sr.codedict import codes

    return codes.SCT.AnatomicalStructure


def equipment() -> dict[str, Any]:
    """The equipment attributes highdicom asks of every derived object."""
    return {
        "manufacturer": "shindan",
        "manufacturer_model_name": "shindan annotations convert",
        "software_versions": __version__,
        "device_serial_number": "0",
    }


def read_dicom(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise AnnotationError(f"{path}: not a readable DICOM file ({exc})") from None


def sop_class(path: Path) -> str | None:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
    except Exception:  # any unreadable file is simply "not this format"
        return None
