"""``deid check``: every kind of leftover is found, and a clean export passes."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file

from shindan.deid.check import Known, check_export
from shindan.deid.dicom import deidentify_dicom
from shindan.deid.profile import Profile
from shindan.deid.pseudonyms import Pseudonymiser

PSEUDO = Pseudonymiser(b"c" * 32, "TEST")
CASE = PSEUDO.patient("ORIGINAL-ID-123456")
NAME = Known("PatientName", "Yamada^Taro", CASE)


def _export_dir(tmp_path: Path) -> Path:
    """A folder laid out as an export, holding one de-identified CT."""
    folder = tmp_path / "exp"
    dst = folder / CASE / "no-study" / "CT-00001.dcm"
    dst.parent.mkdir(parents=True)
    r = deidentify_dicom(Path(get_testdata_file("CT_small.dcm")), dst, PSEUDO, Profile())
    assert r.path == dst
    return folder


def _where(findings) -> list[str]:
    return [f"{f.where}: {f.what}" for f in findings]


def test_clean_export_passes_and_shifted_dates_are_legitimate(tmp_path):
    folder = _export_dir(tmp_path)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    known = [
        Known("PatientName", str(ds.PatientName), CASE),
        Known("PatientID", ds.PatientID, CASE),
    ]
    known.append(Known("StudyDate", ds.StudyDate, CASE))
    assert check_export(folder, known) == []
    out = pydicom.dcmread(next(folder.rglob("*.dcm")))
    assert out.StudyDate and out.StudyDate != ds.StudyDate  # shifted, and not a finding


def test_dicom_leftovers_in_private_and_nested_elements(tmp_path):
    folder = _export_dir(tmp_path)
    path = next(folder.rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "seen by Taro YAMADA")
    item = pydicom.Dataset()
    item.TextValue = "call 03-1234-5678 on 2019/03/04"
    ds.ContentSequence = pydicom.Sequence([item])
    ds.save_as(path)
    found = _where(check_export(folder, [NAME]))
    assert any("(0011,1001)" in w and "PatientName 'Taro'" in w for w in found), found
    assert any("(0040,A730)[0] > (0040,A160)" in w and "phone number" in w for w in found)
    assert any("date in text '2019/03/04'" in w for w in found)


def test_unshifted_date_found_in_its_patients_files_only(tmp_path):
    folder = _export_dir(tmp_path)
    path = next(folder.rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.ContentDate = "19440101"  # (an export never keeps a birth date: that is its own finding)
    ds.save_as(path)
    mine = Known("PatientBirthDate", "19440101", CASE)
    other = Known("PatientBirthDate", "19440101", "TEST-AAAAAAAAAA")
    manifest = {"files": [{"path": path.relative_to(folder).as_posix(), "case": CASE}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert any("19440101" in w for w in _where(check_export(folder, [mine])))
    # another patient's original date equal to this shifted one is not a leak here
    assert check_export(folder, [other]) == []


def test_person_name_and_identity_removed_flag(tmp_path):
    folder = _export_dir(tmp_path)
    path = next(folder.rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.OperatorsName = "Suzuki^Hanako"
    del ds.PatientIdentityRemoved
    ds.save_as(path)
    found = _where(check_export(folder))
    assert any("OperatorsName: person name" in w for w in found)
    assert any("PatientIdentityRemoved" in w for w in found)
    assert not any("PatientID" in w or "PatientBirthDate" in w for w in found)
    # a hospital's patient ID and birth date are found without the linkage table too
    ds.PatientID, ds.PatientBirthDate = "P0012345", "19600102"
    ds.save_as(path)
    found = _where(check_export(folder))
    assert any("(0010,0020) PatientID: patient ID 'P0012345'" in w for w in found), found
    assert any("(0010,0030) PatientBirthDate: birth date '19600102'" in w for w in found)


def test_tiff_tags_labels_and_xml(tmp_path):
    folder = tmp_path / "exp"
    (folder / CASE).mkdir(parents=True)
    path = folder / CASE / "slide-0001.tiff"
    img = np.zeros((64, 64, 3), np.uint8)
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            img,
            description="<OME><Experimenter FirstName='Taro' LastName='Yamada'/></OME>",
            datetime="2020:01:02 03:04:05",
            metadata=None,
        )
        tw.write(img[:16, :16], description="label 16x16", metadata=None)
    found = _where(check_export(folder, [NAME]))
    assert any("DateTime" in w and "date tag" in w for w in found), found
    assert any("ImageDescription" in w and "PatientName 'Yamada'" in w for w in found)
    assert any("label/macro image present" in w for w in found)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def test_png_text_jpeg_segments_and_utf16_bytes(tmp_path):
    folder = tmp_path / "exp"
    (folder / CASE).mkdir(parents=True)
    png = folder / CASE / "image-0001.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    data = png.read_bytes()
    png.write_bytes(data[:-12] + _png_chunk(b"tEXt", b"Author\x00Yamada Taro") + data[-12:])
    jpg = folder / CASE / "image-0002.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpg)
    data = jpg.read_bytes()
    text = "氏名 山田".encode()
    com = b"\xff\xfe" + struct.pack(">H", 2 + len(text)) + text
    jpg.write_bytes(data[:2] + com + data[2:])
    bmp = folder / CASE / "image-0003.bmp"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bmp)
    bmp.write_bytes(bmp.read_bytes() + "Yamada".encode("utf-16-le"))
    found = [str(f) for f in check_export(folder, [NAME])]
    assert any("image-0001.png: chunk tEXt: metadata chunk present" in f for f in found), found
    assert any("image-0001.png: chunk tEXt: PatientName" in f for f in found)
    assert any("image-0002.jpg: segment COM" in f and "identifier label" in f for f in found)
    assert any(f.startswith(f"{CASE}/image-0003.bmp: bytes: PatientName 'Yamada'") for f in found)


def test_file_names_must_be_export_names(tmp_path):
    folder = _export_dir(tmp_path)
    (folder / CASE / "Yamada_Taro_CT.dcm").write_bytes(b"")
    (folder / "notes").mkdir()
    found = [str(f) for f in check_export(folder, [NAME])]
    assert (
        f"{CASE}/Yamada_Taro_CT.dcm: name: not a name shindan deid writes (an input's name?)"
        in found
    )
    assert "notes: name: not a name shindan deid writes (an input's name?)" in found
    assert any("Yamada_Taro_CT.dcm: name: PatientName" in f for f in found)


def test_short_and_numeric_values_do_not_match_by_chance(tmp_path):
    folder = _export_dir(tmp_path)
    # a 4-digit study number and a 2-letter value would match codes and UIDs everywhere
    known = [Known("StudyID", "1234"), Known("PatientSex", "M"), Known("Other", "^^^^")]
    assert check_export(folder, known) == []


def test_not_a_folder(tmp_path):
    from shindan.errors import InputError

    with pytest.raises(InputError, match="no such folder"):
        check_export(tmp_path / "missing")
    (tmp_path / "export.zip").write_bytes(b"PK")
    with pytest.raises(InputError, match="export.zip: is a file; give the export folder"):
        check_export(tmp_path / "export.zip")


def test_many_patients_values_in_small_files(tmp_path):
    """Hundreds of patients' values: the prefiltered byte search still finds the one leak."""
    folder = _export_dir(tmp_path)
    path = next(folder.rglob("*.dcm"))
    rel = path.relative_to(folder).as_posix()
    (folder / "manifest.json").write_text(json.dumps({"files": [{"path": rel, "case": CASE}]}))
    others = [Known("PatientName", f"Person^Number{i:04d}", f"TEST-{i:010d}") for i in range(300)]
    assert check_export(folder, others) == []
    path.write_bytes(path.read_bytes() + b"Person^Number0123")  # another patient's name
    found = [str(f) for f in check_export(folder, others)]
    assert f"{rel}: bytes: PatientName 'Person^Number0123'" in found, found
    assert not any("Number0122" in f or "Number0124" in f for f in found)


def test_digests_and_uids_are_not_dates(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    manifest = {
        "files": [{"sha256": "8f0e19320514ab77", "uid": "2.25.1932051412345"}],
        "note": "scanned 20190304",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    found = [str(f) for f in check_export(folder)]
    assert found == ["manifest.json: note: date in text '20190304'"]
