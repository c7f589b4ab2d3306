"""What one input becomes: an exported file, or a file held back with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Identifiers:
    """The identifying values an input carried: recorded in the linkage table, and what
    ``deid check`` must no longer find anywhere in the export.

    ``patient_id`` is the key of the pseudonym; ``values`` holds every other identifying
    string met (names, birth date, accession and other IDs, institution, …) by what it was.
    """

    patient_id: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Exported:
    """A file written to the export (``path`` relative to the export folder)."""

    path: Path
    case: str  # the patient's pseudonym
    study: str  # pseudonymised study label ("" when the input has no study)
    modality: str  # DICOM modality, or "SM" for slides, "XC"/"OT" style code for plain images
    profile: str  # what was applied, e.g. "DICOM PS3.15 E basic + retain dates (modified) ..."
    identifiers: Identifiers
    masked_regions: int = 0  # burned-in text regions painted over


@dataclass(frozen=True)
class HeldBack:
    """An input that was not exported (it could not be made safe with confidence)."""

    path: Path  # the input, as given
    reason: str
