"""Annotation quirks seen in real exports: holes, ImageScope negative regions and shapes, QuPath
derived classes and features without geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shindan.io.annotations import (
    Annotation,
    base_class,
    rasterize,
    rasterize_instances,
    read_geojson,
    read_imagescope_xml,
)


def _square(x0: float, x1: float) -> list[list[float]]:
    return [[x0, x0], [x1, x0], [x1, x1], [x0, x1], [x0, x0]]


def _feature(rings: list, classification: object) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": rings},
        "properties": {"objectType": "annotation", "classification": classification},
    }


# ---------------------------------------------------------------------------------- holes
def test_hole_keeps_polygons_drawn_before(tmp_path: Path) -> None:
    # QuPath "subtract": the interstitium has the glomerulus cut out, listed after it
    feats = [
        _feature([_square(1100, 1300)], {"name": "Glomerulus"}),
        _feature([_square(1000, 1400), _square(1100, 1300)], {"name": "Interstitium"}),
    ]
    path = tmp_path / "subtract.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    anns = read_geojson(path)
    lab = rasterize(anns, (150, 150), {"Glomerulus": 2, "Interstitium": 1}, scale=0.1, fill=255)
    assert lab[120, 120] == 2  # inside the hole: the glomerulus, not ignore
    assert lab[105, 105] == 1 and lab[5, 5] == 255


def test_hole_keeps_earlier_instances() -> None:
    inner = Annotation(np.array(_square(20, 30), float))
    ring = Annotation(np.array(_square(10, 40), float), holes=[np.array(_square(20, 30), float)])
    inst = rasterize_instances([inner, ring], (50, 50))
    assert inst[25, 25] == 1 and inst[15, 15] == 2 and inst[45, 45] == 0
    # a hole with nothing under it is still background
    assert rasterize_instances([ring], (50, 50))[25, 25] == 0


# ------------------------------------------------------------------------------ ImageScope
def _region(rid: int, pts: list[tuple[float, float]], *, kind: int = 0, negative: int = 0) -> str:
    verts = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in pts)
    return (
        f'<Region Id="{rid}" Type="{kind}" Text="" NegativeROA="{negative}">'
        f"<Attributes/><Vertices>{verts}</Vertices></Region>"
    )


def _layer(name: str, attrs: str, regions: list[str]) -> str:
    return (
        f'<Annotation Id="1" Name="{name}"><Attributes>{attrs}</Attributes>'
        f"<Regions>{''.join(regions)}</Regions></Annotation>"
    )


def _write_xml(path: Path, layers: list[str]) -> Path:
    path.write_text(f'<Annotations MicronsPerPixel="0.5">{"".join(layers)}</Annotations>')
    return path


def test_imagescope_negative_region_is_a_hole(tmp_path: Path) -> None:
    outer = [(10, 10), (40, 10), (40, 40), (10, 40)]
    inner = [(20, 20), (30, 20), (30, 30), (20, 30)]
    path = _write_xml(
        tmp_path / "neg.xml",
        [_layer("Tubule", "", [_region(1, inner, negative=1), _region(2, outer)])],
    )
    anns = read_imagescope_xml(path)
    assert len(anns) == 1 and len(anns[0].holes) == 1
    lab = rasterize(anns, (50, 50), {"Tubule": 3}, fill=255)
    assert lab[15, 15] == 3 and lab[25, 25] == 255


def test_imagescope_class_from_layer_attributes(tmp_path: Path) -> None:
    square = [(10, 10), (40, 10), (40, 40), (10, 40)]
    desc = '<Attribute Name="Description" Id="0" Value="{}"/>'
    path = _write_xml(
        tmp_path / "attrs.xml",
        [
            _layer("Layer 3", '<Attribute Name="Tubule" Id="0" Value=""/>', [_region(1, square)]),
            _layer("", desc.format("Vessel"), [_region(2, square)]),
            _layer("", desc.format(""), [_region(3, square)]),  # ImageScope's empty default
            _layer("Glomerulus", '<Attribute Name="Tubule" Id="0"/>', [_region(4, square)]),
        ],
    )
    assert [a.label for a in read_imagescope_xml(path)] == ["Tubule", "Vessel", "", "Glomerulus"]


def test_imagescope_ellipse_and_rectangle(tmp_path: Path) -> None:
    path = _write_xml(
        tmp_path / "shapes.xml",
        [
            _layer(
                "Glomerulus",
                "",
                [
                    _region(1, [(10, 20), (50, 40)], kind=2),  # ellipse: bounding box corners
                    _region(2, [(60, 60), (80, 70)], kind=1),
                    _region(3, [(60, 80), (80, 80), (80, 90), (60, 90)], kind=1),
                ],
            )
        ],
    )
    ell, rect2, rect4 = read_imagescope_xml(path)
    assert len(ell.polygon) >= 32
    assert np.allclose(ell.polygon.min(0), [10, 20]) and np.allclose(ell.polygon.max(0), [50, 40])
    assert len(rect2.polygon) == 4 and len(rect4.polygon) == 4
    lab = rasterize([ell, rect2], (100, 100))
    assert lab[30, 30] == 1 and lab[21, 11] == 0  # centre in, bounding-box corner out
    assert lab[65, 70] == 1 and lab[59, 70] == 0


# --------------------------------------------------------------------------------- GeoJSON
def test_geojson_derived_class_and_null_geometry(tmp_path: Path) -> None:
    feats = [
        _feature([_square(10, 40)], {"names": ["Tubule", "Atrophic"], "color": [255, 0, 0]}),
        {"type": "Feature", "geometry": None, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}},
    ]
    path = tmp_path / "derived.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    anns = read_geojson(path)
    assert [a.label for a in anns] == ["Tubule: Atrophic"]
    assert base_class(anns[0].label) == "Tubule"
    lab = rasterize(anns, (50, 50), {"Tubule": 3})
    assert lab[25, 25] == 3
