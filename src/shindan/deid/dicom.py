"""De-identification of DICOM files and DICOMDIRs: PS3.15 Annex E with keyed pseudonyms.

Every attribute gets the action Table E.1-1 (:file:`annex_e.csv`) gives it under the chosen
:class:`~shindan.deid.profile.Profile`; attributes the table does not list still pass three
safety nets: every person name (PN) is emptied, every date (DA, DT) is shifted or emptied, and
every kept text that contains one of the file's identifying values (names, IDs, birth date,
institution, ...) is emptied. UIDs are remapped with the site's keyed
:meth:`~shindan.deid.pseudonyms.Pseudonymiser.uid`, so the same input UID becomes the same
``2.25.`` UID in every file and every export and references between objects stay valid.
Private attributes go unless allow-listed. Pixel data stay byte-identical unless burned-in
text had to be masked.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from shindan.deid.profile import Profile
from shindan.deid.pseudonyms import Pseudonymiser
from shindan.deid.records import Exported, HeldBack, Identifiers
from shindan.errors import InputError, ShindanError

__all__ = [
    "annex_e_action",
    "deidentify_dataset",
    "deidentify_dicom",
    "deidentify_dicomdir",
    "needs_masking",
]

# A masker takes the decoded pixels (frames first when multi-frame, YBR decoded to RGB) and
# the dataset, and returns .pixels, .regions, .confident, .reason (burned_in.MaskResult).
Masker = Callable[[np.ndarray, Dataset], Any]

_TABLE = Path(__file__).with_name("annex_e.csv")

# Option columns of annex_e.csv and the Profile flag that turns each on; the others
# (retain UIDs, institution identity, full dates, clean structured content / graphics) are
# not offered, so their attributes get the basic action.
_OPTION_FLAGS = {
    "retain_long_modified_dates": "retain_dates",
    "retain_patient_characteristics": "retain_patient_characteristics",
    "retain_device_identity": "retain_device_identity",
    "clean_descriptors": "clean_descriptors",
}

# Free text the table does not list but that may carry anything a person typed: SR TEXT
# content items and presentation-state text annotations. Handled as descriptors.
# Also: the patient's dates in another calendar (a Japanese era date is a birth date too) and
# the groupings that name where a patient ID came from, which annex_e.csv's edition of the
# table does not list.
_EXTRA_RULES = {
    0x0040A160: ("Z", {"clean_descriptors": "C"}),  # Text Value
    0x00700006: ("Z", {"clean_descriptors": "C"}),  # Unformatted Text Value
    0x00100033: ("X", {}),  # Patient's Birth Date in Alternative Calendar
    0x00100034: ("X", {}),  # Patient's Death Date in Alternative Calendar
    0x00100035: ("X", {}),  # Patient's Alternative Calendar
    0x00100024: ("X", {}),  # Issuer of Patient ID Qualifiers Sequence
    0x00100026: ("X", {}),  # Source Patient Group Identification Sequence
    0x00100027: ("X", {}),  # Group of Patients Identification Sequence
}

# Identifying values recorded for the linkage table (beyond every person name and date).
_ID_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "StudyID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "MedicalRecordLocator",
        "AdmissionID",
        "ServiceEpisodeID",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "ClinicalTrialSubjectID",
        "ClinicalTrialSubjectReadingID",
        "InsurancePlanIdentification",
        "SpecimenAccessionNumber",
        "SpecimenIdentifier",
        "ContainerIdentifier",
        "BarcodeValue",
        "LabelText",
        "RegionOfResidence",
        "StudyInstanceUID",
    }
)
# Values that earlier anonymisers leave behind: not identifying, never recorded as such.
_PLACEHOLDERS = frozenset(
    {"", "removed", "anonymized", "anonymised", "anonymous", "anon", "unknown", "none", "n/a"}
)
_DUMMY_TEXT = "ANONYMIZED"
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_DATE_LIKE = re.compile(r"\d{8}|\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}|\d{6,}")
_CLEAN_PIXEL_MODALITIES = frozenset({"US", "SC", "OT", "XC"})
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_ENCAPSULATED_DOCUMENT = "1.2.840.10008.5.1.4.1.1.104"
_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass(frozen=True)
class _Rule:
    basic: str
    options: Mapping[str, str]


@functools.cache
def _table() -> tuple[dict[int, _Rule], tuple[tuple[int, int, _Rule], ...], _Rule]:
    """Table E.1-1: exact tags, repeating-group patterns (mask, value), the private row."""
    exact: dict[int, _Rule] = {}
    patterns: list[tuple[int, int, _Rule]] = []
    private = _Rule("X", {})
    with open(_TABLE, newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        for row in rows:
            options = {k: v for k, v in row.items() if k in _OPTION_FLAGS and v}
            rule = _Rule(row["basic"], options)
            tag = row["tag"]
            if tag == "private":
                private = rule
            elif "x" in tag:
                mask = int("".join("0" if c == "x" else "f" for c in tag), 16)
                patterns.append((mask, int(tag.replace("x", "0"), 16), rule))
            else:
                exact[int(tag, 16)] = rule
    for tag, (basic, options) in _EXTRA_RULES.items():
        exact.setdefault(tag, _Rule(basic, options))
    return exact, tuple(patterns), private


def _rule(tag: int) -> _Rule | None:
    exact, patterns, _ = _table()
    rule = exact.get(tag)
    if rule is None:
        for mask, value, candidate in patterns:
            if tag & mask == value:
                return candidate
    return rule


def annex_e_action(tag: int, vr: str, profile: Profile) -> str:
    """The action taken on one standard attribute under ``profile``.

    Parameters
    ----------
    tag : int
        The attribute's tag, e.g. ``0x00100010``.
    vr : str
        Its value representation.
    profile : Profile
        The options in force.

    Returns
    -------
    action : str
        ``"K"`` keep (sequences: keep and clean the items), ``"X"`` remove, ``"Z"`` empty,
        ``"D"`` dummy value, ``"U"`` remap UIDs, ``"S"`` shift dates (keep times),
        ``"C"`` keep if the text carries none of the file's identifying values.

    Examples
    --------
    >>> annex_e_action(0x00100010, "PN", Profile())  # Patient's Name
    'Z'
    >>> annex_e_action(0x00080020, "DA", Profile())  # Study Date, retain modified dates
    'S'
    >>> annex_e_action(0x00080020, "DA", Profile(retain_dates=False))
    'Z'
    >>> annex_e_action(0x00101010, "AS", Profile(retain_patient_characteristics=False))
    'X'
    >>> annex_e_action(0x0008103E, "LO", Profile()), annex_e_action(0x00104000, "LT", Profile())
    ('C', 'X')
    """
    rule = _rule(tag)
    if rule is None:
        if vr in ("DA", "DT"):
            return "S" if profile.retain_dates else "Z"
        if vr == "PN":
            return "Z"
        if vr == "UI":
            return "U"
        return "K"
    for column, flag in _OPTION_FLAGS.items():
        option = rule.options.get(column)
        if option and getattr(profile, flag):
            if column == "retain_long_modified_dates":
                return "S"
            if option == "K":
                return "K"
            if column == "clean_descriptors":
                if vr in ("LT", "ST", "UT"):
                    # free-text comments and histories may name anyone: not kept
                    continue
                return "C"
            # retain patient characteristics "C" (allergies, special needs, ...): free text
            # we cannot clean with confidence, so the basic action applies
    basic = rule.basic
    if "U" in basic:
        return "U"
    if basic in ("D", "X/D"):
        return "D"
    if "Z" in basic:
        return "Z"
    return "X"


# ----------------------------------------------------------------------------- helpers


def _is_class_uid(keyword: str, value: str) -> bool:
    """SOP class, transfer syntax, coding scheme and other well-known UIDs are kept."""
    return (
        value in UID_dictionary
        or keyword.endswith("ClassUID")
        or "TransferSyntax" in keyword
        or keyword in ("CodingSchemeUID", "ContextGroupExtensionCreatorUID")
    )


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None:
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return list(value)
    return [value]


def _text(value: Any) -> str:
    return str(value).strip().rstrip("\x00").strip()


def _alnum(value: str) -> str:
    """Letters and digits only, case-folded: "G.E. Medical Systems" == "GE MEDICAL SYSTEMS"."""
    return "".join(c for c in value.casefold() if c.isalnum())


def _walk(ds: Dataset) -> Iterator[tuple[Dataset, DataElement]]:
    """Every element of ``ds`` and of its sequence items, depth first."""
    for elem in list(ds):
        yield ds, elem
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                yield from _walk(item)


class _Context:
    """What one de-identification run learned and needs: patient, identifiers, options."""

    def __init__(self, pseudo: Pseudonymiser, profile: Profile, patient_id: str) -> None:
        self.pseudo = pseudo
        self.profile = profile
        self.patient_id = patient_id
        self.values: dict[str, str] = {}
        self._seen: set[str] = set()
        self._needles: list[str] = []
        self.public: set[str] = set()
        self.allow = _parse_allow(profile.private_allow)

    def record(self, key: str, value: str) -> None:
        value = _text(value)
        if value.casefold() in _PLACEHOLDERS or _alnum(value) in self.public:
            return
        if value in self._seen:
            return
        self._seen.add(value)
        name, n = key, 2
        while name in self.values:
            name, n = f"{key}#{n}", n + 1
        self.values[name] = value
        # what must not survive in kept text: the whole value and, for names and
        # multi-word values, each part long enough to be meaningful
        parts = {value} | {p for p in re.split(r"[\^\s,=]+", value) if len(p) >= 4}
        for part in parts:
            part = part.strip()
            if len(part) >= 3 and part.casefold() not in _PLACEHOLDERS:
                self._needles.append(part.casefold())

    def identifying(self, text: str) -> bool:
        folded = text.casefold()
        return any(needle in folded for needle in self._needles)

    def clean_text(self, text: str) -> bool:
        """A descriptor may stay: none of the identifying values, no dates or long numbers."""
        return not self.identifying(text) and not _DATE_LIKE.search(text)


def _parse_allow(entries: tuple[str, ...]) -> list[tuple[str | None, int, int, bool]]:
    """``"CREATOR/gggg,xxee"`` or ``"gggg,eeee"`` → (creator, group, element, in-block)."""
    allow = []
    for entry in entries:
        creator, _, tag = entry.rpartition("/")
        m = re.fullmatch(r"\(?([0-9a-fA-F]{4}),?([0-9a-fA-FxX]{4})\)?", tag.strip())
        if not m:
            raise InputError(
                f"private allow-list entry {entry!r}: use 'gggg,eeee' or 'CREATOR/gggg,xxee'"
            )
        group, element = m.group(1), m.group(2).lower()
        in_block = element.startswith("xx")
        number = int(element[2:] if in_block else element.replace("x", "0"), 16)
        allow.append((creator.strip() or None, int(group, 16), number, in_block))
    return allow


def _private_allowed(
    ds: Dataset, elem: DataElement, allow: list[tuple[str | None, int, int, bool]]
) -> bool:
    if not allow:
        return False
    group, element = elem.tag.group, elem.tag.element
    if element < 0x1000:  # private creators stay when an element of their block does
        return False
    creator_elem = ds.get((group, element >> 8))
    creator = _text(creator_elem.value) if creator_elem is not None else ""
    for want_creator, want_group, want_element, in_block in allow:
        if want_group != group or (want_creator is not None and want_creator != creator):
            continue
        if (element & 0xFF if in_block else element) == want_element:
            return True
    return False


def _shift(value: str, ctx: _Context) -> str | None:
    """A DA or DT value moved by the patient's offset; None if it is not a date."""
    value = _text(value)
    if not value:
        return value
    if not re.fullmatch(r"\d{8}.*", value):
        return None
    try:
        return ctx.pseudo.shift_date(value, ctx.patient_id)
    except ValueError:
        return None


def _dummy(elem: DataElement) -> Any:
    vr = elem.VR
    if vr in _TEXT_VRS:
        return _DUMMY_TEXT
    if vr == "DA":
        return "19000101"
    if vr == "DT":
        return "19000101000000"
    if vr == "TM":
        return "000000"
    if vr in ("IS", "DS"):
        return "0"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 0
    return None


def _empty(elem: DataElement) -> None:
    elem.value = Sequence() if elem.VR == "SQ" else None


# ----------------------------------------------------------------------------- core


# Kept in the clear by Annex E (not in Table E.1-1): a value equal to one of them (an
# institution name that is the manufacturer's) is not a secret of this patient.
_PUBLIC_KEYWORDS = ("Manufacturer", "ManufacturerModelName")


def _collect(ds: Dataset, ctx: _Context) -> None:
    """Record the identifying values of ``ds`` (before anything is changed)."""
    for keyword in _PUBLIC_KEYWORDS:
        value = _text(ds.get(keyword, "") or "")
        if value:
            ctx.public.add(_alnum(value))
    for _parent, elem in _walk(ds):
        if elem.tag.is_private or elem.VR == "SQ":
            continue
        keyword = elem.keyword
        try:
            values = _values(elem)
        except Exception:  # a value that does not decode is removed later anyway
            continue
        if elem.VR == "PN":
            for v in values:
                ctx.record(keyword or "PersonName", str(v))
        elif elem.VR in ("DA", "DT"):
            for v in values:
                text = _text(v)
                if re.fullmatch(r"\d{8}.*", text):
                    ctx.record(keyword or "Date", text[:8])
        elif keyword in _ID_KEYWORDS:
            for v in values:
                ctx.record(keyword, str(v))


def _clean(ds: Dataset, ctx: _Context) -> None:
    """Apply the profile to every element of ``ds``, recursively, in place."""
    # private creators are decided after their blocks
    creators: list[DataElement] = []
    for elem in list(ds):
        tag = elem.tag
        if tag.group in (0x0002,):  # file meta is rebuilt by the writer
            continue
        if tag.is_private:
            if tag.is_private_creator:
                creators.append(elem)
            elif _private_allowed(ds, elem, ctx.allow):
                if elem.VR == "SQ":
                    for item in elem.value or ():
                        _clean(item, ctx)
                elif elem.VR in _TEXT_VRS and ctx.identifying(" ".join(map(str, _values(elem)))):
                    del ds[tag]  # allow-listed, but this value names someone
            else:
                del ds[tag]
            continue
        if 0x5000 <= tag.group <= 0x501E or 0x6000 <= tag.group <= 0x601E:
            # curves and overlays: the table removes their data, the rest is orphaned
            if tag.group % 2 == 0:
                del ds[tag]
                continue
        if tag.element == 0x0000:  # group lengths are recomputed or obsolete
            del ds[tag]
            continue
        if not elem.keyword:
            # a public tag no dictionary knows: nothing says what it holds
            del ds[tag]
            continue
        _apply(ds, elem, annex_e_action(int(tag), elem.VR, ctx.profile), ctx)
    for creator in creators:
        block = creator.tag.element
        start = (creator.tag.group << 16) | (block << 8)
        if not any(start <= int(t) <= start + 0xFF for t in ds.keys()):
            del ds[creator.tag]


def _expected_vrs(tag: int) -> tuple[str, ...]:
    try:
        return tuple(pydicom.datadict.dictionary_VR(tag).split(" or "))
    except KeyError:
        return ()


def _apply(ds: Dataset, elem: DataElement, action: str, ctx: _Context) -> None:
    vr = elem.VR
    if action == "X":
        del ds[elem.tag]
        return
    expected = _expected_vrs(int(elem.tag))
    if expected and vr not in expected and vr != "UN" and action != "Z":
        # a value under the wrong VR (a date stored as numbers, a UID as text) would slip
        # past the action meant for it
        raise InputError(
            f"wrong VR {vr} for {elem.tag} {elem.keyword} (the standard says {'/'.join(expected)})"
        )
    if vr == "SQ":
        if action == "Z":
            _empty(elem)
        else:  # K, U, D, C, S on a sequence: keep it, clean every item
            for item in elem.value or ():
                _clean(item, ctx)
        return
    if vr == "UI":
        if action in ("Z",):
            _empty(elem)
        else:
            _remap_uids(elem, ctx)
        return
    if action == "Z":
        _empty(elem)
    elif action == "D":
        if vr in ("DA", "DT") and ctx.profile.retain_dates:
            _shift_elem(ds, elem, ctx)
        elif vr == "PN":
            # a person who must stay distinguishable (an SR's verifying observer): a keyed
            # pseudonym, the same in every file
            names = [_text(v) for v in _values(elem)]
            pseudonyms = [ctx.pseudo.patient(f"person:{n}") for n in names if n] or [_DUMMY_TEXT]
            elem.value = pseudonyms[0] if len(pseudonyms) == 1 else pseudonyms
        else:
            elem.value = _dummy(elem)
    elif action == "S":
        if vr in ("DA", "DT"):
            _shift_elem(ds, elem, ctx)
        elif vr in _TEXT_VRS and ctx.identifying(" ".join(map(str, _values(elem)))):
            _empty(elem)
    elif action == "C":
        text = " ".join(map(str, _values(elem)))
        if not ctx.clean_text(text):
            rule = _rule(int(elem.tag))
            if rule is not None and rule.basic in ("D", "X/D"):
                elem.value = _dummy(elem)
            elif rule is not None and "Z" not in rule.basic:
                del ds[elem.tag]
            else:
                _empty(elem)
    elif action == "K" and elem.tag.group != 0x0004:
        # (group 0004 is the DICOMDIR's structure: file IDs the export chose)
        # kept standard text still must not repeat a name, ID or date met elsewhere
        if vr in _TEXT_VRS and ctx.identifying(" ".join(map(str, _values(elem)))):
            _empty(elem)


def _shift_elem(ds: Dataset, elem: DataElement, ctx: _Context) -> None:
    shifted = [_shift(str(v), ctx) for v in _values(elem)]
    if any(v is None for v in shifted):
        _empty(elem)  # not a date we can move: it goes
    elif len(shifted) == 1:
        elem.value = shifted[0]
    else:
        elem.value = shifted


def _remap_uids(elem: DataElement, ctx: _Context) -> None:
    keyword = elem.keyword
    new = []
    for v in _values(elem):
        text = _text(v)
        new.append(text if not text or _is_class_uid(keyword, text) else ctx.pseudo.uid(text))
    if not new:
        return
    elem.value = new[0] if len(new) == 1 else new


def _patient_id(ds: Dataset) -> str:
    """The key of the patient's pseudonym: Patient ID, else name and birth date, else study."""
    pid = _text(ds.get("PatientID", "") or "")
    if pid:
        return pid
    name = _text(ds.get("PatientName", "") or "")
    if name:
        return f"name:{name}|{_text(ds.get('PatientBirthDate', '') or '')}"
    study = _text(ds.get("StudyInstanceUID", "") or "")
    return f"study:{study}" if study else ""


def _method_elements(ds: Dataset, profile: Profile, pixels_cleaned: bool) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [p[:64] for p in profile.describe().split(" + ")] + (
        ["clean pixel data"] if pixels_cleaned else []
    )
    items = []
    for value, meaning in profile.codes(pixels_cleaned=pixels_cleaned):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if profile.retain_dates else "REMOVED"


def deidentify_dataset(
    ds: Dataset, pseudo: Pseudonymiser, profile: Profile, *, patient_id: str | None = None
) -> tuple[Dataset, Identifiers]:
    """Apply the profile to a dataset already in memory (a copy is changed, not ``ds``).

    Parameters
    ----------
    ds : Dataset
        The dataset (its pixel data are not looked at).
    pseudo : Pseudonymiser
        The site's pseudonyms, UIDs and date shifts.
    profile : Profile
        The Annex E options.
    patient_id : str, optional
        The patient whose pseudonym and date shift apply; by default the dataset's own.

    Returns
    -------
    clean : Dataset
        The de-identified copy: Patient ID and Name are the pseudonym, Study ID the
        pseudonymised study label.
    identifiers : Identifiers
        The patient ID and every identifying value met, for the linkage table.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName, ds.PatientID, ds.StudyDate = "Doe^Jane", "12345", "20200131"
    >>> ds.StudyInstanceUID = "1.2.3.4"
    >>> clean, ids = deidentify_dataset(ds, Pseudonymiser(b"k" * 32, "SITE"), Profile())
    >>> clean.PatientID.startswith("SITE-"), clean.StudyDate < "20200131", ids.patient_id
    (True, True, '12345')
    >>> ds.PatientName  # the input is untouched
    'Doe^Jane'
    """
    import copy

    # pixel data are never changed here: share them instead of copying megabytes
    pixel_tags = [Tag(t) for t in (0x7FE00008, 0x7FE00009, 0x7FE00010) if t in ds._dict]
    pixels = {t: ds._dict.pop(t) for t in pixel_tags}
    try:
        clean = copy.deepcopy(ds)
    finally:
        ds._dict.update(pixels)
    clean._dict.update(pixels)
    return _deidentify_in_place(clean, pseudo, profile, patient_id)


def _deidentify_in_place(
    clean: Dataset, pseudo: Pseudonymiser, profile: Profile, patient_id: str | None
) -> tuple[Dataset, Identifiers]:
    pid = _patient_id(clean) if patient_id is None else patient_id
    ctx = _Context(pseudo, profile, pid)
    _collect(clean, ctx)
    study_uid = _text(clean.get("StudyInstanceUID", "") or "")
    _clean(clean, ctx)
    pseudonym = pseudo.patient(pid)
    if "PatientName" in clean or "PatientID" in clean or "SOPInstanceUID" in clean:
        clean.PatientName = pseudonym
        clean.PatientID = pseudonym
    if "StudyInstanceUID" in clean or "StudyID" in clean:
        clean.StudyID = pseudo.study(pid, study_uid)
    return clean, Identifiers(patient_id=pid, values=dict(ctx.values))


# ----------------------------------------------------------------------------- files


def needs_masking(ds: Dataset) -> bool:
    """Whether an image may carry burned-in text: Burned In Annotation YES, ultrasound,
    secondary capture and other screen-like modalities (US, SC, OT, XC).

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset(); ds.Modality = "US"; ds.PixelData = b"\\0\\0"
    >>> needs_masking(ds)
    True
    """
    if "PixelData" not in ds:
        return False
    if _text(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
        return True
    if _text(ds.get("Modality", "") or "").upper() in _CLEAN_PIXEL_MODALITIES:
        return True
    sop_class = _text(ds.get("SOPClassUID", "") or "")
    # 1.2.840.10008.5.1.4.1.1.7 and .7.x; not 1.2.840.10008.5.1.4.1.1.77.x (VL, slides)
    return sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + ".")


def _label_image(ds: Dataset) -> str:
    """Why an image is a slide's label or overview (which shows the label), or ""."""
    image_type = [_text(v).upper() for v in _values(ds["ImageType"])] if "ImageType" in ds else []
    if _text(ds.get("SOPClassUID", "") or "").startswith(_WHOLE_SLIDE):
        for kind in ("LABEL", "OVERVIEW"):
            if kind in image_type[2:3]:
                return f"slide {kind.lower()} image: removed like every slide's label and macro"
    if _text(ds.get("SpecimenLabelInImage", "") or "").upper() == "YES":
        return "the specimen label is in the image: removed like every slide's label"
    return ""


def _read(src: Path) -> Dataset:
    """Read a DICOM file; raise InputError with a one-line reason when it is not one."""
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise InputError(f"{src}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise InputError(f"{src}: empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(src)
        except InvalidDicomError:
            # no preamble: accept only what parses into a recognisable dataset
            try:
                ds = pydicom.dcmread(src, force=True)
            except Exception as exc:
                raise InputError(f"{src}: not a DICOM file ({_one_line(exc)})") from None
            if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
                raise InputError(
                    f"{src}: not a DICOM file (no DICM header, no SOP instance)"
                ) from None
        except Exception as exc:
            raise InputError(f"{src}: unreadable DICOM ({_one_line(exc)})") from None
        # decodes every value now, so broken elements surface here and not mid-way
        try:
            _check_lengths(ds, src)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{src}: broken DICOM element ({_one_line(exc)})") from None
    return ds


def _check_lengths(ds: Dataset, src: Path) -> None:
    """A value shorter than its declared length means a truncated file (pydicom reads on)."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement):
            value, length = raw.value, raw.length
            if isinstance(value, bytes) and length != 0xFFFFFFFF and len(value) < length:
                raise InputError(
                    f"{src}: truncated (element {tag} declares {length} bytes, "
                    f"the file holds {len(value)})"
                )
        try:
            elem = ds[tag]
        except Exception as exc:
            raise InputError(f"{src}: broken DICOM element {tag} ({_one_line(exc)})") from None
        if elem.VR == "SQ":
            for item in elem.value or ():
                _check_lengths(item, src)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:  # "... all plugins are missing dependencies:"
        text = f"{text} {lines[1]}"
    return text[:240]


def _file_meta(ds: Dataset, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SHINDAN_DEID"
    return meta


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if little is False:
        return UID("1.2.840.10008.1.2.2")
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _write(ds: Dataset, dst: Path) -> None:
    """Write atomically: a temporary file beside ``dst``, renamed when complete."""
    fd, tmp = tempfile.mkstemp(prefix=".deid-", suffix=".dcm", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pydicom.dcmwrite(fh, ds, enforce_file_format=True)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mask(ds: Dataset, masker: Masker) -> tuple[np.ndarray | None, int, str]:
    """Run the masker on the decoded pixels (frames first when multi-frame; YBR arrives
    as RGB): (new pixels or None if unchanged, regions masked or -1, reason held back)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pixels = ds.pixel_array
        except Exception as exc:
            reason = f"pixel data cannot be decoded to look for burned-in text ({_one_line(exc)})"
            return None, -1, reason
    try:
        result = masker(pixels, ds)
    except ShindanError:
        raise  # e.g. OCR not installed: the user must know, not find everything held back
    except Exception as exc:
        return None, -1, f"burned-in text check failed ({_one_line(exc)})"
    if not getattr(result, "confident", False):
        reason = getattr(result, "reason", "") or "burned-in text not masked with confidence"
        return None, -1, _one_line(Exception(reason))
    masked = np.asarray(result.pixels)
    if masked.shape != pixels.shape:
        return None, -1, "the burned-in text masker changed the image size"
    regions = len(getattr(result, "regions", ()) or ())
    if np.array_equal(masked, pixels):
        return None, regions, ""
    return masked.astype(pixels.dtype, copy=False), regions, ""


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Write masked pixels back uncompressed (Explicit VR Little Endian), any bit depth.

    An earlier lossy compression stays recorded in Lossy Image Compression.
    """
    from pydicom.pixels import pack_bits

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits_allocated = int(ds.BitsAllocated)
    if bits_allocated == 1:
        data = pack_bits(pixels)
    else:
        kind = "i" if pixels.dtype.kind == "i" else ("f" if pixels.dtype.kind == "f" else "u")
        data = np.ascontiguousarray(pixels).astype(f"<{kind}{bits_allocated // 8}").tobytes()
    if len(data) % 2:
        data += b"\x00"
    for tag in (0x7FE00001, 0x7FE00002):  # extended offset table of the old encoding
        ds.pop(tag, None)
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if bits_allocated <= 8 else "OW"
    if samples > 1:
        ds.PlanarConfiguration = 0  # pydicom's arrays are colour-by-pixel
        if _text(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"  # pydicom decodes YBR to RGB
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def deidentify_dicom(
    src: Path,
    dst: Path,
    pseudo: Pseudonymiser,
    profile: Profile,
    masker: Masker | None = None,
) -> Exported | HeldBack:
    """De-identify one DICOM file and write it to ``dst``.

    Parameters
    ----------
    src : Path
        The input file (never modified).
    dst : Path
        The output file; must not exist. Written atomically (nothing is left on failure).
    pseudo : Pseudonymiser
        The site's keyed pseudonyms, UIDs and date shifts.
    profile : Profile
        The Annex E options.
    masker : callable, optional
        ``masker(pixels, ds) -> MaskResult`` (``.pixels``, ``.regions``, ``.confident``,
        ``.reason``), e.g. :func:`shindan.deid.burned_in.dicom_masker`, called with
        ``ds.pixel_array`` (frames first when multi-frame; YBR decoded to RGB) of an image
        that may carry burned-in text (:func:`needs_masking`). Without one, such images are
        held back; a :class:`ShindanError` it raises (OCR not installed) propagates.

    Returns
    -------
    Exported or HeldBack
        ``Exported.path`` is ``dst`` as given (the caller makes it relative to its export
        folder); ``HeldBack.reason`` is one line.

    Raises
    ------
    InputError
        If ``dst`` exists already (a user's file is never overwritten).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from pydicom.data import get_testdata_file
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "ct.dcm"
    >>> r = deidentify_dicom(pathlib.Path(get_testdata_file("CT_small.dcm")), out,
    ...                      Pseudonymiser(b"k" * 32, "SITE"), Profile())
    >>> r.case.startswith("SITE-"), pydicom.dcmread(out).PatientIdentityRemoved
    (True, 'YES')
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise InputError(f"{dst}: exists already; an export never overwrites a file")
    if not dst.parent.is_dir():
        raise InputError(f"{dst.parent}: no such folder for the output")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _deidentify_file(src, dst, pseudo, profile, masker)
    except InputError as exc:
        return HeldBack(src, str(exc).removeprefix(f"{src}: "))
    except ShindanError:
        raise  # not about this file (OCR not installed): the user must see it
    except Exception as exc:  # a malformed value pydicom cannot decode or re-encode
        return HeldBack(src, f"cannot be de-identified as DICOM ({_one_line(exc)})")


def _deidentify_file(
    src: Path, dst: Path, pseudo: Pseudonymiser, profile: Profile, masker: Masker | None
) -> Exported | HeldBack:
    ds = _read(src)
    if "DirectoryRecordSequence" in ds:
        return HeldBack(src, "a DICOMDIR: rewritten by deidentify_dicomdir once its files are out")
    sop_class = _text(ds.get("SOPClassUID", "") or "")
    if sop_class and sop_class not in UID_dictionary:
        return HeldBack(
            src,
            f"private SOP class {sop_class}: its content cannot be de-identified with confidence",
        )
    if sop_class.startswith(_ENCAPSULATED_DOCUMENT):
        return HeldBack(
            src, "encapsulated document (PDF/CDA/...): its content cannot be de-identified"
        )
    label = _label_image(ds)
    if label:
        return HeldBack(src, label)
    masked_pixels, regions, pixels_cleaned = None, 0, False
    if needs_masking(ds):
        if masker is None:
            return HeldBack(
                src, "may carry burned-in text and no burned-in text masking was available"
            )
        masked_pixels, regions, reason = _mask(ds, masker)
        if regions < 0:
            return HeldBack(src, reason)
        pixels_cleaned = True
    transfer_syntax = _transfer_syntax(ds)
    study_uid = _text(ds.get("StudyInstanceUID", "") or "")
    modality = _text(ds.get("Modality", "") or "")
    # ds was read for this call only: cleaned in place, no copy
    clean, identifiers = _deidentify_in_place(ds, pseudo, profile, None)
    if masked_pixels is not None:
        clean.file_meta = _file_meta(clean, transfer_syntax)
        _set_pixels(clean, masked_pixels)
        transfer_syntax = UID(clean.file_meta.TransferSyntaxUID)
    if pixels_cleaned:
        clean.BurnedInAnnotation = "NO"
    _method_elements(clean, profile, pixels_cleaned)
    if "SOPClassUID" not in clean or "SOPInstanceUID" not in clean:
        return HeldBack(src, "no SOP Class / SOP Instance UID: not a storable DICOM object")
    clean.file_meta = _file_meta(clean, transfer_syntax)
    clean.preamble = b"\x00" * 128
    _write(clean, dst)
    pid = identifiers.patient_id
    return Exported(
        path=dst,
        case=pseudo.patient(pid),
        study=pseudo.study(pid, study_uid) if study_uid else "",
        modality=modality,
        profile=profile.describe() + (" + clean pixel data" if pixels_cleaned else ""),
        identifiers=identifiers,
        masked_regions=regions,
    )


# ----------------------------------------------------------------------------- DICOMDIR

_OFFSET_NEXT = 0x00041400
_OFFSET_LOWER = 0x00041420


@dataclass
class _Node:
    record: Dataset
    children: list[_Node]


_LEVELS = {"PATIENT": 0, "STUDY": 1, "SERIES": 2}


def _offset(record: Dataset, tag: int) -> int:
    elem = record.get(tag)
    try:
        return int(elem.value or 0) if elem is not None else 0
    except (TypeError, ValueError):
        return 0


def _record_tree(ds: Dataset) -> list[_Node]:
    """The DICOMDIR's record hierarchy, by its offsets (or, when a writer left them all zero,
    by the order and type of the records)."""
    records = list(ds.DirectoryRecordSequence)
    by_offset = {}
    for record in records:
        offset = getattr(record, "seq_item_tell", None)
        if offset is None:
            raise InputError("DICOMDIR records without offsets")
        by_offset[offset] = record

    seen: set[int] = set()

    def chain(offset: int) -> list[_Node]:
        nodes = []
        while offset:
            if offset in seen or offset not in by_offset:
                raise InputError("DICOMDIR record offsets are broken")
            seen.add(offset)
            record = by_offset[offset]
            nodes.append(_Node(record, chain(_offset(record, _OFFSET_LOWER))))
            offset = _offset(record, _OFFSET_NEXT)
        return nodes

    root = _offset(ds, 0x00041200)
    if root or not records:
        tree = chain(root)
        if len(seen) != len(records):
            raise InputError(f"DICOMDIR: {len(records) - len(seen)} records not linked")
        return tree
    # no offsets at all: patient > study > series > everything else, in file order
    tree: list[_Node] = []
    stack: list[tuple[int, _Node]] = []
    for record in records:
        level = _LEVELS.get(_text(record.get("DirectoryRecordType", "")), 3)
        node = _Node(record, [])
        while stack and stack[-1][0] >= level:
            stack.pop()
        (stack[-1][1].children if stack else tree).append(node)
        stack.append((level, node))
    return tree


def _find_file(root: Path, parts: list[str]) -> Path:
    """The file a ReferencedFileID names (media file IDs are often in another case)."""
    path = root.joinpath(*parts)
    if path.exists():
        return path
    here = root
    for part in parts:
        matches = (
            [p for p in here.iterdir() if p.name.casefold() == part.casefold()]
            if here.is_dir()
            else []
        )
        if not matches:
            return root.joinpath(*parts)
        here = matches[0]
    return here


_FILE_ID_PART = re.compile(r"[A-Z0-9_]{1,8}")


def deidentify_dicomdir(
    src: Path,
    dst: Path,
    pseudo: Pseudonymiser,
    profile: Profile,
    file_map: Mapping[Path, Path],
) -> Exported | HeldBack:
    """Rewrite a DICOMDIR for the exported files: records de-identified, UIDs remapped,
    Referenced File IDs pointing at the new files, records of files not exported dropped.

    Parameters
    ----------
    src : Path
        The input DICOMDIR.
    dst : Path
        The output DICOMDIR (must not exist); the new files must lie under its folder.
    pseudo, profile
        As for :func:`deidentify_dicom` (the same ones, so UIDs and dates agree).
    file_map : mapping of Path to Path
        Input file → output file, for every file the export wrote. Output file IDs
        relative to ``dst``'s folder must be DICOM file IDs: at most 8 parts of 1-8
        characters ``A-Z 0-9 _`` (e.g. ``S0001/IM000001``).

    Returns
    -------
    Exported or HeldBack
        ``Exported.case`` lists every patient pseudonym the DICOMDIR holds, comma-separated.

    Examples
    --------
    See ``tests/deid/test_dicom.py::test_dicomdir_rewritten``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise InputError(f"{dst}: exists already; an export never overwrites a file")
    if not dst.parent.is_dir():
        raise InputError(f"{dst.parent}: no such folder for the output")
    try:
        ds = _read(src)
        if "DirectoryRecordSequence" not in ds:
            raise InputError(f"{src}: not a DICOMDIR (no directory records)")
        tree = _record_tree(ds)
    except InputError as exc:
        return HeldBack(src, str(exc).removeprefix(f"{src}: "))
    except Exception as exc:
        return HeldBack(src, f"broken DICOMDIR ({_one_line(exc)})")
    resolved = {Path(k).resolve(): Path(v).resolve() for k, v in file_map.items()}
    out_root = dst.parent.resolve()
    cases: list[str] = []
    values: dict[str, str] = {}
    patients: list[str] = []

    def rewrite(nodes: list[_Node], patient_id: str) -> list[_Node]:
        kept = []
        for node in nodes:
            record = node.record
            pid = patient_id
            if _text(record.get("DirectoryRecordType", "")) == "PATIENT":
                pid = _patient_id(record)
                patients.append(pid)
            if "ReferencedFileID" in record:
                parts = [_text(p) for p in _values(record["ReferencedFileID"])]
                target = resolved.get(_find_file(src.parent, parts).resolve())
                if target is None:
                    continue  # not exported (held back, or listed but absent)
                try:
                    new_parts = list(target.relative_to(out_root).parts)
                except ValueError:
                    raise InputError(
                        f"{target}: not under the DICOMDIR's folder {out_root}"
                    ) from None
                if len(new_parts) > 8 or not all(_FILE_ID_PART.fullmatch(p) for p in new_parts):
                    raise InputError(
                        f"{target}: not a DICOM file ID (≤ 8 parts of A-Z 0-9 _, ≤ 8 each)"
                    )
                record.ReferencedFileID = new_parts if len(new_parts) > 1 else new_parts[0]
                written = pydicom.filereader.read_file_meta_info(target)
            else:
                written = None
            children = rewrite(node.children, pid)
            if node.children and not children:
                continue  # every file below it was dropped
            clean, ids = deidentify_dataset(record, pseudo, profile, patient_id=pid)
            if written is not None:
                # what the exported file really is (masking may have changed its encoding)
                clean.ReferencedSOPClassUIDInFile = written.MediaStorageSOPClassUID
                clean.ReferencedSOPInstanceUIDInFile = written.MediaStorageSOPInstanceUID
                clean.ReferencedTransferSyntaxUIDInFile = written.TransferSyntaxUID
            for key, value in ids.values.items():
                if value not in values.values():
                    name, n = key, 2
                    while name in values:
                        name, n = f"{key}#{n}", n + 1
                    values[name] = value
            if _text(clean.get("DirectoryRecordType", "")) != "PATIENT":
                # only patient records carry the patient's name and ID
                for keyword in ("PatientName", "PatientID"):
                    if keyword not in record and keyword in clean:
                        del clean[keyword]
            if (
                _text(clean.get("DirectoryRecordType", "")) not in ("STUDY",)
                and "StudyID" not in record
            ):
                clean.pop("StudyID", None)
            kept.append(_Node(clean, children))
        return kept

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new_tree = rewrite(tree, "")
            out = Dataset()
            for elem in ds:
                if elem.tag.group == 0x0004 and elem.tag != 0x00041220:
                    out.add(elem)
            out.FileSetID = ""
            for keyword in (
                "FileSetDescriptorFileID",
                "SpecificCharacterSetOfFileSetDescriptorFile",
            ):
                out.pop(keyword, None)
            if "SpecificCharacterSet" in ds:
                out.SpecificCharacterSet = ds.SpecificCharacterSet
            records: list[Dataset] = []

            def flatten(nodes: list[_Node]) -> None:
                for node in nodes:
                    records.append(node.record)
                    flatten(node.children)

            flatten(new_tree)
            out.DirectoryRecordSequence = Sequence(records)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = UID("1.2.840.10008.1.3.10")
            meta.MediaStorageSOPInstanceUID = pseudo.uid(
                _text(ds.file_meta.MediaStorageSOPInstanceUID)
            )
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = "SHINDAN_DEID"
            out.file_meta = meta
            out.preamble = b"\x00" * 128
            _link(out, new_tree)
            _write(out, dst)
    except InputError as exc:
        return HeldBack(src, str(exc))
    except Exception as exc:
        return HeldBack(src, f"DICOMDIR cannot be rewritten ({_one_line(exc)})")
    for pid in dict.fromkeys(patients):
        cases.append(pseudo.patient(pid))
    return Exported(
        path=dst,
        case=",".join(cases),
        study="",
        modality="",
        profile=profile.describe(),
        identifiers=Identifiers(patient_id=patients[0] if patients else "", values=values),
    )


def _link(ds: Dataset, tree: list[_Node]) -> None:
    """Set the record offsets: write once to learn where each record lands, then fill in."""
    import io

    def set_offsets(positions: dict[int, int]) -> None:
        def chain(nodes: list[_Node]) -> None:
            for i, node in enumerate(nodes):
                nxt = nodes[i + 1].record if i + 1 < len(nodes) else None
                node.record.OffsetOfTheNextDirectoryRecord = positions.get(id(nxt), 0) if nxt else 0
                first = node.children[0].record if node.children else None
                node.record.OffsetOfReferencedLowerLevelDirectoryEntity = (
                    positions.get(id(first), 0) if first is not None else 0
                )
                chain(node.children)

        chain(tree)
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = (
            positions.get(id(tree[0].record), 0) if tree else 0
        )
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = (
            positions.get(id(tree[-1].record), 0) if tree else 0
        )

    set_offsets({})  # every offset is a fixed-length UL: positions do not depend on them
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    buf.seek(0)
    again = pydicom.dcmread(buf)
    positions = {
        id(record): int(new.seq_item_tell)
        for record, new in zip(
            ds.DirectoryRecordSequence, again.DirectoryRecordSequence, strict=True
        )
    }
    set_offsets(positions)
