"""Annotation readers, rasteriser and GeoJSON writer: real files, tiny generated ones, bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shindan.errors import AnnotationError
from shindan.io.annotations import (
    Annotation,
    annotation_format,
    instances_to_polygons,
    mask_to_annotations,
    rasterize,
    rasterize_at_mpp,
    rasterize_instances,
    read_annotations,
    read_geojson,
    read_imagescope_xml,
    read_label_mask,
    read_labelme,
    write_geojson,
)

SQUARE = [[10, 10], [50, 10], [50, 50], [10, 50], [10, 10]]
HOLE = [[20, 20], [30, 20], [30, 30], [20, 30], [20, 20]]


# ------------------------------------------------------------------------- real reference files
def test_imagescope_xml_real(shared_data: Path) -> None:
    path = shared_data / "nuclei/monuseg-train/annotations/TCGA-21-5786-01Z-00-DX1.xml"
    anns = read_imagescope_xml(path)
    assert len(anns) == 440
    assert all(a.polygon.shape[1] == 2 and len(a.polygon) >= 3 for a in anns)
    pts = np.concatenate([a.polygon for a in anns])
    assert pts.min() >= -1 and pts.max() <= 1001  # a 1000x1000 tile


def test_qupath_geojson_real_matches_mask(shared_data: Path) -> None:
    base = shared_data / "nuclei/monuseg-train"
    anns = read_annotations(base / "annotations/TCGA-B0-5711-01Z-00-DX1.geojson")
    assert len(anns) == 342 and {a.label for a in anns} == {"Nucleus"}
    mask = read_label_mask(base / "masks/TCGA-B0-5711-01Z-00-DX1.png") > 0
    painted = rasterize(anns, mask.shape) > 0
    dice = 2 * (mask & painted).sum() / (mask.sum() + painted.sum())
    assert dice > 0.9  # the mask is the same outlines, drawn without their rims
    inst = rasterize_instances(anns, mask.shape)
    assert len(np.unique(inst)) - 1 >= 330


def test_labelme_real(shared_data: Path) -> None:
    folder = shared_data / "kidney/glomeruli-hubmap-pas/train"
    anns = read_labelme(folder / "106.json")
    assert len(anns) >= 1 and anns[0].label == "Glomeruli"
    assert annotation_format(folder / "106.json") == "labelme"
    lab = rasterize(anns, (1200, 1600), {"Glomeruli": 2})
    assert set(np.unique(lab)) == {0, 2}


def test_label_mask_real(shared_data: Path) -> None:
    lab = read_label_mask(shared_data / "kidney/tiles-aapi-he/HE_001/labels.png")
    assert lab.ndim == 2 and set(np.unique(lab)) <= {0, 1, 2, 3, 4, 255}


# ------------------------------------------------------------------------- tiny generated files
def test_geojson_multipolygon_hole_and_classes(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [SQUARE, HOLE]},
                "properties": {"classification": {"name": "Tubule"}},
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [
                        [[[60, 60], [70, 60], [70, 70], [60, 70]]],
                        [[[80, 80], [90, 80], [90, 90]]],
                    ],
                },
                "properties": {"classification": {"name": "Glomerulus"}},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [5, 5]},
                "properties": {},
            },
        ],
    }
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps(fc))
    anns = read_annotations(p)
    assert [a.label for a in anns] == ["Tubule", "Glomerulus", "Glomerulus"]
    assert len(anns[0].holes) == 1
    lab = rasterize(anns, (100, 100), {"Tubule": 3, "Glomerulus": 2}, fill=255)
    assert lab[15, 15] == 3 and lab[25, 25] == 255  # the hole is cut back to fill
    assert lab[65, 65] == 2 and lab[5, 5] == 255
    assert (lab == 3).sum() == 40 * 40 - 10 * 10


def test_imagescope_and_labelme_generated(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    verts = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in SQUARE[:-1])
    xml.write_text(
        f'<Annotations><Annotation Name="glom"><Regions><Region Id="1" Text="">'
        f"<Vertices>{verts}</Vertices></Region></Regions></Annotation></Annotations>"
    )
    (a,) = read_annotations(xml)
    assert a.label == "glom" and a.polygon.shape == (4, 2)
    lm = tmp_path / "b.json"
    lm.write_text(
        json.dumps(
            {
                "shapes": [
                    {"label": "tubule", "shape_type": "rectangle", "points": [[0, 0], [10, 20]]},
                    {"label": "x", "shape_type": "point", "points": [[1, 1]]},
                ]
            }
        )
    )
    (r,) = read_annotations(lm)
    assert r.label == "tubule" and (rasterize([r], (30, 30)) > 0).sum() == 200


def test_rasterize_at_mpp() -> None:
    # a 100 µm square drawn at 0.25 µm/px (400 px) is 100 px wide at 1 µm/px
    a = Annotation(np.array([[0, 0], [400, 0], [400, 400], [0, 400]], float), "g")
    lab = rasterize_at_mpp([a], (800, 600), 0.25, 1.0, {"g": 2})
    assert lab.shape == (150, 200)
    assert (lab == 2).sum() == 100 * 100


@pytest.mark.parametrize(
    "content, msg",
    [
        ("{not json", "not valid JSON"),
        ('{"type": "Something"}', "not GeoJSON"),
        (
            '{"type": "FeatureCollection", "features": [{"geometry": {"type": "Polygon", '
            '"coordinates": [[["a", "b"], [1, 2], [3, 4]]]}}]}',
            "not numbers",
        ),
    ],
)
def test_bad_geojson(tmp_path: Path, content: str, msg: str) -> None:
    p = tmp_path / "bad.geojson"
    p.write_text(content)
    with pytest.raises(AnnotationError, match=msg) as exc:
        read_annotations(p)
    assert "\n" not in str(exc.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such file"):
        read_annotations(tmp_path / "missing.geojson")
    x = tmp_path / "a.xml"
    x.write_text("<Foo/>")
    with pytest.raises(AnnotationError, match="not an ImageScope file"):
        read_annotations(x)
    x.write_text(
        '<Annotations><Annotation><Regions><Region Id="3"><Vertices>'
        '<Vertex X="a" Y="1"/></Vertices></Region></Regions></Annotation></Annotations>'
    )
    with pytest.raises(AnnotationError, match="region 3"):
        read_annotations(x)
    x.write_text("<Annotations><unclosed>")
    with pytest.raises(AnnotationError, match="not valid XML"):
        read_annotations(x)
    j = tmp_path / "l.json"
    j.write_text('{"shapes": 3}')
    with pytest.raises(AnnotationError):
        read_labelme(j)
    rgb = tmp_path / "colour.png"
    Image.fromarray(
        np.dstack(
            [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), np.zeros((4, 4), np.uint8)]
        )
    ).save(rgb)
    with pytest.raises(AnnotationError, match="colour mask"):
        read_label_mask(rgb)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(AnnotationError, match="not a readable mask"):
        read_label_mask(junk)
    txt = tmp_path / "x.txt"
    txt.write_text("")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotations(txt)


# ------------------------------------------------------------------------- polygons and writer
def test_instances_to_polygons_roundtrip(tmp_path: Path) -> None:
    lab = np.zeros((60, 80), np.int32)
    lab[10:20, 10:30] = 1
    yy, xx = np.mgrid[:60, :80]
    lab[(yy - 40) ** 2 + (xx - 50) ** 2 < 100] = 2
    polys = instances_to_polygons(lab, offset=(1000, 2000), scale=2.0)
    assert len(polys) == 2
    x0, y0 = polys[0].polygon.min(0)
    assert (x0, y0) == (1000 + 20, 2000 + 20)
    back = rasterize_instances(polys, (60, 80), scale=0.5, offset=(1000, 2000))
    for i in (1, 2):
        inter = ((back == i) & (lab == i)).sum()
        assert inter / ((back == i) | (lab == i)).sum() > 0.85
    out = write_geojson(polys, tmp_path / "n.geojson")
    data = json.loads(out.read_text())
    f = data["features"][0]
    assert data["type"] == "FeatureCollection" and f["geometry"]["type"] == "Polygon"
    assert f["properties"]["objectType"] == "detection"
    assert f["properties"]["classification"]["name"] == "Nucleus"
    assert isinstance(f["properties"]["classification"]["color"], int)
    ring = f["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert len(read_geojson(out)) == 2
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_mask_to_annotations() -> None:
    m = np.zeros((30, 30), np.uint8)
    m[2:8, 2:8] = 3
    m[20:25, 20:28] = 2
    m[10:12, 10:12] = 255
    anns = mask_to_annotations(m)
    assert sorted(a.label for a in anns) == ["2", "3"]
