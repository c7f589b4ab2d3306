"""``shindan annotations convert``: round trips between every pair of formats, real files,
vocabularies, bad input.

What each format cannot carry (and so what a round trip through it may lose) is declared in
its registry entry and checked here against what really comes back:

- geojson: carries everything (holes, points, multipolygons, instance ids, classes,
  properties, µm/px, image size).
- imagescope: no points, no image size, no properties.
- asap: no holes, no µm/px, no image size, no properties.
- labelme: no holes, no properties.
- coco: no holes, no points, no properties.
- mask: rasterises (compared by IoU ≥ 0.99 per class), no points, no instance ids,
  multipolygons become separate regions.
- instance-mask: rasterises, no points, no classes.
- dicom-ann: no holes, no instance ids, no multipolygons, no µm/px or size of its own (they
  are the source image's).
- dicom-seg: rasterises, no points, no instance ids.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.errors import AnnotationError
from shindan.io.annotation_formats import (
    AnnotatedObject,
    Annotations,
    FormatOptions,
    MultiPolygon,
    Point,
    Polygon,
    default_vocabulary,
    get_format,
    list_formats,
    load_vocabulary,
    losses,
    read_annotations,
)
from shindan.io.annotation_formats.coco import rle_decode
from shindan.io.annotation_formats.convert import convert
from shindan.io.annotation_formats.geometry import label_map_to_objects, paint, trace
from shindan.io.annotation_formats.model import polygons_of

SHINDAN = [str(Path(sys.executable).with_name("shindan"))]
VECTOR = ["geojson", "imagescope", "asap", "labelme", "coco"]
RASTER = ["mask", "instance-mask"]
SUFFIX = {
    "geojson": ".geojson",
    "imagescope": ".xml",
    "asap": ".xml",
    "labelme": ".json",
    "coco": ".json",
    "mask": ".png",
    "instance-mask": ".tif",
    "dicom-ann": ".dcm",
    "dicom-seg": ".dcm",
}
SIZE = (128, 128)  # CT_small.dcm, the DICOM source every machine has (pydicom's test data)


def ct_small() -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm"))


def sample() -> Annotations:
    """Every kind of thing a format may carry, on a 128x128 image at 0.25 µm/px."""
    glom = Polygon(
        [[10.5, 10], [60, 12.25], [58, 60], [12, 58]],
        holes=([[25, 25], [40, 25], [40, 40], [25, 40]],),
    )
    tub = MultiPolygon(
        (
            Polygon([[70, 10], [100, 10], [100, 30], [70, 30]]),
            Polygon([[70, 40], [110, 40], [110, 60], [90, 70], [70, 60]]),
        )
    )
    vessel = Polygon([[20, 80], [50, 75], [55, 110], [15, 115]])
    return Annotations(
        [
            AnnotatedObject(glom, "glomerulus", 1),
            AnnotatedObject(tub, "tubule", 2),
            AnnotatedObject(vessel, "vessel", 3),
            AnnotatedObject(Point([90.5, 100.25]), "nucleus", 4),
        ],
        SIZE,
        0.25,
    )


def reduce(anns: Annotations, carries: frozenset[str]) -> Annotations:
    """What of ``anns`` a format that carries ``carries`` can give back."""
    out = []
    for o in anns.objects:
        if isinstance(o.geometry, Point):
            if "points" in carries:
                out.append(o)
            continue
        polys = [p if "holes" in carries else Polygon(p.exterior) for p in polygons_of(o.geometry)]
        if "multipolygons" in carries and len(polys) > 1:
            out.append(o.replace(geometry=MultiPolygon(tuple(polys))))
        else:
            out += [o.replace(geometry=p) for p in polys]
    out = [
        o.replace(
            instance_id=o.instance_id if "instance_ids" in carries else None,
            label=o.label if "classes" in carries else "",
            properties={},
        )
        for o in out
    ]
    return Annotations(
        out,
        anns.image_size if "image_size" in carries else None,
        anns.mpp if "mpp" in carries else None,
    )


def key(o: AnnotatedObject) -> tuple:
    first = (
        o.geometry.xy if isinstance(o.geometry, Point) else polygons_of(o.geometry)[0].exterior[0]
    )
    return (o.label, o.instance_id if o.instance_id is not None else -1, *np.round(first, 3))


def assert_same_vectors(expected: Annotations, got: Annotations) -> None:
    """Same objects (any order), same geometry vertex for vertex, same classes and ids."""
    a, b = sorted(expected.objects, key=key), sorted(got.objects, key=key)
    assert [(o.label, o.kind, o.instance_id) for o in a] == [
        (o.label, o.kind, o.instance_id) for o in b
    ]
    for x, y in zip(a, b, strict=True):
        if isinstance(x.geometry, Point):
            np.testing.assert_allclose(x.geometry.xy, y.geometry.xy)
            continue
        for p, q in zip(polygons_of(x.geometry), polygons_of(y.geometry), strict=True):
            np.testing.assert_allclose(p.exterior, q.exterior)
            assert len(p.holes) == len(q.holes)
            for h, k in zip(p.holes, q.holes, strict=True):
                np.testing.assert_allclose(h, k)
    assert got.mpp == pytest.approx(expected.mpp) if expected.mpp else got.mpp is None
    assert got.image_size == expected.image_size


def class_iou(expected: Annotations, got: Annotations) -> dict[str, float]:
    """IoU per class of the two annotations painted on the image's grid."""
    shape = (SIZE[1], SIZE[0])
    out = {}
    for c in {o.label for o in expected.objects if o.kind != "point"}:
        a = paint(expected, shape, lambda o, i, c=c: o.label == c, bool)
        b = paint(got, shape, lambda o, i, c=c: o.label == c, bool)
        out[c] = (a & b).sum() / max((a | b).sum(), 1)
    return out


def write_read(anns: Annotations, fmt: str, folder: Path, options=None) -> Annotations:
    path = folder / f"through_{fmt}{SUFFIX[fmt]}"
    f = get_format(fmt)
    f.write(anns, path, options)
    return f.read(path, options)


# ------------------------------------------------------------------------------- the model
def test_registry_lists_every_format_of_the_issue() -> None:
    names = [f.name for f in list_formats()]
    assert names == [
        "geojson",
        "imagescope",
        "asap",
        "labelme",
        "coco",
        "mask",
        "instance-mask",
        "dicom-ann",
        "dicom-seg",
    ]
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        get_format("shapefile")


def test_losses_name_what_a_format_cannot_carry() -> None:
    anns = sample()
    assert losses(anns, "geojson") == []
    asap = losses(anns, "asap")
    assert any("holes" in n for n in asap) and any("µm/px" in n for n in asap)
    assert any("points" in n for n in losses(anns, "coco"))
    assert any("rasterises" in n for n in losses(anns, "mask"))


# ------------------------------------------------------------------------- vector round trips
@pytest.mark.parametrize("first,second", list(itertools.product(VECTOR, VECTOR)))
def test_vector_round_trip(first: str, second: str, tmp_path: Path) -> None:
    """sample → first → second → read: exactly what both formats can carry."""
    anns = sample()
    got = write_read(write_read(anns, first, tmp_path), second, tmp_path)
    carries = get_format(first).carries & get_format(second).carries
    assert_same_vectors(reduce(anns, carries), got)


@pytest.mark.parametrize("fmt", VECTOR)
def test_holes_multipolygons_points_survive_where_carried(fmt: str, tmp_path: Path) -> None:
    got = write_read(sample(), fmt, tmp_path)
    carries = get_format(fmt).carries
    assert (got.count("holes") == 1) == ("holes" in carries)
    assert (got.count("multipolygons") == 1) == ("multipolygons" in carries)
    assert (got.count("points") == 1) == ("points" in carries)


# ------------------------------------------------------------------------- raster round trips
@pytest.mark.parametrize("vector,raster", list(itertools.product(VECTOR, RASTER)))
def test_raster_round_trip_by_iou(vector: str, raster: str, tmp_path: Path) -> None:
    """vector → raster → vector: the painted pixels agree (IoU ≥ 0.99 per class)."""
    anns = sample()
    options = FormatOptions(label="glomerulus") if raster == "instance-mask" else None
    if raster == "instance-mask":  # one class: what an instance mask can name
        anns = anns.replace(objects=[o.replace(label="glomerulus") for o in anns.objects])
    # what --size and --mpp give when the vector format records no size or scale
    vec = write_read(anns, vector, tmp_path).replace(image_size=SIZE, mpp=0.25)
    got = write_read(vec, raster, tmp_path, options)
    back = write_read(got, vector, tmp_path)
    expected = reduce(anns, get_format(vector).carries)
    for g in (got, back):
        iou = class_iou(expected, g)
        assert iou and min(iou.values()) >= 0.99, iou
    assert got.image_size == SIZE
    assert got.mpp == pytest.approx(0.25, rel=1e-6)  # PNG pHYs / TIFF resolution
    if raster == "instance-mask":
        # the ids come back, the tubule's two pieces stay one object
        assert sorted(o.instance_id for o in got.objects) == [1, 2, 3]
        assert {o.kind for o in got.objects if o.instance_id == 2} == {"multipolygon"}


def test_trace_paints_back_to_the_same_pixels() -> None:
    rng = np.random.default_rng(0)
    from scipy import ndimage

    lab = ndimage.label(ndimage.binary_opening(rng.random((150, 170)) > 0.45))[0]
    objs = label_map_to_objects(lab, instances=True, name_of=lambda v: "x")
    back = paint(Annotations(objs), lab.shape, lambda o, i: o.instance_id, np.int32)
    assert np.array_equal(back, lab)
    classes = (rng.random((90, 80)) * 4).astype(np.uint8)
    objs = label_map_to_objects(classes, instances=False, name_of=str)
    back = paint(Annotations(objs), classes.shape, lambda o, i: int(o.label), np.uint8)
    assert np.array_equal(back, classes)
    ring = np.zeros((5, 5), bool)
    ring[1:4, 1:4] = True
    ring[2, 2] = False
    assert [len(p.holes) for p in trace(ring)] == [1]


# ---------------------------------------------------------------------------------- DICOM
def test_dicom_ann_round_trip(tmp_path: Path) -> None:
    anns = sample()
    options = FormatOptions(image=ct_small())
    got = write_read(anns, "dicom-ann", tmp_path, options)
    assert_same_vectors(reduce(anns, get_format("dicom-ann").carries), got)
    # and back out through GeoJSON: the class names are the vocabulary's again
    back = write_read(got, "geojson", tmp_path)
    assert sorted(back.classes()) == ["glomerulus", "nucleus", "tubule", "vessel"]


def test_dicom_seg_round_trip(tmp_path: Path) -> None:
    import pydicom

    anns = sample()
    path = tmp_path / "seg.dcm"
    get_format("dicom-seg").write(anns, path, FormatOptions(image=ct_small()))
    ds = pydicom.dcmread(path)
    src = pydicom.dcmread(ct_small(), stop_before_pixels=True)
    assert ds.StudyInstanceUID == src.StudyInstanceUID  # it references its source
    codes = {
        s.SegmentLabel: s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in ds.SegmentSequence
    }
    assert codes["vessel"] == "59820001" and codes["glomerulus"] == "glomerulus"
    got = get_format("dicom-seg").read(path, FormatOptions())
    iou = class_iou(reduce(anns, get_format("dicom-seg").carries), got)
    assert set(iou) == {"glomerulus", "tubule", "vessel"} and min(iou.values()) >= 0.99
    assert got.image_size == SIZE


def test_dicom_on_a_real_slide(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "slides/openslide-fixtures/boxes_0.dcm"
    square = Polygon(
        [[2, 2], [12, 2], [12, 12], [2, 12]], holes=([[5, 5], [8, 5], [8, 8], [5, 8]],)
    )
    anns = Annotations([AnnotatedObject(square, "glomerulus")], (16, 16))
    src = tmp_path / "a.geojson"
    get_format("geojson").write(anns, src, FormatOptions())
    r = convert(src, tmp_path / "seg.dcm", target_format="dicom-seg", image=source)
    assert r.annotations.mpp == pytest.approx(0.499)  # from the slide's pixel spacing
    back = read_annotations(tmp_path / "seg.dcm")
    assert back.mpp == pytest.approx(0.499) and back.count("holes") == 1
    assert class_iou_at(anns, back, (16, 16)) == 1.0


def class_iou_at(a: Annotations, b: Annotations, shape: tuple[int, int]) -> float:
    x = paint(a, shape, lambda o, i: True, bool)
    y = paint(b, shape, lambda o, i: True, bool)
    return float((x & y).sum() / (x | y).sum())


# ------------------------------------------------------------------------------ real files
def test_real_geojson_through_every_vector_format(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "nuclei/monuseg-train/annotations/TCGA-B0-5711-01Z-00-DX1.geojson"
    anns = read_annotations(path)
    assert len(anns) == 342 and anns.classes() == ["Nucleus"]
    # writers name classes as the vocabulary does ("Nucleus" is its "nucleus")
    anns = anns.replace(objects=[o.replace(label="nucleus") for o in anns.objects])
    for fmt in VECTOR:
        got = write_read(anns, fmt, tmp_path)
        carries = get_format(fmt).carries
        if fmt == "coco":  # COCO numbers every annotation: ids appear that the file lacked
            carries -= {"instance_ids"}
            got = reduce(got, carries)
        assert_same_vectors(reduce(anns, carries), got)


def test_real_imagescope_keeps_mpp_and_matches_the_legacy_reader(
    shared_data: Path, tmp_path: Path
) -> None:
    from shindan.io.annotations import read_imagescope_xml

    path = shared_data / "nuclei/monuseg-train/annotations/TCGA-21-5786-01Z-00-DX1.xml"
    anns = read_annotations(path)
    legacy = read_imagescope_xml(path)
    assert len(anns) == len(legacy) == 440 and anns.mpp == pytest.approx(0.2527)
    r = convert(path, tmp_path / "n.geojson")
    back = convert(tmp_path / "n.geojson", tmp_path / "n.xml", target_format="imagescope")
    assert back.annotations.mpp == pytest.approx(0.2527) and len(back.annotations) == 440
    assert_same_vectors(r.annotations, read_annotations(tmp_path / "n.xml"))


@pytest.mark.slow
def test_every_real_polygon_file_reads_as_the_training_reader_does(
    shared_data: Path, tmp_path: Path
) -> None:
    """The 13 MoNuSeg polygon files: the same outlines as io.annotations (what training
    reads), and (every fourth) through ImageScope and back to GeoJSON vertex for vertex."""
    from shindan.io.annotations import read_annotations as read_legacy

    files = sorted((shared_data / "nuclei/monuseg-train/annotations").iterdir())
    assert len(files) == 13
    for i, path in enumerate(files):
        anns = read_annotations(path)
        pieces = [p.exterior for o in anns.objects for p in polygons_of(o.geometry)]
        legacy = read_legacy(path)
        assert len(pieces) == len(legacy), path.name
        for ours, theirs in zip(pieces, legacy, strict=True):
            ring = theirs.polygon
            while np.array_equal(ring[0], ring[-1]):  # closing vertex, repeated in some files
                ring = ring[:-1]
            np.testing.assert_array_equal(ours, ring)
        if i % 4:  # the round trip on every fourth file is enough (CPU time in CI)
            continue
        xml = convert(path, tmp_path / f"{path.stem}.xml", target_format="imagescope", mpp=0.2527)
        back = convert(tmp_path / f"{path.stem}.xml", tmp_path / f"{path.stem}.geojson")
        assert_same_vectors(
            reduce(xml.annotations, get_format("imagescope").carries), back.annotations
        )


def test_real_labelme_to_coco_and_back(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "kidney/glomeruli-hubmap-pas/train/106.json"
    r = convert(path, tmp_path / "g.json", target_format="coco", mpp=0.95)
    assert r.annotations.classes() == ["glomerulus"]  # "Glomeruli" through the vocabulary
    assert r.annotations.image_size == (1600, 1200)
    back = convert(tmp_path / "g.json", tmp_path / "g2.json", target_format="labelme")
    assert back.source_format == "coco" and back.annotations.mpp == 0.95
    assert_same_vectors(
        reduce(r.annotations, frozenset({"classes", "image_size", "mpp"})),
        reduce(read_annotations(tmp_path / "g2.json"), frozenset({"classes", "image_size", "mpp"})),
    )


def test_real_instance_map_round_trips_pixel_for_pixel(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "nuclei/monuseg-train/instances/TCGA-B0-5711-01Z-00-DX1.png"
    truth = np.asarray(Image.open(path))
    convert(path, tmp_path / "n.geojson", source_format="instance-mask", label="nucleus")
    convert(tmp_path / "n.geojson", tmp_path / "n.tif", target_format="instance-mask")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "n.tif")), truth)


def test_real_kidney_class_mask_round_trip(shared_data: Path, tmp_path: Path) -> None:
    folder = next((shared_data / "kidney/tiles-aapi-he").iterdir())
    truth = np.asarray(Image.open(folder / "labels.png"))
    r = convert(folder / "labels.png", tmp_path / "t.geojson")
    assert {"interstitium", "glomerulus", "tubule"} <= set(r.annotations.classes())
    convert(tmp_path / "t.geojson", tmp_path / "t.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "t.png")), truth)


def test_image_gives_size_and_mpp_of_a_slide(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.geojson"
    get_format("geojson").write(sample().replace(image_size=None, mpp=None), src, FormatOptions())
    slide = shared_data / "slides/CMU-1-Small-Region.svs"
    r = convert(src, tmp_path / "a.json", target_format="labelme", image=slide)
    data = json.loads((tmp_path / "a.json").read_text())
    assert (data["imageWidth"], data["imageHeight"], data["mpp"]) == (2220, 2967, 0.499)
    assert data["imagePath"] == slide.name and r.annotations.mpp == 0.499


def test_training_reader_takes_asap_and_coco(tmp_path: Path) -> None:
    from shindan.io.annotations import read_annotations as read_legacy

    for fmt, name in (("asap", "a.xml"), ("coco", "a.json"), ("imagescope", "b.xml")):
        get_format(fmt).write(sample(), tmp_path / name, FormatOptions())
        got = read_legacy(tmp_path / name)  # what kidney/nuclei training read
        assert [a.label for a in got] == ["glomerulus", "tubule", "tubule", "vessel"], fmt
        assert len(got[0].holes) == (1 if fmt == "imagescope" else 0)


# ------------------------------------------------------------------------------ vocabulary
def test_default_vocabulary_maps_names_and_values() -> None:
    v = default_vocabulary()
    assert v.canonical("Glomeruli") == "glomerulus" and v.canonical("Artery") == "vessel"
    assert [v.value_of(c) for c in ("non-tissue", "interstitium", "glomerulus")] == [0, 1, 2]
    assert v.canonical("interstitial") == "interstitial"  # kidney analyze's nucleus class
    assert v.output_name("ignore", "geojson") == "Ignore*"


def test_vocabulary_files_json_and_csv(tmp_path: Path) -> None:
    (tmp_path / "v.csv").write_text(
        "name,aliases,value,name_asap,code_value,code_scheme,code_meaning\n"
        "tumour,tumor;carcinoma,7,_0,108369006,SCT,Neoplasm\n"
    )
    v = load_vocabulary(tmp_path / "v.csv", strict=True)
    assert v.canonical("Carcinoma") == "tumour" and v.value_of("tumour") == 7
    assert v.output_name("tumour", "asap") == "_0"
    assert v.code_of("tumour") == ("108369006", "SCT", "Neoplasm")
    with pytest.raises(AnnotationError, match="not in"):
        v.canonical("stroma")
    (tmp_path / "dup.json").write_text(
        json.dumps({"classes": [{"name": "a", "aliases": ["x"]}, {"name": "b", "aliases": ["x"]}]})
    )
    with pytest.raises(AnnotationError, match="given to both"):
        load_vocabulary(tmp_path / "dup.json")


def test_vocabulary_names_classes_in_each_format(tmp_path: Path) -> None:
    (tmp_path / "v.json").write_text(
        json.dumps(
            {"classes": [{"name": "tumour", "aliases": ["Tumor"], "formats": {"asap": "_0"}}]}
        )
    )
    src = tmp_path / "a.geojson"
    anns = Annotations([AnnotatedObject(Polygon([[0, 0], [5, 0], [5, 5]]), "Tumor")])
    get_format("geojson").write(anns, src, FormatOptions())
    convert(src, tmp_path / "a.xml", target_format="asap", vocabulary=tmp_path / "v.json")
    assert 'PartOfGroup="_0"' in (tmp_path / "a.xml").read_text()
    r = convert(tmp_path / "a.xml", tmp_path / "b.geojson", vocabulary=tmp_path / "v.json")
    assert r.annotations.classes() == ["tumour"]


# --------------------------------------------------------------------------------- COCO RLE
def _rle_string(counts: list[int]) -> str:
    # pycocotools' rleToString, to give the reader a compressed string to decode
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_coco_rle_both_encodings(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), bool)
    mask[3:15, 4:20] = True
    mask[6:9, 8:12] = False
    flat = mask.T.ravel()  # COCO counts run down the columns
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    assert np.array_equal(rle_decode({"size": [20, 30], "counts": counts}), mask)
    rle = {"size": [20, 30], "counts": _rle_string(counts)}
    assert np.array_equal(rle_decode(rle), mask)
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 30, "height": 20}],
        "annotations": [{"id": 5, "image_id": 7, "category_id": 1, "segmentation": rle}],
        "categories": [{"id": 1, "name": "glomerulus"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    anns = read_annotations(tmp_path / "c.json")
    assert anns.objects[0].instance_id == 5 and anns.count("holes") == 1
    assert np.array_equal(paint(anns, mask.shape, lambda o, i: True, bool), mask)


# ------------------------------------------------------------------------------- bad input
def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(SHINDAN + list(args), capture_output=True, text=True, timeout=300)


def assert_one_line_error(p: subprocess.CompletedProcess, match: str = "") -> None:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert match in lines[0], lines[0]


def test_cli_converts_and_notes_losses(tmp_path: Path) -> None:
    src = tmp_path / "a.geojson"
    get_format("geojson").write(sample(), src, FormatOptions())
    p = run("annotations", "convert", str(src), str(tmp_path / "a.xml"), "--to", "asap")
    assert p.returncode == 0, p.stderr
    assert "note: asap cannot carry holes" in p.stderr and "4 objects" in p.stderr
    assert read_annotations(tmp_path / "a.xml").count("points") == 1
    p = run("annotations", "formats")
    assert p.returncode == 0 and "dicom-seg" in p.stdout
    p = run("annotations", "vocabulary")
    assert json.loads(p.stdout)["classes"][2]["name"] == "glomerulus"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "case,match",
    [
        ("broken-xml", "not valid XML"),
        ("other-xml", "not recognised as imagescope, asap"),
        ("broken-xml-named", "not valid XML"),
        ("strict-unknown-class", "not in"),
        ("missing-input", "no such file"),
        ("json-needs-to", "--to"),
        ("mask-needs-size", "image size"),
        ("dicom-needs-image", "--image SOURCE.dcm"),
        ("dicom-not-dicom-image", "not a DICOM image"),
        ("unknown-mask-value", "no mask value"),
        ("bad-geojson", "not GeoJSON"),
    ],
)
def test_cli_bad_input_one_line_nothing_written(case: str, match: str, tmp_path: Path) -> None:
    good = tmp_path / "good.geojson"
    get_format("geojson").write(sample(), good, FormatOptions())
    (tmp_path / "broken.xml").write_text("<Annotations><Annotation><Regions>")
    (tmp_path / "bad.geojson").write_text(json.dumps({"type": "Topology"}))
    (tmp_path / "other.xml").write_text("<svg><rect/></svg>")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "picture.png")
    odd = tmp_path / "odd.geojson"
    odd_anns = Annotations([AnnotatedObject(Polygon([[0, 0], [5, 0], [5, 5]]), "tumour")], SIZE)
    get_format("geojson").write(odd_anns, odd, FormatOptions())
    sizeless = tmp_path / "sizeless.xml"  # ASAP records no image size
    get_format("asap").write(sample(), sizeless, FormatOptions())
    before = _files(tmp_path)
    out = str(tmp_path / "out" / "x")
    args = {
        "broken-xml": [str(tmp_path / "broken.xml"), out + ".geojson"],
        "other-xml": [str(tmp_path / "other.xml"), out + ".geojson"],
        "broken-xml-named": [str(tmp_path / "broken.xml"), out + ".geojson", "--from", "asap"],
        "strict-unknown-class": [str(odd), out + ".geojson", "--strict"],
        "missing-input": [str(tmp_path / "nothere.xml"), out + ".geojson"],
        "json-needs-to": [str(good), out + ".json"],
        "mask-needs-size": [str(sizeless), out + ".png"],
        "dicom-needs-image": [str(good), out + ".dcm", "--to", "dicom-seg"],
        "dicom-not-dicom-image": [
            str(good),
            out + ".dcm",
            "--to",
            "dicom-ann",
            "--image",
            str(tmp_path / "picture.png"),
        ],
        "unknown-mask-value": [str(odd), out + ".png"],
        "bad-geojson": [str(tmp_path / "bad.geojson"), out + ".xml", "--to", "imagescope"],
    }[case]
    assert_one_line_error(run("annotations", "convert", *args), match)
    assert _files(tmp_path) == before  # nothing written, not even the output folder


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    src = tmp_path / "a.geojson"
    get_format("geojson").write(sample(), src, FormatOptions())
    mine = tmp_path / "mine.xml"
    mine.write_text("my notes")
    p = run("annotations", "convert", str(src), str(mine), "--to", "imagescope")
    assert_one_line_error(p, "--force")
    assert mine.read_text() == "my notes"
    p = run("annotations", "convert", str(src), str(mine), "--to", "imagescope", "--force")
    assert p.returncode == 0, p.stderr
    assert len(read_annotations(mine)) == 3  # the point has no place in ImageScope
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []


def test_mpp_from_the_file_wins_and_is_said(tmp_path: Path) -> None:
    src = tmp_path / "a.geojson"
    get_format("geojson").write(sample(), src, FormatOptions())
    r = convert(src, tmp_path / "b.geojson", mpp=0.5)
    assert r.annotations.mpp == 0.25 and any("--mpp 0.5 is not used" in n for n in r.notes)
    bare = tmp_path / "bare.json"
    get_format("labelme").write(sample().replace(mpp=None), bare, FormatOptions())
    assert convert(bare, tmp_path / "c.geojson", mpp=0.5).annotations.mpp == 0.5


def test_alias_rename_is_a_note(tmp_path: Path) -> None:
    # a user's "Stroma" becomes the built-in "interstitium": the user must be told
    src = tmp_path / "a.geojson"
    feats = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x, x], [x + 5, x], [x, x + 5], [x, x]]],
            },
            "properties": {"objectType": "annotation", "classification": {"name": name}},
        }
        for x, name in ((0, "Stroma"), (10, "Glomerulus"), (20, "Tumor"))
    ]
    src.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    r = convert(src, tmp_path / "a.xml", target_format="imagescope")
    renames = [n for n in r.notes if "mapped through" in n]
    assert renames == [
        "class names mapped through the built-in vocabulary: Stroma -> interstitium "
        "(give --vocabulary FILE to keep other names)"
    ]
    back = convert(tmp_path / "a.xml", tmp_path / "b.geojson")
    assert not [n for n in back.notes if "mapped through" in n]
