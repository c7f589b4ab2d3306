"""QuPath GeoJSON: a FeatureCollection of Polygon / MultiPolygon / Point / MultiPoint features.

The class is ``properties.classification.name``; other feature properties (``objectType``,
``name``, ``measurements``, the feature ``id``) are kept. The instance id is
``properties.instance_id``. µm/px and the image size go in the collection's own
``properties`` (``mpp``, ``width``, ``height``), which QuPath ignores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
    polygons_of,
)
from shindan.io.annotations import _geojson_class, _load_json, _rgb_int

NAME = "geojson"


def _polygon(rings: Any, src: str) -> Polygon | None:
    if not isinstance(rings, list) or not rings:
        return None
    return Polygon(as_ring(rings[0], src), tuple(as_ring(r, f"{src} hole") for r in rings[1:]))


def _objects(geom: Mapping[str, Any], label: str, iid, props, src: str) -> list[AnnotatedObject]:
    kind, coords = geom.get("type"), geom.get("coordinates")
    if kind == "GeometryCollection":
        return [
            o for g in geom.get("geometries") or [] for o in _objects(g, label, iid, props, src)
        ]
    if kind == "Point":
        return [AnnotatedObject(Point(as_ring([coords], src, min_points=1)[0]), label, iid, props)]
    if kind == "MultiPoint":
        pts = as_ring(coords or [], src, min_points=1) if coords else np.zeros((0, 2))
        return [AnnotatedObject(Point(p), label, iid, props) for p in pts]
    if kind == "Polygon":
        p = _polygon(coords, src)
        return [AnnotatedObject(p, label, iid, props)] if p else []
    if kind == "MultiPolygon":
        if not isinstance(coords, list):
            raise AnnotationError(f"{src}: MultiPolygon without a coordinate list")
        polys = [p for p in (_polygon(r, src) for r in coords) if p is not None]
        if not polys:
            return []
        geom_ = polys[0] if len(polys) == 1 else MultiPolygon(tuple(polys))
        return [AnnotatedObject(geom_, label, iid, props)]
    return []  # lines carry no area and no point


def read(path: Path, options: FormatOptions) -> Annotations:
    data = _load_json(path)
    meta: Mapping[str, Any] = {}
    if isinstance(data, list):
        features = data
    elif isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        meta = data.get("properties") if isinstance(data.get("properties"), Mapping) else {}
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        features = [data]
    else:
        raise AnnotationError(f"{path}: not GeoJSON (no FeatureCollection or Feature)")
    if not isinstance(features, list):
        raise AnnotationError(f"{path}: 'features' is not a list")
    objects: list[AnnotatedObject] = []
    for i, feat in enumerate(features):
        if isinstance(feat, Mapping) and feat.get("geometry", False) is None:
            continue
        if not isinstance(feat, Mapping) or not isinstance(feat.get("geometry"), Mapping):
            raise AnnotationError(f"{path}: feature {i} has no geometry")
        raw = feat.get("properties") if isinstance(feat.get("properties"), Mapping) else {}
        label = _geojson_class(raw)
        props = {k: v for k, v in raw.items() if k not in ("classification", "instance_id")}
        if "id" in feat:
            props["id"] = feat["id"]
        iid = raw.get("instance_id")
        iid = int(iid) if isinstance(iid, int | float) and float(iid).is_integer() else None
        objects += _objects(feat["geometry"], label, iid, props, f"{path}: feature {i}")
    size = None
    if isinstance(meta.get("width"), int) and isinstance(meta.get("height"), int):
        size = (meta["width"], meta["height"])
    mpp = meta.get("mpp") if isinstance(meta.get("mpp"), int | float) else None
    return Annotations(objects, size, mpp)


def _closed(ring: np.ndarray) -> list[list[float]]:
    return np.vstack([ring, ring[:1]]).tolist()  # GeoJSON rings repeat their first vertex


def _geometry(o: AnnotatedObject) -> dict[str, Any]:
    if isinstance(o.geometry, Point):
        return {"type": "Point", "coordinates": o.geometry.xy.tolist()}
    rings = [[_closed(p.exterior), *(_closed(h) for h in p.holes)] for p in polygons_of(o.geometry)]
    if isinstance(o.geometry, MultiPolygon):
        return {"type": "MultiPolygon", "coordinates": rings}
    return {"type": "Polygon", "coordinates": rings[0]}


def write(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    vocab = options.vocabulary
    feats = []
    for o in annotations.objects:
        props = {k: v for k, v in o.properties.items() if k != "id"}
        props.setdefault("objectType", "annotation")
        if o.label:
            cls: dict[str, Any] = {"name": vocab.output_name(o.label, NAME)}
            colour = vocab.colour_of(o.label)
            if colour is not None:
                cls["color"] = _rgb_int(colour)
            props["classification"] = cls
        if o.instance_id is not None:
            props["instance_id"] = o.instance_id
        feat: dict[str, Any] = {"type": "Feature"}
        if "id" in o.properties:
            feat["id"] = o.properties["id"]
        feat.update(geometry=_geometry(o), properties=props)
        feats.append(feat)
    data: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    meta: dict[str, Any] = {}
    if annotations.mpp is not None:
        meta["mpp"] = annotations.mpp
    if annotations.image_size is not None:
        meta["width"], meta["height"] = annotations.image_size
    if meta:
        data["properties"] = meta
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{path}: properties cannot be written as JSON ({exc})") from None
    path.write_text(text, encoding="utf-8")


def _sniff(path: Path) -> bool:
    return sniff_json(
        path,
        lambda d: (
            isinstance(d, list)
            or (isinstance(d, dict) and d.get("type") in ("FeatureCollection", "Feature"))
        ),
    )


FORMAT = register_format(
    AnnotationFormat(
        NAME,
        "QuPath GeoJSON (FeatureCollection)",
        (".geojson", ".json"),
        frozenset(
            {"holes", "points", "multipolygons", "instance_ids", "classes", "properties"}
            | {"vertices", "mpp", "image_size"}
        ),
        read,
        write,
        _sniff,
    )
)
