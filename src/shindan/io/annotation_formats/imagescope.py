"""Aperio ImageScope XML: ``Annotations/Annotation/Regions/Region/Vertices``.

Reading: the class is the region's ``Text``, else its layer's name or attribute (as
:mod:`shindan.io.annotations` reads it); ``NegativeROA`` regions are holes of the smallest
region of their layer that holds them; rectangles and ellipses become polygons; one-vertex
regions are points; rulers and arrows are skipped. µm/px is the root's ``MicronsPerPixel``.

Writing: one layer per class (its ``Name`` is the class), one region per polygon piece, holes
as ``NegativeROA`` regions after their polygon; the instance id and the pieces of a
multipolygon are region attributes ``instance_id`` and ``object``. ImageScope cannot hold
points (not written) or the image size.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from shindan.errors import AnnotationError
from shindan.io.annotation_formats import AnnotationFormat, FormatOptions, register_format
from shindan.io.annotation_formats.geometry import assign_holes
from shindan.io.annotation_formats.model import (
    AnnotatedObject,
    Annotations,
    MultiPolygon,
    Point,
    Polygon,
    group_parts,
    polygons_of,
)
from shindan.io.annotations import _imagescope_layer_class, _imagescope_shape

NAME = "imagescope"


def parse_xml(path: Path, root_tag: str, what: str) -> ET.Element:
    """The root element of an XML file, checked to be ``root_tag`` (one-line errors)."""
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: not valid XML ({exc})") from None
    if root.tag != root_tag:
        raise AnnotationError(f"{path}: not {what} (root <{root.tag}>, expected <{root_tag}>)")
    return root


def _float(value: str | None) -> float | None:
    try:
        v = float(value) if value is not None else None
    except ValueError:
        return None
    return v if v is not None and np.isfinite(v) and v > 0 else None


def _attrs(region: ET.Element) -> dict[str, str]:
    return {
        a.get("Name", ""): a.get("Value", "")
        for a in region.findall("Attributes/Attribute")
        if a.get("Name")
    }


def read(path: Path, options: FormatOptions) -> Annotations:
    root = parse_xml(path, "Annotations", "an ImageScope file")
    items: list[tuple[object, AnnotatedObject]] = []
    for li, layer in enumerate(root.iter("Annotation")):
        layer_class = _imagescope_layer_class(layer)
        positive: list[tuple[np.ndarray, str, dict[str, str]]] = []
        negative: list[np.ndarray] = []
        for region in layer.iter("Region"):
            try:
                pts = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
            except (TypeError, ValueError):
                raise AnnotationError(
                    f"{path}: region {region.get('Id')} has a vertex without numeric X/Y"
                ) from None
            arr = np.asarray(pts, np.float64).reshape(-1, 2)
            if not np.isfinite(arr).all():
                raise AnnotationError(f"{path}: region {region.get('Id')} has non-finite X/Y")
            label = region.get("Text") or layer_class
            attrs = _attrs(region)
            if len(arr) == 1:
                items.append((None, AnnotatedObject(Point(arr[0]), label, _iid(attrs))))
                continue
            ring = _imagescope_shape(region, arr)
            if ring is None:
                continue
            if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
                ring = ring[:-1]
            if len(ring) < 3:
                continue
            if (region.get("NegativeROA") or "0").strip() == "1":
                negative.append(ring)
            else:
                positive.append((ring, label, attrs))
        holes = assign_holes([r for r, _, _ in positive], negative)
        for (ring, label, attrs), hs in zip(positive, holes, strict=True):
            key = (li, attrs["object"]) if attrs.get("object") else None
            items.append((key, AnnotatedObject(Polygon(ring, tuple(hs)), label, _iid(attrs))))
    mpp = _float(root.get("MicronsPerPixel"))
    return Annotations(group_parts(items), None, mpp)


def _iid(attrs: dict[str, str]) -> int | None:
    try:
        return int(attrs["instance_id"])
    except (KeyError, ValueError):
        return None


def _num(v: float) -> str:
    return repr(float(v))  # shortest text that reads back to the same float


def _region(parent: ET.Element, rid: int, ring: np.ndarray, negative: bool, attrs: dict) -> None:
    region = ET.SubElement(
        parent,
        "Region",
        Id=str(rid),
        Type="0",
        Zoom="1",
        Text="",
        NegativeROA="1" if negative else "0",
        Analyze="1",
        DisplayId=str(rid),
    )
    a = ET.SubElement(region, "Attributes")
    for i, (k, v) in enumerate(attrs.items()):
        ET.SubElement(a, "Attribute", Name=k, Id=str(i), Value=str(v))
    verts = ET.SubElement(region, "Vertices")
    for x, y in ring:
        ET.SubElement(verts, "Vertex", X=_num(x), Y=_num(y), Z="0")


def write(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    root = ET.Element("Annotations")
    if annotations.mpp is not None:
        root.set("MicronsPerPixel", _num(annotations.mpp))
    layers: dict[str, ET.Element] = {}
    rid = 0
    for oi, o in enumerate(annotations.objects):
        if isinstance(o.geometry, Point):
            continue
        name = options.vocabulary.output_name(o.label, NAME)
        if name not in layers:
            layer = ET.SubElement(
                root, "Annotation", Id=str(len(layers) + 1), Name=name, Type="4", Visible="1"
            )
            colour = options.vocabulary.colour_of(o.label)
            if colour is not None:  # ImageScope colours are BGR integers
                layer.set("LineColor", str(colour[0] | colour[1] << 8 | colour[2] << 16))
            attrs = ET.SubElement(layer, "Attributes")
            ET.SubElement(attrs, "Attribute", Name="Description", Id="0", Value=name)
            layers[name] = ET.SubElement(layer, "Regions")
        attrs = {}
        if o.instance_id is not None:
            attrs["instance_id"] = o.instance_id
        if isinstance(o.geometry, MultiPolygon):
            attrs["object"] = oi + 1
        for p in polygons_of(o.geometry):
            rid += 1
            _region(layers[name], rid, p.exterior, False, attrs)
            for h in p.holes:
                rid += 1
                _region(layers[name], rid, h, True, {})
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _sniff(path: Path) -> bool:
    return _root_tag(path) == "Annotations"


def _root_tag(path: Path) -> str | None:
    try:
        for _, elem in ET.iterparse(path, events=("start",)):
            return elem.tag
    except (OSError, ET.ParseError):
        return None
    return None


FORMAT = register_format(
    AnnotationFormat(
        NAME,
        "Aperio ImageScope XML",
        (".xml",),
        frozenset({"holes", "multipolygons", "instance_ids", "classes", "vertices", "mpp"}),
        read,
        write,
        _sniff,
    )
)
