"""The de-identification profile: PS3.15 Annex E's Basic Application Level Confidentiality
Profile and the options a user may ask for by name.

Each option is one column of the standard's Table E.1-1 and has a code from CID 7050
("De-identification Method"), written into every exported DICOM file's
De-identification Method Code Sequence so a receiver can tell what was done.
"""

from __future__ import annotations

from dataclasses import dataclass

# PS3.16 CID 7050, coding scheme DCM.
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
CLEAN_DESCRIPTORS_CODE = ("113105", "Clean Descriptors Option")
RETAIN_DATES_CODE = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
RETAIN_PATIENT_CODE = ("113108", "Retain Patient Characteristics Option")
RETAIN_DEVICE_CODE = ("113109", "Retain Device Identity Option")
RETAIN_SAFE_PRIVATE_CODE = ("113111", "Retain Safe Private Option")


@dataclass(frozen=True)
class Profile:
    """Which Annex E options a de-identification applies.

    Parameters
    ----------
    retain_dates : bool
        Retain Longitudinal Temporal Information with Modified Dates: every date of a patient
        moves back by the same keyed number of days (intervals survive); times are kept.
        When False, dates and times follow the basic profile (removed or emptied).
    retain_patient_characteristics : bool
        Retain Patient Characteristics: age, sex, size, weight and similar are kept.
    retain_device_identity : bool
        Retain Device Identity: manufacturer's model, serial numbers, station name are kept.
    clean_descriptors : bool
        Clean Descriptors: short descriptions (study, series, protocol, ...) are kept when
        they contain none of the file's identifying values (names, IDs, institution, dates)
        and no date or long number; otherwise they are removed. Free-text comments and
        histories (LT, ST, UT) are always removed: they may name anyone.
    private_allow : tuple of str
        Private tags kept, as ``"gggg,eeee"`` hex (the element may use ``xx`` for the block,
        e.g. ``"0019,xx0c"``) optionally prefixed with the private creator,
        ``"SIEMENS MR HEADER/0019,xx0c"``. All other private tags are removed.

    Examples
    --------
    >>> Profile(retain_device_identity=False, clean_descriptors=False).describe()
    'DICOM PS3.15 E basic + retain dates (modified) + retain patient characteristics'
    >>> [c for c, _ in Profile(retain_dates=False).codes()]
    ['113100', '113108', '113109', '113105']
    """

    retain_dates: bool = True
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = True
    clean_descriptors: bool = True
    private_allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a list given by a caller would make the frozen dataclass unhashable
        object.__setattr__(self, "private_allow", tuple(self.private_allow))

    def describe(self) -> str:
        """One line saying what was applied, for the manifest."""
        parts = ["DICOM PS3.15 E basic"]
        if self.retain_dates:
            parts.append("retain dates (modified)")
        if self.retain_patient_characteristics:
            parts.append("retain patient characteristics")
        if self.retain_device_identity:
            parts.append("retain device identity")
        if self.clean_descriptors:
            parts.append("clean descriptors")
        if self.private_allow:
            parts.append(f"retain {len(self.private_allow)} allow-listed private tags")
        return " + ".join(parts)

    def codes(self, pixels_cleaned: bool = False) -> list[tuple[str, str]]:
        """The CID 7050 (code value, meaning) pairs of this profile, basic first.

        ``pixels_cleaned`` adds the Clean Pixel Data option for a file whose burned-in text
        was masked.
        """
        codes = [BASIC_CODE]
        if pixels_cleaned:
            codes.append(CLEAN_PIXEL_CODE)
        if self.retain_dates:
            codes.append(RETAIN_DATES_CODE)
        if self.retain_patient_characteristics:
            codes.append(RETAIN_PATIENT_CODE)
        if self.retain_device_identity:
            codes.append(RETAIN_DEVICE_CODE)
        if self.clean_descriptors:
            codes.append(CLEAN_DESCRIPTORS_CODE)
        if self.private_allow:
            codes.append(RETAIN_SAFE_PRIVATE_CODE)
        return codes
