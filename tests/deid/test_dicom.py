"""DICOM de-identification: PS3.15 Annex E on pydicom's test files and a real study.

The leak checks here do not use the module's own list of identifiers: they read the raw bytes
of each input's identifying elements with pydicom and search the output files' bytes for them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import shindan.deid.dicom
from shindan.deid.dicom import annex_e_action, deidentify_dicom, deidentify_dicomdir
from shindan.deid.profile import Profile
from shindan.deid.pseudonyms import Pseudonymiser
from shindan.deid.records import Exported, HeldBack
from shindan.errors import InputError

GSPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dicom" / "gsps-liver-mr"
PSEUDO = Pseudonymiser(b"t" * 32, "TEST")

# Elements whose original values must not survive (besides every PN and DA value).
IDENTIFYING = {
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AdmissionID",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "StudyID",
}
# Values left by earlier anonymisers, and words too common to mean anything on their own.
GENERIC = {b"REMOVED", b"ANONYMIZED", b"Anonymized", b"ANONYMOUS", b"UNKNOWN", b"NONE"}


class Mask(NamedTuple):
    pixels: np.ndarray
    regions: list
    confident: bool
    reason: str


def band_masker(pixels: np.ndarray, ds: Dataset) -> Mask:
    """A simple masker: blacks out the top tenth of every frame."""
    out = pixels.copy()
    rows = max(1, int(ds.Rows) // 10)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        out[:, :rows] = 0
    else:
        out[:rows] = 0
    return Mask(out, [(0, 0, int(ds.Columns), rows)], True, "")


def unsure_masker(pixels: np.ndarray, ds: Dataset) -> Mask:
    return Mask(pixels, [], False, "text found but not legible enough to be sure")


def raw_identifiers(path: Path) -> set[bytes]:
    """Raw value bytes of every identifying element, read without shindan's code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    found: set[bytes] = set()

    def walk(d: Dataset) -> None:
        for tag in list(d.keys()):
            raw = d.get_item(tag)
            if tag.is_private:
                continue
            keyword = pydicom.datadict.keyword_for_tag(tag)
            try:
                vr = raw.VR if isinstance(raw, RawDataElement) and raw.VR else d[tag].VR
            except Exception:
                continue
            if vr == "SQ":
                for item in d[tag].value or ():
                    walk(item)
                continue
            if not (vr in ("PN", "DA") or keyword in IDENTIFYING):
                continue
            value = raw.value if isinstance(raw, RawDataElement) else None
            if not isinstance(value, bytes):
                continue
            for part in value.split(b"\\"):
                part = part.strip(b" \x00")
                pieces = {part} | (set(part.split(b"^")) if vr == "PN" else set())
                for piece in pieces:
                    piece = piece.strip(b" \x00")
                    if len(piece) >= 4 and piece not in GENERIC and not piece.isspace():
                        found.add(piece)

    walk(ds)

    # the manufacturer is kept in the clear by Annex E: an institution named like it is not
    # an identifier
    def alnum(text: str) -> str:
        return "".join(c for c in text.casefold() if c.isalnum())

    public = {alnum(str(ds.get(k, ""))) for k in ("Manufacturer", "ManufacturerModelName")}
    return {v for v in found if alnum(v.decode("latin-1")) not in public}


def readable_testdata() -> list[Path]:
    out = []
    for name in get_testdata_files():
        path = Path(name)
        if path.suffix in (".json", ".txt", ".py", ".gz", ".bz2", ".xz") or "DICOMDIR" in path.name:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pydicom.dcmread(path)
            except Exception:
                continue  # pydicom itself cannot read it
        out.append(path)
    return out


def private_tags(ds: Dataset) -> list:
    found = []
    for elem in ds:
        if elem.tag.is_private:
            found.append(elem.tag)
        if elem.VR == "SQ":
            for item in elem.value or ():
                found += private_tags(item)
    return found


# --------------------------------------------------------------------------- the table


def test_annex_e_table_has_the_standard_rows():
    table = Path(shindan.deid.dicom.__file__).with_name("annex_e.csv")
    rows = [line for line in table.read_text().splitlines() if line and not line.startswith("#")]
    assert len(rows) > 450  # Table E.1-1 lists ~460 attributes
    p = Profile()
    bare = Profile(False, False, False, False)
    assert annex_e_action(0x00100010, "PN", p) == "Z"  # Patient's Name
    assert annex_e_action(0x00100030, "DA", p) == "Z"  # Birth Date: no option keeps it
    assert annex_e_action(0x00080050, "SH", p) == "Z"  # Accession Number
    assert annex_e_action(0x00080080, "LO", p) == "Z"  # Institution Name X/Z/D
    assert annex_e_action(0x00081070, "PN", p) == "Z"  # Operators' Name
    assert annex_e_action(0x00080020, "DA", p) == "S"  # Study Date, modified dates
    assert annex_e_action(0x00080020, "DA", bare) == "Z"
    assert annex_e_action(0x00101030, "DS", p) == "K"  # Patient's Weight
    assert annex_e_action(0x00101030, "DS", bare) == "X"
    assert annex_e_action(0x00181000, "LO", p) == "K"  # Device Serial Number
    assert annex_e_action(0x00181000, "LO", bare) == "Z"
    assert annex_e_action(0x0008103E, "LO", p) == "C"  # Series Description
    assert annex_e_action(0x0008103E, "LO", bare) == "X"
    assert annex_e_action(0x00204000, "LT", p) == "X"  # Image Comments: free text goes
    assert annex_e_action(0x60023000, "OW", p) == "X"  # Overlay Data, repeating group
    assert annex_e_action(0x00081155, "UI", p) == "U"  # Referenced SOP Instance UID
    assert annex_e_action(0x00280010, "US", p) == "K"  # Rows: not in the table


# --------------------------------------------------------------------------- test files


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on its deliberately odd files
def test_every_pydicom_test_file_leaks_nothing(tmp_path):
    files = readable_testdata()
    assert len(files) > 100
    exported, held = 0, {}
    for i, src in enumerate(files):
        before = hashlib.sha256(src.read_bytes()).hexdigest()
        dst = tmp_path / f"{i:03d}.dcm"
        result = deidentify_dicom(src, dst, PSEUDO, Profile(), masker=band_masker)
        assert hashlib.sha256(src.read_bytes()).hexdigest() == before
        if isinstance(result, HeldBack):
            assert "\n" not in result.reason and not dst.exists()
            held[src.name] = result.reason
            continue
        exported += 1
        data = dst.read_bytes()
        leaks = [v for v in raw_identifiers(src) if v in data]
        assert not leaks, f"{src.name}: {leaks}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = pydicom.dcmread(dst)
            orig = pydicom.dcmread(src)
        assert out.PatientIdentityRemoved == "YES"
        assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert out.PatientID == result.case == PSEUDO.patient(result.identifiers.patient_id)
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.SOPInstanceUID.startswith("2.25.")
        assert not private_tags(out)
        if "PixelData" in orig and result.masked_regions == 0:
            assert out["PixelData"].value == orig["PixelData"].value, src.name
    # what may be held back: fragments without SOP UIDs, undecodable pixels to be checked
    for name, reason in held.items():
        assert reason.startswith(
            ("no SOP Class", "pixel data cannot be decoded", "private SOP class", "truncated")
        ), f"{name}: {reason}"
    assert exported >= 140, held


def test_pixel_data_byte_identical_and_dates_shifted(tmp_path):
    src = Path(get_testdata_file("CT_small.dcm"))
    orig = pydicom.dcmread(src)
    result = deidentify_dicom(src, tmp_path / "ct.dcm", PSEUDO, Profile())
    out = pydicom.dcmread(tmp_path / "ct.dcm")
    assert out.PixelData == orig.PixelData
    assert out.file_meta.TransferSyntaxUID == orig.file_meta.TransferSyntaxUID
    days = PSEUDO.shift_days(str(orig.PatientID))
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        if keyword in orig and orig[keyword].value:
            moved = dt.datetime.strptime(orig[keyword].value, "%Y%m%d") - dt.timedelta(days=days)
            assert out[keyword].value == moved.strftime("%Y%m%d")
    assert out.StudyTime == orig.StudyTime  # times kept under retain modified dates
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "PatientBirthDate" not in out or not out.PatientBirthDate
    assert out.PatientSex == orig.PatientSex  # retain patient characteristics
    assert result.identifiers.values["PatientName"] == str(orig.PatientName)
    assert orig.StudyDate in result.identifiers.values.values()


def _synthetic(patient_id: str, study_date: str, study_uid: str, **extra) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.FrameOfReferenceUID = study_uid + ".2"
    ds.PatientName = "Yamada^Taro"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600412"
    ds.PatientAge = "060Y"
    ds.PatientSex = "M"
    ds.StudyDate = study_date
    ds.AcquisitionDateTime = study_date + "101010.5"
    ds.StudyTime = "101010"
    ds.AccessionNumber = "ACC998877"
    ds.StudyID = "ST12345"
    ds.InstitutionName = "Kyoto Central Clinic"
    ds.ReferringPhysicianName = "Suzuki^Hanako"
    ds.DeviceSerialNumber = "SN-4711"
    ds.StationName = "CT01"
    ds.SeriesDescription = "CHEST W/O CONTRAST"
    ds.StudyDescription = "Yamada follow-up"
    ds.ImageComments = "called Mr Yamada"
    ds.Modality = "CT"
    ds.DateOfLastCalibration = "20190101"  # not in Table E.1-1: still shifted
    ds.PatientBirthDateInAlternativeCalendar = "S35.04.12"  # Showa 35: the same birth date
    ds.add_new(0x00090010, "LO", "no creator")  # private but not in a block
    ds.add_new(0x00431234, "UN", b"Yamada")  # odd group: private
    ds.add_new(0x00081234, "LO", "Yamada Taro")  # a public tag no dictionary knows
    block = ds.private_block(0x0019, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "Yamada secret")
    block.add_new(0x11, "DS", "1.5")
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dates_shift_by_the_same_days_for_one_patient(tmp_path):
    a = _save(_synthetic("P001", "20200131", "1.2.826.0.1.3680043.2.1"), tmp_path / "a.dcm")
    b = _save(_synthetic("P001", "20200310", "1.2.826.0.1.3680043.2.2"), tmp_path / "b.dcm")
    c = _save(_synthetic("P002", "20200131", "1.2.826.0.1.3680043.2.3"), tmp_path / "c.dcm")
    outs = []
    for src in (a, b, c):
        result = deidentify_dicom(src, tmp_path / f"out-{src.name}", PSEUDO, Profile())
        assert isinstance(result, Exported)
        outs.append(pydicom.dcmread(result.path))

    def day(v: str) -> dt.date:
        return dt.datetime.strptime(v[:8], "%Y%m%d").date()

    assert (day(outs[1].StudyDate) - day(outs[0].StudyDate)).days == 39  # interval kept
    assert day("20200131") - day(outs[0].StudyDate) == dt.timedelta(PSEUDO.shift_days("P001"))
    assert outs[0].AcquisitionDateTime[8:] == "101010.5"
    assert day(outs[0].DateOfLastCalibration) < day("20190101")
    assert outs[0].PatientID == outs[1].PatientID != outs[2].PatientID
    assert outs[0].StudyID != outs[1].StudyID  # pseudonymised study labels
    assert outs[0].StudyID.startswith("S") and outs[0].AccessionNumber in ("", None)


def test_profile_options_and_private_tags(tmp_path):
    src = _save(_synthetic("P001", "20200131", "1.2.826.0.1.3680043.2.1"), tmp_path / "a.dcm")
    deidentify_dicom(src, tmp_path / "full.dcm", PSEUDO, Profile())
    full = pydicom.dcmread(tmp_path / "full.dcm")
    assert (full.PatientAge, full.PatientSex, full.DeviceSerialNumber) == ("060Y", "M", "SN-4711")
    assert full.SeriesDescription == "CHEST W/O CONTRAST"  # clean descriptor kept
    assert "StudyDescription" not in full  # names the patient: cleaned away
    assert "ImageComments" not in full
    assert not private_tags(full)
    assert 0x00081234 not in full  # unknown public tag removed
    data = (tmp_path / "full.dcm").read_bytes()
    for value in (
        b"Yamada",
        b"Taro",
        b"Suzuki",
        b"Kyoto Central",
        b"19600412",
        b"ACC998877",
        b"S35.04.12",
    ):
        assert value not in data
    codes = [item.CodeValue for item in full.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108", "113109", "113105"]

    allow = ("ACME 1.0/0019,xx11", "0019,xx10")  # 0019,xx10 holds a name: still removed
    bare = Profile(False, False, False, False, private_allow=allow)
    deidentify_dicom(src, tmp_path / "bare.dcm", PSEUDO, bare)
    out = pydicom.dcmread(tmp_path / "bare.dcm")
    assert "PatientAge" not in out and not out.get("PatientSex")
    assert not out.get("DeviceSerialNumber") and not out.get("StationName")
    assert "SeriesDescription" not in out
    assert not out.get("StudyDate") and out.LongitudinalTemporalInformationModified == "REMOVED"
    assert not out.get("DateOfLastCalibration")
    kept = private_tags(out)
    assert [(t.group, t.element & 0xFF) for t in kept if t.element >= 0x1000] == [(0x0019, 0x11)]
    assert out.private_block(0x0019, "ACME 1.0")[0x11].value == 1.5
    deidentify_dicom(src, tmp_path / "by-tag.dcm", PSEUDO, Profile(private_allow=("0019,1011",)))
    by_tag = pydicom.dcmread(tmp_path / "by-tag.dcm")
    assert [t for t in private_tags(by_tag) if t.element >= 0x1000] == [0x00191011]
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113111"]


def test_uids_consistent_across_files_and_runs(tmp_path):
    study = "1.2.826.0.1.3680043.2.77"
    srcs = [_save(_synthetic("P9", "20200101", study), tmp_path / f"{i}.dcm") for i in range(3)]
    runs = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        runs.append(
            [
                pydicom.dcmread(
                    deidentify_dicom(s, tmp_path / run / s.name, PSEUDO, Profile()).path
                )
                for s in srcs
            ]
        )
    one, two = runs
    assert [d.SOPInstanceUID for d in one] == [d.SOPInstanceUID for d in two]
    assert len({d.SOPInstanceUID for d in one}) == 3
    assert len({d.StudyInstanceUID for d in one}) == 1 and one[0].StudyInstanceUID != study
    assert one[0].StudyInstanceUID == PSEUDO.uid(study)
    assert one[0].FrameOfReferenceUID == PSEUDO.uid(study + ".2")
    assert one[0].SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # well-known UIDs kept
    other = Pseudonymiser(b"u" * 32, "TEST")
    (tmp_path / "other").mkdir()
    third = deidentify_dicom(srcs[0], tmp_path / "other" / "0.dcm", other, Profile())
    assert pydicom.dcmread(third.path).StudyInstanceUID != one[0].StudyInstanceUID


# --------------------------------------------------------------------------- burned-in text


def test_burned_in_text_masked_or_held_back(tmp_path):
    src = Path(get_testdata_file("examples_rgb_color.dcm"))
    held = deidentify_dicom(src, tmp_path / "none.dcm", PSEUDO, Profile())
    assert isinstance(held, HeldBack) and "burned-in" in held.reason
    unsure = deidentify_dicom(src, tmp_path / "unsure.dcm", PSEUDO, Profile(), unsure_masker)
    assert isinstance(unsure, HeldBack) and "legible" in unsure.reason
    assert not (tmp_path / "none.dcm").exists() and not (tmp_path / "unsure.dcm").exists()

    result = deidentify_dicom(src, tmp_path / "us.dcm", PSEUDO, Profile(), band_masker)
    assert isinstance(result, Exported) and result.masked_regions == 1
    out = pydicom.dcmread(tmp_path / "us.dcm")
    orig = pydicom.dcmread(src).pixel_array
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert not out.file_meta.TransferSyntaxUID.is_compressed
    new = out.pixel_array
    rows = orig.shape[0] // 10
    assert not new[:rows].any() and np.array_equal(new[rows:], orig[rows:])


def test_compressed_burned_in_image_written_uncompressed(tmp_path):
    src = Path(get_testdata_file("examples_ybr_color.dcm"))  # US, JPEG, 30 frames
    result = deidentify_dicom(src, tmp_path / "us.dcm", PSEUDO, Profile(), band_masker)
    assert isinstance(result, Exported), result
    assert result.masked_regions == 1
    out = pydicom.dcmread(tmp_path / "us.dcm")
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PhotometricInterpretation == "RGB"
    frames = out.pixel_array
    assert frames.shape[0] == 30 and not frames[:, : out.Rows // 10].any()
    assert frames[:, out.Rows // 10 :].any()


def test_with_the_burned_in_modules_region_masker(tmp_path):
    from shindan.deid.burned_in import RegionRule, dicom_masker

    src = Path(get_testdata_file("examples_ybr_color.dcm"))
    ds = pydicom.dcmread(src)
    rule = RegionRule(manufacturer=str(ds.get("Manufacturer", "")), regions=((0, 0, 40, 12),))
    masker = dicom_masker([rule], ocr=False)  # configured regions only: no Tesseract run
    result = deidentify_dicom(src, tmp_path / "us.dcm", PSEUDO, Profile(), masker)
    assert isinstance(result, Exported), result
    out = pydicom.dcmread(tmp_path / "us.dcm")
    new, orig = out.pixel_array, ds.pixel_array
    assert result.masked_regions == 1 and out.BurnedInAnnotation == "NO"
    assert new.shape == orig.shape
    assert not np.array_equal(new[:, :12, :40], orig[:, :12, :40])
    assert np.array_equal(new[:, 40:, 60:], orig[:, 40:, 60:])


def test_slide_label_and_overview_held_back(tmp_path):
    for image_type, held in (("LABEL", True), ("OVERVIEW", True), ("VOLUME", False)):
        ds = _synthetic("P1", "20200101", "1.2.826.0.1.3680043.2.9", Modality="SM")
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy
        ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
        src = _save(ds, tmp_path / f"{image_type}.dcm")
        result = deidentify_dicom(src, tmp_path / f"out-{image_type}.dcm", PSEUDO, Profile())
        assert isinstance(result, HeldBack) is held, image_type
        if held:
            assert image_type.lower() in result.reason
    ds = _synthetic("P1", "20200101", "1.2.826.0.1.3680043.2.9", SpecimenLabelInImage="YES")
    result = deidentify_dicom(_save(ds, tmp_path / "l.dcm"), tmp_path / "o.dcm", PSEUDO, Profile())
    assert isinstance(result, HeldBack) and "label" in result.reason


# --------------------------------------------------------------------------- hostile input


def _explicit_bytes(tmp_path: Path) -> bytes:
    ds = _synthetic("P1", "20200101", "1.2.826.0.1.3680043.2.5")
    return _save(ds, tmp_path / "base.dcm").read_bytes()


def test_hostile_files_give_one_line_reasons(tmp_path):
    base = _explicit_bytes(tmp_path)
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    name_at = base.index(b"PN") - 4  # (0010,0010) tag, VR, length of Patient's Name
    huge = bytearray(base)
    huge[name_at + 6 : name_at + 8] = b"\xff\xff"  # longer than the file
    wrong_vr = bytearray(base)
    wrong_vr[name_at + 4 : name_at + 6] = b"SQ"  # a name claimed to be a sequence
    birth_at = base.index(b"19600412")
    bad_value = base[:birth_at] + b"notadate" + base[birth_at + 8 :]
    date_as_numbers = base.replace(b"\x08\x00\x20\x00DA", b"\x08\x00\x20\x00US", 1)
    assert date_as_numbers != base
    cases = {
        "truncated.dcm": ct[: len(ct) // 2],
        "header-only.dcm": ct[:140],
        "text.dcm": b"name,id\nYamada,12345\n" * 20,
        "random.dcm": np.random.default_rng(0).bytes(4096),
        "empty.dcm": b"",
        "huge-length.dcm": bytes(huge),
        "wrong-vr.dcm": bytes(wrong_vr),
        "date-as-numbers.dcm": date_as_numbers,  # Study Date under VR US would slip through
    }
    for name, data in cases.items():
        src = tmp_path / name
        src.write_bytes(data)
        result = deidentify_dicom(src, tmp_path / f"out-{name}", PSEUDO, Profile())
        assert isinstance(result, HeldBack), name
        assert result.reason and "\n" not in result.reason and "Traceback" not in result.reason
        assert not (tmp_path / f"out-{name}").exists(), name
        assert src.read_bytes() == data
        assert not list(tmp_path.glob(".deid-*"))
    assert "wrong VR US for (0008,0020) StudyDate" in result.reason
    # a date that is not one: the element goes, the file is still exported
    src = tmp_path / "bad-date.dcm"
    src.write_bytes(bad_value)
    result = deidentify_dicom(src, tmp_path / "out-bad-date.dcm", PSEUDO, Profile())
    assert isinstance(result, Exported)
    assert b"notadate" not in (tmp_path / "out-bad-date.dcm").read_bytes()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_files_never_raise(tmp_path):
    """Random byte flips, huge lengths and cuts in real files: a result for every one."""
    rng = np.random.default_rng(7)
    bases = [
        Path(get_testdata_file(n)).read_bytes()
        for n in ("CT_small.dcm", "test-SR.dcm", "rtplan.dcm", "MR_small_implicit.dcm")
    ]
    counts = {"held": 0, "exported": 0}
    for i in range(150):
        data = bytearray(bases[i % len(bases)])
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(128, min(len(data), 3000)))
            choice = rng.random()
            if choice < 0.5:
                data[pos] = int(rng.integers(256))
            elif choice < 0.8:
                data[pos : pos + 4] = [
                    b"\xff\xff\xff\xff",
                    b"\xf0\xff\xff\x7f",
                    b"\xfe\xff\x00\xe0",
                ][int(rng.integers(3))]
            else:
                del data[pos : pos + int(rng.integers(1, 50))]
        src = tmp_path / f"in{i}.dcm"
        src.write_bytes(bytes(data))
        result = deidentify_dicom(src, tmp_path / f"out{i}.dcm", PSEUDO, Profile())
        if isinstance(result, HeldBack):
            assert result.reason and "\n" not in result.reason
            assert not (tmp_path / f"out{i}.dcm").exists()
            counts["held"] += 1
        else:
            counts["exported"] += 1
    assert counts["held"] > 20 and counts["exported"] > 10, counts


def test_existing_output_is_never_overwritten(tmp_path):
    dst = tmp_path / "taken.dcm"
    dst.write_bytes(b"user file")
    with pytest.raises(InputError, match="exists already"):
        deidentify_dicom(Path(get_testdata_file("CT_small.dcm")), dst, PSEUDO, Profile())
    assert dst.read_bytes() == b"user file"
    with pytest.raises(InputError, match="no such folder"):
        deidentify_dicom(
            Path(get_testdata_file("CT_small.dcm")), tmp_path / "no" / "x.dcm", PSEUDO, Profile()
        )


def test_dicomdir_input_is_left_to_deidentify_dicomdir(tmp_path):
    src = Path(get_testdata_file("DICOMDIR"))
    result = deidentify_dicom(src, tmp_path / "x", PSEUDO, Profile())
    assert isinstance(result, HeldBack) and "DICOMDIR" in result.reason


# --------------------------------------------------------------------------- DICOMDIR


def _export_dicomdir(src_dir: Path, dicomdir: Path, out: Path, masker=band_masker):
    """What the export does: every file under the DICOMDIR's folder, then the DICOMDIR."""
    out.mkdir()
    file_map, results = {}, {}
    files = sorted(p for p in src_dir.rglob("*") if p.is_file() and p != dicomdir)
    for n, src in enumerate(files):
        if src.suffix in (".txt",) or src.name.startswith("DICOMDIR"):
            continue
        (out / "DATA").mkdir(exist_ok=True)
        dst = out / "DATA" / f"IM{n:06d}"
        result = deidentify_dicom(src, dst, PSEUDO, Profile(), masker)
        results[src] = result
        if isinstance(result, Exported):
            file_map[src] = dst
    dd = deidentify_dicomdir(dicomdir, out / "DICOMDIR", PSEUDO, Profile(), file_map)
    return dd, results, file_map


def _check_dicomdir(path: Path, file_map: dict) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs = FileSet(pydicom.dcmread(path))  # pydicom follows every record offset
    n = 0
    for instance in fs:
        ds = instance.load()
        assert ds.SOPInstanceUID == instance.ReferencedSOPInstanceUIDInFile
        assert ds.file_meta.TransferSyntaxUID == instance.ReferencedTransferSyntaxUIDInFile
        assert Path(instance.path).resolve() in {p.resolve() for p in file_map.values()}
        n += 1
    assert n == len([p for p in file_map]) or n <= len(file_map)
    return n


@pytest.mark.parametrize(
    "variant",
    ["DICOMDIR", "DICOMDIR-implicit", "DICOMDIR-bigEnd", "DICOMDIR-reordered", "DICOMDIR-nooffset"],
)
def test_dicomdir_rewritten(tmp_path, variant):
    dicomdir = Path(get_testdata_file("DICOMDIR")).parent / variant
    dd, results, file_map = _export_dicomdir(dicomdir.parent, dicomdir, tmp_path / "out")
    assert isinstance(dd, Exported), dd
    n = _check_dicomdir(dd.path, file_map)
    assert n >= 25  # pydicom's sample DICOMDIR lists 31 images in 4 studies
    data = dd.path.read_bytes()
    orig = pydicom.dcmread(dicomdir)
    for record in orig.DirectoryRecordSequence:
        if "PatientName" in record:
            assert bytes(str(record.PatientName), "ascii") not in data
        if "PatientID" in record:
            assert str(record.PatientID).encode() not in data
        for uid in ("StudyInstanceUID", "SeriesInstanceUID", "ReferencedSOPInstanceUIDInFile"):
            if uid in record:
                assert str(record[uid].value).encode() not in data
    patients = {
        str(r.PatientID) for r in orig.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"
    }
    assert len(dd.case.split(",")) == len(patients)


def test_broken_dicomdir_held_back(tmp_path):
    folder = Path(get_testdata_file("DICOMDIR")).parent
    # patient records turned into an unknown type, the root offset pointing at an image
    result = deidentify_dicomdir(
        folder / "DICOMDIR-nopatient", tmp_path / "D", PSEUDO, Profile(), {}
    )
    assert isinstance(result, HeldBack) and "\n" not in result.reason
    assert not (tmp_path / "D").exists()
    empty = deidentify_dicomdir(
        folder / "DICOMDIR-empty.dcm", tmp_path / "E", PSEUDO, Profile(), {}
    )
    assert isinstance(empty, Exported)
    assert len(pydicom.dcmread(empty.path).DirectoryRecordSequence) == 0


# --------------------------------------------------------------------------- a real study


@pytest.mark.data
def test_gsps_liver_study(tmp_path):
    if not (GSPS / "DICOMDIR").exists():
        pytest.skip("../shared/data/dicom/gsps-liver-mr is absent")
    src_dir = tmp_path / "in"
    shutil.copytree(GSPS, src_dir)  # a copy, to prove the input stays as it was
    before = {p: p.read_bytes() for p in src_dir.rglob("*") if p.is_file()}
    dd, results, file_map = _export_dicomdir(src_dir, src_dir / "DICOMDIR", tmp_path / "out")
    assert {p: p.read_bytes() for p in src_dir.rglob("*") if p.is_file()} == before
    assert isinstance(dd, Exported), dd
    held = {p.name for p, r in results.items() if isinstance(r, HeldBack)}
    assert held == {"XX_0027", "XX_0109", "XX_0155", "XX_0182", "XX_0183"}  # Philips private
    assert len(file_map) == 11  # 6 images and 5 presentation states

    # no name, birth date or hospital in any output byte; no identifying value of an
    # input in its output
    known = {b"Tokai", b"Isehara", b"Hospital", b"19440101", b"Liver and MRCP", b"20110101"}
    for src, out in [*file_map.items(), (src_dir / "DICOMDIR", dd.path)]:
        data = out.read_bytes()
        assert not [n for n in known | raw_identifiers(src) if n in data], out

    # presentation states point at the new image UIDs
    images = {}
    for src, dst in file_map.items():
        ds = pydicom.dcmread(dst)
        if ds.Modality == "MR":
            images[str(pydicom.dcmread(src).SOPInstanceUID)] = ds
    resolved = 0
    for src, dst in file_map.items():
        ps = pydicom.dcmread(dst)
        if ps.Modality != "PR":
            continue
        orig = pydicom.dcmread(src)
        for series, old_series in zip(
            ps.ReferencedSeriesSequence, orig.ReferencedSeriesSequence, strict=True
        ):
            for ref, old in zip(
                series.ReferencedImageSequence, old_series.ReferencedImageSequence, strict=True
            ):
                assert ref.ReferencedSOPInstanceUID == PSEUDO.uid(old.ReferencedSOPInstanceUID)
                image = images.get(str(old.ReferencedSOPInstanceUID))
                if image is not None:
                    assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID
                    assert series.SeriesInstanceUID == image.SeriesInstanceUID
                    resolved += 1
        assert ps.PatientID == next(iter(images.values())).PatientID
        assert ps.StudyInstanceUID == next(iter(images.values())).StudyInstanceUID
    assert resolved >= 1
    # one patient, one date shift: every output has the study date moved by the same days
    days = PSEUDO.shift_days(results[next(iter(file_map))].identifiers.patient_id)
    moved = (dt.date(2011, 1, 1) - dt.timedelta(days=days)).strftime("%Y%m%d")
    assert {pydicom.dcmread(d).StudyDate for d in file_map.values()} == {moved}
    assert _check_dicomdir(dd.path, file_map) == 11  # records of absent images dropped
