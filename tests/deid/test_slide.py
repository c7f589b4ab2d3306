"""Whole-slide de-identification: every shared slide, and made-up TIFFs with known identifiers.

The leak checks do not use the module's own list: the identifiers are read from each
original with tifffile here (Aperio description fields, NDPI dates, serials and calibration
text, OME-XML names and file names) and the written file's bytes are searched for them.
Pixels are compared through OpenSlide, tiffslide, tifffile and shindan.io.open_slide.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile

from shindan.deid.records import Exported, HeldBack, Identifiers
from shindan.deid.slide import deidentify_slide, scrub_aperio
from shindan.errors import InputError
from shindan.io import open_slide

SLIDES = [
    "CMU-1-Small-Region.svs",
    "test3-DAPI-2-387.ndpi",
    "test3-TRITC_2_560.ndpi",
    "4D-series.ome.tiff",
    "openslide-fixtures/boxes.tiff",
    "openslide-fixtures/small.svs",
]
NDPI_TEXT_KEYS = ("Created", "Updated", "NDP.S/N", "Macro.S/N", "Date", "SerialNumber")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _known_identifiers(path: Path) -> set[str]:
    """Identifying strings in a slide's metadata, read independently of the module."""
    found = {path.name.split(".")[0]}
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            desc = page.description or ""
            for key in ("Filename", "Date", "Time", "User", "ScanScope ID", "ImageID"):
                m = re.search(rf"\|{key} = ([^|]+)", desc)
                if m:
                    found.add(m.group(1).strip())
            tags = page.tags
            if "DateTime" in tags:
                found.add(str(tags["DateTime"].value))
            if 65442 in tags:
                found.add(str(tags[65442].value))
            if 65449 in tags:
                text = str(tags[65449].value).replace("\r", "\n")
                for key in NDPI_TEXT_KEYS:
                    for m in re.finditer(rf"^;?{re.escape(key)}=(.+)$", text, re.M):
                        found.add(m.group(1).strip())
        if tif.is_ome:
            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                name = el.tag.rsplit("}", 1)[-1]
                for attr in ("Name", "FileName", "UUID"):
                    if el.get(attr) and name != "Channel":
                        found.add(el.get(attr))
                if name in ("UUID", "AcquisitionDate", "FirstName", "LastName") and el.text:
                    found.add(el.text.strip())
    return {f for f in found if len(f) >= 4}


def _regions(w: int, h: int, size: int = 256) -> list[tuple[int, int]]:
    return [(0, 0), (w // 2, h // 2), (max(w - size, 0), max(h - size, 0)), (w // 3, h // 5)]


@pytest.fixture(scope="module")
def cleaned(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    results = {}
    for name in SLIDES:
        src = shared_data / "slides" / name
        before = _sha(src)
        dst = out / f"{len(results)}{''.join(Path(name).suffixes)}"
        results[name] = (src, dst, deidentify_slide(src, dst, None, "KYOTO-TEST", Identifiers("p")))
        assert _sha(src) == before  # the input is never modified
    return results


@pytest.mark.data
@pytest.mark.parametrize("name", SLIDES)
def test_shared_slide_is_clean_and_identical(cleaned, name):
    src, dst, result = cleaned[name]
    assert isinstance(result, Exported), getattr(result, "reason", "")
    assert result.path == dst and result.case == "KYOTO-TEST" and result.modality == "SM"
    data = dst.read_bytes()
    known = _known_identifiers(src)
    leaked = sorted(k for k in known if k.encode() in data)
    assert not leaked, f"identifiers left in {name}: {leaked}"
    with tifffile.TiffFile(dst) as tif:
        for page in tif.pages:
            desc = page.description or ""
            assert not re.search(r"\b(label|macro)\b", desc)
            if 65421 in page.tags:
                assert page.tags[65421].value > 0  # no NDPI macro (-1) or map (-2)
            for tag in ("DateTime", "Artist", "HostComputer", "DocumentName", "XMP"):
                assert tag not in page.tags

    with open_slide(src) as a, open_slide(dst) as b:
        assert (a.format, a.dimensions, a.level_dimensions) == (
            b.format,
            b.dimensions,
            b.level_dimensions,
        )
        assert a.mpp == b.mpp
        for name_ in b.associated_names:
            assert name_ not in ("label", "macro")
        w, h = a.dimensions
        if w * h <= 4096 * 4096:
            assert np.array_equal(
                a.read_region((0, 0), 0, (w, h)), b.read_region((0, 0), 0, (w, h))
            )

    import openslide

    if openslide.OpenSlide.detect_format(str(src)):
        import tiffslide

        for lib in (openslide, tiffslide):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a, b = lib.OpenSlide(str(src)), lib.OpenSlide(str(dst))
            try:
                assert a.level_dimensions == b.level_dimensions
                assert not {"label", "macro"} & set(b.associated_images)
                key = f"{lib.__name__}.mpp-x"
                assert a.properties.get(key) == b.properties.get(key)
                for xy in _regions(*a.dimensions):
                    ra = np.asarray(a.read_region(xy, 0, (256, 256)))
                    rb = np.asarray(b.read_region(xy, 0, (256, 256)))
                    assert np.array_equal(ra, rb), (lib.__name__, xy)
            finally:
                a.close()
                b.close()


@pytest.mark.data
def test_cmu1_label_and_macro_are_gone(cleaned):
    src, dst, result = cleaned["CMU-1-Small-Region.svs"]
    import openslide

    with openslide.OpenSlide(str(src)) as a:
        assert {"label", "macro"} <= set(a.associated_images)  # the test can fail
    with openslide.OpenSlide(str(dst)) as b:
        assert set(b.associated_images) == {"thumbnail"}
        assert b.properties["aperio.AppMag"] == "20"
        assert "aperio.User" not in b.properties and "aperio.Filename" not in b.properties
    assert result.identifiers.values["svs.Filename"] == "CMU-1"
    assert dst.stat().st_size < src.stat().st_size  # the removed images left no bytes


@pytest.mark.data
@pytest.mark.parametrize("name", ["unreadable.svs", "unopenable.tiff", "boxes.png", "boxes_0.dcm"])
def test_broken_or_non_tiff_fixtures_are_held_back(shared_data, tmp_path, name):
    src = shared_data / "slides" / "openslide-fixtures" / name
    dst = tmp_path / ("out" + src.suffix)
    result = deidentify_slide(src, dst, None, "C", Identifiers("p"))
    assert isinstance(result, HeldBack) and result.path == src
    assert "\n" not in result.reason
    assert not dst.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def _pyramid(tmp_path: Path, **kwargs) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "in.tif"
    with tifffile.TiffWriter(path, **kwargs) as tw:
        common = dict(tile=(64, 64), compression="zlib", photometric="rgb")
        tw.write(
            image,
            subifds=1,
            resolution=(40000, 40000),
            resolutionunit="CENTIMETER",
            datetime="2021:03:04 05:06:07",
            software="TestScan 1.0",
            description="Patient Hanako Suzuki, 12345678",
            extratags=[
                (315, "s", 0, "Dr Taro Yamada", True),
                (316, "s", 0, "WS-KYOTO-42", True),
                (269, "s", 0, "case-12345678.tif", True),
                (700, "B", 0, b"<x:xmpmeta>Hanako Suzuki</x:xmpmeta>", True),
            ],
            **common,
        )
        tw.write(image[::2, ::2], subfiletype=1, **common)
    return path, image


@pytest.mark.parametrize("kwargs", [{}, {"bigtiff": True, "byteorder": ">"}])
def test_plain_tiff_tags_dropped_pixels_identical(tmp_path, kwargs):
    src, image = _pyramid(tmp_path, **kwargs)
    dst = tmp_path / "out.tif"
    result = deidentify_slide(src, dst, None, "C", Identifiers("p"))
    assert isinstance(result, Exported), getattr(result, "reason", "")
    data = dst.read_bytes()
    for word in (b"Hanako", b"Suzuki", b"12345678", b"Yamada", b"WS-KYOTO", b"2021:03:04"):
        assert word not in data
    with tifffile.TiffFile(dst) as tif:
        assert tif.is_bigtiff == bool(kwargs)
        page = tif.pages[0]
        assert np.array_equal(page.asarray(), image)
        assert np.array_equal(page.pages[0].asarray(), image[::2, ::2])  # the SubIFD level
        assert page.tags["XResolution"].value == (40000, 1)
        assert page.software == "TestScan 1.0"  # software and make/model are kept
    assert result.identifiers.values["tiff.Artist"] == "Dr Taro Yamada"


def test_plain_tiff_with_a_label_like_page_is_held_back(tmp_path):
    src = tmp_path / "in.tif"
    with tifffile.TiffWriter(src) as tw:
        tw.write(np.zeros((400, 300), np.uint8), tile=(64, 64))
        tw.write(np.full((100, 300), 255, np.uint8))  # a wide strip: could be a label
    dst = tmp_path / "out.tif"
    result = deidentify_slide(src, dst, None, "C", Identifiers("p"))
    assert isinstance(result, HeldBack) and "label" in result.reason
    assert not dst.exists()


OME = """<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="urn:uuid:1111-2222">
<Experimenter ID="Experimenter:0" FirstName="Hanako" LastName="Suzuki" Email="hs@kyoto.example"/>
<Image ID="Image:0" Name="{name}"><AcquisitionDate>2020-02-03T04:05:06</AcquisitionDate>
<ExperimenterRef ID="Experimenter:0"/><Description>biopsy of Hanako Suzuki</Description>
<Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" SizeX="64" SizeY="48" SizeZ="1"
 SizeC="2" SizeT="1" PhysicalSizeX="0.25" PhysicalSizeY="0.25">
<Channel ID="Channel:0:0" Name="DAPI" SamplesPerPixel="1"/>
<Channel ID="Channel:0:1" Name="FITC" SamplesPerPixel="1"/>
<TiffData IFD="0" PlaneCount="2"><UUID FileName="S-12345678.ome.tiff">urn:uuid:1111-2222</UUID>
</TiffData></Pixels><AnnotationRef ID="Annotation:0"/></Image>
<StructuredAnnotations><CommentAnnotation ID="Annotation:0"><Value>MRN 12345678</Value>
</CommentAnnotation></StructuredAnnotations></OME>"""


def _ome(tmp_path: Path, name: str) -> tuple[Path, np.ndarray]:
    planes = np.random.default_rng(1).integers(0, 255, (2, 48, 64), dtype=np.uint8)
    src = tmp_path / "in.ome.tiff"
    tifffile.imwrite(src, planes, description=OME.format(name=name), metadata=None)
    return src, planes


def test_ome_xml_names_dates_annotations_removed(tmp_path):
    src, planes = _ome(tmp_path, "S-12345678 Hanako")
    dst = tmp_path / "out.ome.tiff"
    result = deidentify_slide(src, dst, None, "C", Identifiers("p"))
    assert isinstance(result, Exported), getattr(result, "reason", "")
    data = dst.read_bytes()
    for word in (b"Hanako", b"Suzuki", b"12345678", b"kyoto", b"2020-02-03", b"1111-2222"):
        assert word not in data
    with tifffile.TiffFile(dst) as tif:
        assert tif.is_ome
        assert np.array_equal(tif.series[0].asarray(), planes)
        xml = tif.ome_metadata
        assert 'Name="DAPI"' in xml and 'PhysicalSizeX="0.25"' in xml  # channels, scale kept
        for gone in ("Experimenter", "AcquisitionDate", "StructuredAnnotations", "Description"):
            assert gone not in xml
    with open_slide(dst) as slide:
        assert slide.mpp == 0.25


def test_ome_with_a_label_image_is_held_back(tmp_path):
    src, _ = _ome(tmp_path, "label")
    result = deidentify_slide(src, tmp_path / "out.ome.tiff", None, "C", Identifiers("p"))
    assert isinstance(result, HeldBack) and "label" in result.reason


def test_vendor_flavour_not_understood_is_held_back(tmp_path):
    src = tmp_path / "in.tiff"
    desc = '<?xml version="1.0"?><DataObject ObjectType="DPUfsImport"></DataObject>'
    tifffile.imwrite(src, np.zeros((64, 64), np.uint8), software="Philips DP v1.0",
                     description=desc, metadata=None)  # fmt: skip
    result = deidentify_slide(src, tmp_path / "out.tiff", None, "C", Identifiers("p"))
    assert isinstance(result, HeldBack) and "philips" in result.reason


def test_truncated_tiff_is_held_back_and_existing_output_refused(tmp_path):
    src, _ = _pyramid(tmp_path)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    result = deidentify_slide(cut, tmp_path / "o1.tif", None, "C", Identifiers("p"))
    assert isinstance(result, HeldBack)
    assert not (tmp_path / "o1.tif").exists()
    taken = tmp_path / "taken.tif"
    shutil.copy(src, taken)
    with pytest.raises(InputError, match="already exists"):
        deidentify_slide(src, taken, None, "C", Identifiers("p"))
    assert _sha(taken) == _sha(src)


def test_identifier_given_by_the_export_is_searched_for(tmp_path):
    """A value the export knows (here the software string) still in the file: held back."""
    src, _ = _pyramid(tmp_path)
    dst = tmp_path / "out.tif"
    result = deidentify_slide(src, dst, None, "C", Identifiers("p", {"x": "TestScan 1.0"}))
    assert isinstance(result, HeldBack) and "identifiers still found" in result.reason
    assert not dst.exists()


def test_scrub_aperio_keeps_only_technical_fields():
    text, found = scrub_aperio(
        "Aperio Image Library v1\r\n10x10|AppMag = 20|MPP = 0.5|Filename = X1|Barcode = B9|Foo = 1"
    )
    assert text == "Aperio Image Library v1\r\n10x10|AppMag = 20|MPP = 0.5"
    assert found == {"Filename": "X1", "Barcode": "B9"}


def test_ome_with_planes_or_metadata_elsewhere_is_held_back(tmp_path):
    planes = np.zeros((2, 48, 64), np.uint8)
    other = OME.format(name="x").replace(
        '<UUID FileName="S-12345678.ome.tiff">urn:uuid:1111-2222</UUID>',
        '<UUID FileName="part2.ome.tiff">urn:uuid:3333-4444</UUID>',
    )
    companion = (
        '<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<BinaryOnly MetadataFile="study.companion.ome" UUID="urn:uuid:5"/></OME>'
    )
    for i, xml in enumerate((other, companion)):
        src = tmp_path / f"in{i}.ome.tiff"
        tifffile.imwrite(src, planes, description=xml, metadata=None)
        result = deidentify_slide(src, tmp_path / f"o{i}.ome.tiff", None, "C", Identifiers("p"))
        assert isinstance(result, HeldBack), i
        assert "file" in result.reason
