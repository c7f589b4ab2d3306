"""ASAP XML (the Camelyon format): ``ASAP_Annotations/Annotations/Annotation/Coordinates``.

The class is the annotation's ``PartOfGroup`` (``None``: no class). Polygon, Spline (its
control points) and Rectangle become polygons; Dot and PointSet become points. Annotations
that share a ``Name`` are the pieces of one object; a name ``instance N`` gives the instance
id. ASAP cannot hold holes, µm/px or the image size.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from shindan.errors import AnnotationError
from shindan.io.annotation_formats import AnnotationFormat, FormatOptions, register_format
from shindan.io.annotation_formats.imagescope import _num, _root_tag, parse_xml
from shindan.io.annotation_formats.model import (
    AnnotatedObject,
    Annotations,
    Point,
    Polygon,
    group_parts,
    polygons_of,
)

NAME = "asap"
_INSTANCE = re.compile(r"instance (\d+)")


def read(path: Path, options: FormatOptions) -> Annotations:
    root = parse_xml(path, "ASAP_Annotations", "an ASAP file")
    items: list[tuple[object, AnnotatedObject]] = []
    for i, ann in enumerate(root.iter("Annotation")):
        coords = sorted(ann.iter("Coordinate"), key=lambda c: _order(c.get("Order"), i, path))
        try:
            arr = np.array([(float(c.get("X")), float(c.get("Y"))) for c in coords], np.float64)
        except (TypeError, ValueError):
            raise AnnotationError(
                f"{path}: annotation {i} has a coordinate without numeric X/Y"
            ) from None
        arr = arr.reshape(-1, 2)
        if not np.isfinite(arr).all():
            raise AnnotationError(f"{path}: annotation {i} has non-finite coordinates")
        group = ann.get("PartOfGroup") or ""
        label = "" if group == "None" else group
        name = ann.get("Name") or ""
        m = _INSTANCE.fullmatch(name.strip())
        iid = int(m.group(1)) if m else None
        kind = (ann.get("Type") or "Polygon").strip().lower()
        if kind in ("dot", "pointset"):
            items += [(None, AnnotatedObject(Point(p), label, iid)) for p in arr]
        elif kind in ("polygon", "spline", "rectangle") and len(arr) >= 3:
            if np.array_equal(arr[0], arr[-1]):
                arr = arr[:-1]
            if len(arr) >= 3:
                items.append(
                    ((label, name) if name else None, AnnotatedObject(Polygon(arr), label, iid))
                )
    return Annotations(group_parts(items))


def _order(value: str | None, i: int, path: Path) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        raise AnnotationError(
            f"{path}: annotation {i} has a non-numeric coordinate Order"
        ) from None


def _hex(colour: tuple[int, int, int] | None) -> str:
    return "#{:02X}{:02X}{:02X}".format(*(colour or (244, 250, 88)))


def _coords(parent: ET.Element, pts: np.ndarray) -> None:
    coords = ET.SubElement(parent, "Coordinates")
    for k, (x, y) in enumerate(pts):
        ET.SubElement(coords, "Coordinate", Order=str(k), X=_num(x), Y=_num(y))


def write(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    vocab = options.vocabulary
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    groups: dict[str, str] = {}
    for oi, o in enumerate(annotations.objects):
        group = vocab.output_name(o.label, NAME) if o.label else "None"
        colour = _hex(vocab.colour_of(o.label))
        if o.label:
            groups.setdefault(group, colour)
        name = f"instance {o.instance_id}" if o.instance_id is not None else f"Annotation {oi}"
        if isinstance(o.geometry, Point):
            a = ET.SubElement(
                anns, "Annotation", Name=name, Type="Dot", PartOfGroup=group, Color=colour
            )
            _coords(a, o.geometry.xy.reshape(1, 2))
            continue
        for p in polygons_of(o.geometry):
            a = ET.SubElement(
                anns, "Annotation", Name=name, Type="Polygon", PartOfGroup=group, Color=colour
            )
            _coords(a, p.exterior)
    ag = ET.SubElement(root, "AnnotationGroups")
    for g, colour in groups.items():
        el = ET.SubElement(ag, "Group", Name=g, PartOfGroup="None", Color=colour)
        ET.SubElement(el, "Attributes")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


FORMAT = register_format(
    AnnotationFormat(
        NAME,
        "ASAP XML (Camelyon)",
        (".xml",),
        frozenset({"points", "multipolygons", "instance_ids", "classes", "vertices"}),
        read,
        write,
        lambda path: _root_tag(path) == "ASAP_Annotations",
    )
)
