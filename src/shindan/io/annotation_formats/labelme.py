"""labelme JSON: ``shapes`` with ``label``, ``points``, ``shape_type`` and ``group_id``.

Polygons, rectangles and circles (as 64-gons) become polygons, ``point`` shapes points;
lines are skipped. ``group_id`` is the instance id, and shapes sharing it (and the label)
are the pieces of one object. ``imageWidth``/``imageHeight`` give the image size; µm/px is
kept in a top-level ``mpp`` key (labelme keeps keys it does not know). No holes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shindan.errors import AnnotationError
from shindan.io.annotation_formats import (
    AnnotationFormat,
    FormatOptions,
    register_format,
    sniff_json,
)
from shindan.io.annotation_formats.model import (
    AnnotatedObject,
    Annotations,
    MultiPolygon,
    Point,
    Polygon,
    as_ring,
    group_parts,
    polygons_of,
)
from shindan.io.annotations import _labelme_shape, _load_json

NAME = "labelme"


def read(path: Path, options: FormatOptions) -> Annotations:
    data = _load_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("shapes"), list):
        raise AnnotationError(f"{path}: not a labelme file (no 'shapes' list)")
    items: list[tuple[Any, AnnotatedObject]] = []
    for i, shape in enumerate(data["shapes"]):
        src = f"{path}: shape {i}"
        if not isinstance(shape, Mapping):
            raise AnnotationError(f"{src} is not an object")
        label = str(shape.get("label") or "")
        gid = shape.get("group_id")
        gid = int(gid) if isinstance(gid, int | float) and float(gid).is_integer() else None
        kind = shape.get("shape_type") or "polygon"
        if kind == "point" and shape.get("points"):
            xy = as_ring(shape["points"], src, min_points=1)[0]
            items.append((None, AnnotatedObject(Point(xy), label, gid)))
            continue
        legacy = _labelme_shape(shape, src)
        if legacy is None:
            continue
        ring = as_ring(legacy.polygon, src)
        key = (label, gid) if gid is not None else None
        items.append((key, AnnotatedObject(Polygon(ring), label, gid)))
    w, h = data.get("imageWidth"), data.get("imageHeight")
    size = (w, h) if isinstance(w, int) and isinstance(h, int) else None
    mpp = data.get("mpp") if isinstance(data.get("mpp"), int | float) else None
    return Annotations(group_parts(items), size, mpp)


def write(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    used = {o.instance_id for o in annotations.objects if o.instance_id is not None}
    spare = iter(i for i in range(1, 1 << 31) if i not in used)
    shapes = []
    for o in annotations.objects:
        label = options.vocabulary.output_name(o.label, NAME)
        gid = o.instance_id
        if gid is None and isinstance(o.geometry, MultiPolygon):
            gid = next(spare)  # the pieces of one object share a group id
        base: dict[str, Any] = {"label": label, "group_id": gid, "description": "", "flags": {}}
        if isinstance(o.geometry, Point):
            shapes.append({**base, "points": [o.geometry.xy.tolist()], "shape_type": "point"})
            continue
        for p in polygons_of(o.geometry):
            shapes.append({**base, "points": p.exterior.tolist(), "shape_type": "polygon"})
    w, h = annotations.image_size or (None, None)
    data: dict[str, Any] = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": options.image.name if options.image is not None else "",
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
    }
    if annotations.mpp is not None:
        data["mpp"] = annotations.mpp
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


FORMAT = register_format(
    AnnotationFormat(
        NAME,
        "labelme JSON",
        (".json",),
        frozenset(
            {"points", "multipolygons", "instance_ids", "classes", "vertices", "mpp", "image_size"}
        ),
        read,
        write,
        lambda path: sniff_json(path, lambda d: isinstance(d, dict) and "shapes" in d),
    )
)
