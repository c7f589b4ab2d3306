"""``shindan deid`` end to end: real DICOM, slides and images; nothing identifying left (by
``deid check`` and by an independent byte search), repeatable pseudonyms and UIDs, inputs
untouched, failures leave nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from shindan.deid.check import check_export
from shindan.deid.export import ExportCheckFailed, export, sniff
from shindan.deid.linkage import load_table
from shindan.deid.profile import Profile
from shindan.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
GSPS = SHARED / "dicom" / "gsps-liver-mr"
SLIDES = SHARED / "slides"
SECRET = b"e" * 32
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
# Identifying elements read independently of shindan's modules, searched in the output bytes.
IDENTIFYING = (
    "PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber",
    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "StudyID", "PatientAddress", "RequestingPhysician",
)  # fmt: skip


def _key(folder: Path) -> Path:
    """A key file with a fixed secret (date shifts, and so date collisions, repeatable)."""
    path = folder / "site.key"
    path.write_text(f"shindan-deid-key v1\n{base64.b64encode(SECRET).decode()}\n")
    return path


def _hashes(paths) -> dict[str, str]:
    files = []
    for p in paths:
        files += (
            sorted(f for f in Path(p).rglob("*") if f.is_file()) if Path(p).is_dir() else [Path(p)]
        )
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


PLACEHOLDERS = {"REMOVED", "ANONYMIZED", "ANONYMOUS", "UNKNOWN", "ANON"}


def _values(ds: pydicom.Dataset, makers: str = "") -> set[bytes]:
    """Raw bytes of the identifying values anywhere in ``ds`` (sequences included); not
    placeholders left by earlier anonymisers, nor an institution named like the device maker
    ("Philips"), which Retain Device Identity keeps."""
    out = set()
    maker = (str(ds.get("Manufacturer", "") or "") + " | " + makers).lower()
    for elem in ds.iterall():
        if elem.keyword in IDENTIFYING and elem.value not in (None, ""):
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                text = str(v).strip()
                if text.upper() in PLACEHOLDERS or (
                    elem.keyword == "InstitutionName" and maker and text.lower() in maker
                ):
                    continue
                if sum(c.isalnum() for c in text) >= 4 and not (text.isdigit() and len(text) < 6):
                    out.add(text.encode("utf-8", "replace"))
                    for part in text.replace("=", "^").split("^"):
                        if len(part.strip()) >= 5:
                            out.add(part.strip().encode("utf-8", "replace"))
    return out


def _leaks(folder: Path, needles: set[bytes]) -> list[str]:
    hits = []
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            hits += [f"{f.relative_to(folder)}: {n!r}" for n in needles if n in data]
    return hits


def _run(tmp_path: Path, inputs, out="exp", **kw):
    key = tmp_path / "site.key" if (tmp_path / "site.key").exists() else _key(tmp_path)
    return export(
        inputs, tmp_path / out, "TEST", tmp_path / "link.table", key, progress=False, **kw
    )


def test_sniff_by_content(tmp_path):
    fake = tmp_path / "scan.svs"
    fake.write_text("a text file named like a slide")
    jpg = tmp_path / "photo.dcm"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpg, format="JPEG")
    ct = Path(get_testdata_file("CT_small.dcm"))
    assert [sniff(fake), sniff(jpg), sniff(ct)] == ["other", "image", "dicom"]
    assert sniff(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR") == "dicomdir"


def test_dicom_repeatable_and_input_untouched(tmp_path):
    inputs = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
    before = _hashes(inputs)
    first = _run(tmp_path, inputs, "a")
    second = _run(tmp_path, inputs, "b")
    assert _hashes(inputs) == before
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert first.files == second.files == 2 and ma["cases"] == mb["cases"]
    assert [f["path"] for f in ma["files"]] == [f["path"] for f in mb["files"]]
    for fa, fb in zip(ma["files"], mb["files"], strict=True):
        a = pydicom.dcmread(tmp_path / "a" / fa["path"])
        b = pydicom.dcmread(tmp_path / "b" / fb["path"])
        assert a.SOPInstanceUID == b.SOPInstanceUID and a.SOPInstanceUID.startswith("2.25.")
        assert a.StudyDate == b.StudyDate and fa["sha256"] == fb["sha256"]
        assert {"path", "sha256", "case", "modality"} <= set(fa)
        assert (
            fa["sha256"] == hashlib.sha256((tmp_path / "a" / fa["path"]).read_bytes()).hexdigest()
        )
    table = load_table(tmp_path / "link.table", SECRET)
    assert set(table.rows) == set(ma["cases"])
    assert len(table.exports) == 2
    for row in table.rows.values():
        assert row.first_export <= row.last_export


@pytest.mark.slow  # OCR of pydicom's secondary captures: about a minute on 2 cores
def test_every_pydicom_test_file(tmp_path):
    before = _hashes([PYDICOM_FILES])
    result = _run(tmp_path, [PYDICOM_FILES])
    out = tmp_path / "exp"
    assert _hashes([PYDICOM_FILES]) == before
    assert result.files > 40
    table = load_table(tmp_path / "link.table", SECRET)
    from shindan.deid.check import known_from_table

    assert check_export(out, known_from_table(table, SECRET)) == []
    datasets = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in PYDICOM_FILES.rglob("*"):
            try:
                datasets.append(pydicom.dcmread(f, force=True, stop_before_pixels=True))
                _ = [e.value for e in datasets[-1].iterall()]
            except Exception:  # not DICOM, or broken: held back by the export
                continue
    # a vendor written as institution ("GE MEDICAL SYSTEMS") is kept as another file's maker
    makers = " | ".join(str(ds.get("Manufacturer", "") or "") for ds in datasets)
    needles = set().union(*(_values(ds, makers) for ds in datasets))
    assert len(needles) > 20
    assert _leaks(out, needles) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(h["path"].startswith("held-back-") for h in manifest["held_back"])
    assert not any("test_files" in h["reason"] for h in manifest["held_back"])


@pytest.mark.data
def test_gsps_liver_mr_dicomdir_and_references(tmp_path):
    if not GSPS.is_dir():
        pytest.skip("../shared/data/dicom/gsps-liver-mr is not here")
    before = _hashes([GSPS])
    _run(tmp_path, [GSPS / "DICOMDIR"])  # the DICOMDIR alone brings its files
    out = tmp_path / "exp"
    assert _hashes([GSPS]) == before
    needles = {b"Tokai", b"Isehara", b"19440101"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in (GSPS / "DICOM").iterdir():
            needles |= _values(pydicom.dcmread(f, stop_before_pixels=True))
    assert _leaks(out, needles) == []
    assert check_export(out) == []
    from pydicom.fileset import FileSet

    def uids_and_refs(datasets) -> tuple[set[str], set[str]]:
        uids, refs = set(), set()
        for ds in datasets:
            uids.add(ds.SOPInstanceUID)
            for seq in ds.get("ReferencedSeriesSequence", []):
                refs |= {i.ReferencedSOPInstanceUID for i in seq.get("ReferencedImageSequence", [])}
        return uids, refs

    fs = FileSet(pydicom.dcmread(next(out.glob("fileset-*/DICOMDIR"))))
    new_uids, new_refs = uids_and_refs(i.load() for i in fs)
    old = [pydicom.dcmread(f) for f in (GSPS / "DICOM").iterdir()]
    exported = {ds.SOPInstanceUID for ds in old if not ds.SOPClassUID.startswith("1.3.46")}
    old_uids, old_refs = uids_and_refs(old)
    # presentation states still point at the same exported images, under their new UIDs
    assert len(new_uids) == len(exported)
    assert len(new_refs & new_uids) == len(old_refs & exported) > 0


@pytest.mark.data
def test_slides_label_and_macro_gone(tmp_path):
    svs = SLIDES / "CMU-1-Small-Region.svs"
    if not svs.exists():
        pytest.skip("../shared/data/slides is not here")
    slides = [p for p in SLIDES.iterdir() if p.is_file()]
    before = _hashes(slides)
    result = _run(tmp_path, slides)
    assert _hashes(slides) == before
    assert result.files == len(slides) and not result.held_back
    out = tmp_path / "exp"
    assert check_export(out) == []
    from shindan.io import open_slide

    exported = sorted(out.rglob("slide-*"))
    assert len(exported) == len(slides)
    for f in exported:
        with open_slide(f) as s:
            assert not {"label", "macro"} & set(s.associated_names)
    # nothing from the SVS description's identifying fields, nor the input names
    leaks = _leaks(out, {b"CMU-1", b"Small-Region", b"test3-DAPI", b"4D-series", b"12/29/09"})
    assert leaks == []


def test_plain_images_patient_from_folder_and_exif_gone(tmp_path):
    patient = tmp_path / "in" / "Yamada-Taro-556677"
    patient.mkdir(parents=True)
    img = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[315] = "Dr Suzuki Ichiro"  # Artist
    exif[306] = "2021:05:06 07:08:09"
    img.save(patient / "photo_2021.jpg", exif=exif.tobytes())
    img.save(patient / "scan.png")
    result = _run(tmp_path, [patient])
    out = tmp_path / "exp"
    assert result.files == 2 and result.cases == 1
    names = [p.name for p in out.rglob("*")]
    assert not any("Yamada" in n or "photo" in n or "scan" in n for n in names)
    assert _leaks(out, {b"Suzuki", b"Yamada", b"556677", b"2021:05:06"}) == []
    table = load_table(tmp_path / "link.table", SECRET)
    (row,) = table.rows.values()
    assert row.patient_id == "Yamada-Taro-556677"
    assert "Dr Suzuki Ichiro" in row.identifiers["exif.Artist"]


def test_patient_subfolders_in_one_input_are_noted(tmp_path, capsys):
    # photos/P1, photos/P2 given as 'photos': one patient, 'photos'; the user is told
    img = Image.fromarray(np.zeros((16, 16, 3), np.uint8))
    for name in ("P1", "P2"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        img.save(tmp_path / "photos" / name / "a.png")
    key = _key(tmp_path)
    result = export(
        [tmp_path / "photos"], tmp_path / "exp", "TEST", tmp_path / "t", key, mask_images=False
    )
    assert result.cases == 1
    err = capsys.readouterr().err
    assert "2 subfolders (P1, P2) all go to one patient, 'photos'" in err, err
    assert "2 plain image(s) not searched for burned-in text" in err, err
    export([tmp_path / "photos" / "P1"], tmp_path / "exp2", "TEST", tmp_path / "t", key)
    assert "all go to one patient" not in capsys.readouterr().err


def test_second_dicomdir_of_the_same_files_says_why_held_back(tmp_path):
    src = tmp_path / "in"
    shutil.copytree(PYDICOM_FILES / "dicomdirtests", src)
    for extra in src.glob("DICOMDIR-*"):  # keep DICOMDIR and one copy of it
        extra.unlink()
    shutil.copy(src / "DICOMDIR", src / "DICOMDIR-copy")
    _run(tmp_path, [src])
    held = json.loads((tmp_path / "exp" / "manifest.json").read_text())["held_back"]
    reasons = [h["reason"] for h in held if h["kind"] == "dicomdir"]
    assert reasons == ["it lists no files other than those of an earlier DICOMDIR (or none)"]


def test_patient_map(tmp_path):
    a = tmp_path / "a.png"
    b = tmp_path / "b.png"
    for p in (a, b):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(p)
    (tmp_path / "map.csv").write_text("path,patient_id\na.png,P-000111\nb.png,P-000111\n")
    result = _run(tmp_path, [a, b], patient_map=tmp_path / "map.csv")
    assert result.cases == 1
    (row,) = load_table(tmp_path / "link.table", SECRET).rows.values()
    assert row.patient_id == "P-000111"
    (tmp_path / "bad.csv").write_text("file,id\n")
    with pytest.raises(InputError, match="needs the columns path,patient_id"):
        _run(tmp_path, [a], "x", patient_map=tmp_path / "bad.csv")


def _leaky_dicom(folder: Path) -> Path:
    """A CT whose allow-listed private binary element holds the patient's name."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Leaky^Person"
    block = ds.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "OB", b"notes: Leaky^Person\x00")
    path = folder / "leaky.dcm"
    ds.save_as(path)
    return path


def test_failed_check_leaves_nothing(tmp_path):
    src = _leaky_dicom(tmp_path)
    key = tmp_path / "new.key"
    profile = Profile(private_allow=("ACME 1.0/0029,xx10",))
    with pytest.raises(ExportCheckFailed, match="still holds identifiers.*Leaky"):
        export([src], tmp_path / "exp", "TEST", tmp_path / "link.table", key, profile=profile,
               progress=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaky.dcm"]  # no out, table, key
    # the same file with the private tag removed (the default) exports
    export([src], tmp_path / "exp", "TEST", tmp_path / "link.table", key, progress=False)
    assert (tmp_path / "exp" / "manifest.json").exists() and key.exists()


def test_out_rules(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="holds files shindan did not write"):
        _run(tmp_path, [src], "mine")
    assert (mine / "notes.txt").read_text() == "keep"
    _run(tmp_path, [src], "exp")
    _run(tmp_path, [src], "exp")  # a previous export is replaced
    key = tmp_path / "site.key"
    with pytest.raises(InputError, match="--link-table .* is inside --out"):
        export([src], tmp_path / "exp", "TEST", tmp_path / "exp" / "t", key, progress=False)
    with pytest.raises(InputError, match="--key-file .* is inside --out"):
        export(
            [src], tmp_path / "exp", "TEST", tmp_path / "t", tmp_path / "exp" / "k", progress=False
        )
    with pytest.raises(InputError, match="--site"):
        export([src], tmp_path / "x", "bad site!", tmp_path / "t", key, progress=False)
    with pytest.raises(InputError, match="is inside the input folder"):
        export([tmp_path], tmp_path / "sub" / "x", "TEST", tmp_path / "t", key, progress=False)


def test_wrong_key_leaves_table_and_out_untouched(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    _run(tmp_path, [src])
    table = tmp_path / "link.table"
    before = table.read_bytes()
    other = tmp_path / "other.key"
    with pytest.raises(InputError, match="cannot be decrypted with this key file"):
        export([src], tmp_path / "exp2", "TEST", table, other, progress=False)
    assert table.read_bytes() == before
    assert not (tmp_path / "exp2").exists() and not other.exists()


def test_staging_removed_on_interrupt(tmp_path, monkeypatch):
    import shindan.deid.export as mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "save_table", boom)
    src = get_testdata_file("CT_small.dcm")
    with pytest.raises(KeyboardInterrupt):
        export([src], tmp_path / "exp", "TEST", tmp_path / "t", tmp_path / "k", progress=False)
    assert list(tmp_path.iterdir()) == []
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_broken_and_hostile_files_are_held_back_with_one_line(tmp_path):
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "truncated.dcm").write_bytes(data[: len(data) // 2])
    huge = bytearray(data)
    at = huge.find(b"\x10\x00\x10\x00PN")  # Patient's Name: claim a 4 GB value
    huge[at + 6 : at + 8] = b"\xff\xff"
    (inputs / "huge.dcm").write_bytes(bytes(huge))
    (inputs / "empty.dcm").write_bytes(b"")
    (inputs / "notes.svs").write_text("not a slide")
    ok = inputs / "ok.dcm"
    ok.write_bytes(data)
    result = _run(tmp_path, [inputs])
    assert result.files == 1
    held = {src.name: reason for _, src, reason in result.held_back}
    assert set(held) == {"truncated.dcm", "huge.dcm", "empty.dcm", "notes.svs"}
    assert all("\n" not in r and r for r in held.values())
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert [h["path"] for h in manifest["held_back"]] == [f"held-back-{i:04d}" for i in range(1, 5)]
    assert not any(name in json.dumps(manifest) for name in held)


def _text_image(lines, size=(640, 480)) -> np.ndarray | None:
    import shutil as sh
    import subprocess

    from PIL import ImageDraw, ImageFont

    try:
        latin = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 22)
    except OSError:
        return None
    out = (
        subprocess.run(
            ["fc-list", ":lang=ja", "-f", "%{file}\n"], capture_output=True, text=True
        ).stdout.split()
        if sh.which("fc-list")
        else []
    )
    if not out:
        return None
    ja = ImageFont.truetype(next((f for f in sorted(out) if "gothic" in f.lower()), out[0]), 26)
    img = Image.new("L", size, 0)
    d = ImageDraw.Draw(img)
    d.ellipse((120, 120, 520, 460), fill=90)  # something that is not text
    for xy, text, font in lines(latin, ja):
        d.text(xy, text, fill=255, font=font)
    return np.asarray(img)


@pytest.mark.slow  # Tesseract on two images, twice each
def test_burned_in_text_english_and_japanese(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from shindan.deid.burned_in import OcrUnavailable, check_ocr, read_words

    try:
        check_ocr(("eng", "jpn"))
    except OcrUnavailable as exc:
        pytest.skip(str(exc))
    pixels = _text_image(
        lambda latin, ja: [
            ((10, 10), "YAMADA TARO  ID 4455667", latin),
            ((10, 50), "山田太郎 様", ja),
        ]
    )
    if pixels is None:
        pytest.skip("no DejaVu or Japanese font installed")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # ultrasound image
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "US", "Yamada^Taro", "4455667"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.tobytes()
    src = tmp_path / "us.dcm"
    ds.save_as(src, enforce_file_format=True)
    png = tmp_path / "screen.png"
    Image.fromarray(pixels).save(png)
    result = _run(tmp_path, [src, png])  # plain images are masked by default
    assert result.files == 2, result.held_back
    out = tmp_path / "exp"
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(f["masked_regions"] > 0 for f in manifest["files"])
    exported = pydicom.dcmread(next(out.rglob("*.dcm"))).pixel_array
    masked_png = np.asarray(Image.open(next(out.rglob("*.png"))))
    for img in (exported, masked_png):
        words = " ".join(w.text for w in read_words(img, ("eng", "jpn")))
        assert "YAMADA" not in words.upper() and "4455667" not in words and "山田" not in words
        assert np.array_equal(img[300:400, 250:400], pixels[300:400, 250:400])  # not text: kept
    assert check_export(out) == []


def test_a_shifted_date_equal_to_another_original_date_is_not_a_leak(tmp_path):
    """Two studies of one patient exactly one date shift apart: the later one, shifted, lands
    on the earlier one's original date. That is legitimate, and the export must pass."""
    import datetime as dt

    from pydicom.uid import generate_uid

    from shindan.deid.pseudonyms import Pseudonymiser

    shift = Pseudonymiser(SECRET, "TEST").shift_days("COLLIDE-778899")
    first = dt.date(2015, 6, 1)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, day in enumerate((first, first + dt.timedelta(days=shift))):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID = "COLLIDE-778899"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day.strftime("%Y%m%d")
        ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
        ds.save_as(folder / f"{i}.dcm")
    result = _run(tmp_path, [folder])
    assert result.files == 2
    dates = {pydicom.dcmread(f).StudyDate for f in (tmp_path / "exp").rglob("*.dcm")}
    assert first.strftime("%Y%m%d") in dates  # the later study, shifted
    table = load_table(tmp_path / "link.table", SECRET)
    from shindan.deid.check import known_from_table

    assert check_export(tmp_path / "exp", known_from_table(table, SECRET)) == []
    # without the key the check cannot tell, and says so with a finding
    assert check_export(tmp_path / "exp", known_from_table(table)) != []
