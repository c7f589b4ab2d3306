"""COCO JSON (object detection / instance segmentation): ``images``, ``annotations``,
``categories``.

Reading takes the annotations of one image (the only one, or the one whose ``file_name``
matches ``--image``). Polygon segmentations (several parts: a multipolygon) and RLE
segmentations (traced, holes included) become objects whose instance id is the annotation
``id``; an annotation with only a ``bbox`` becomes its rectangle. Writing gives one polygon
list per object (COCO polygons have no holes), ``area`` and ``bbox``; µm/px is kept as the
image's ``mpp``. No points.
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
from shindan.io.annotation_formats.geometry import trace
from shindan.io.annotation_formats.model import (
    AnnotatedObject,
    Annotations,
    Point,
    Polygon,
    as_ring,
    from_polygons,
    polygons_of,
)
from shindan.io.annotations import _load_json

NAME = "coco"


def rle_counts(s: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """A boolean mask (rows, cols) from a COCO RLE dict (``size`` [h, w], ``counts``)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str | bytes):
        counts = rle_counts(counts.decode() if isinstance(counts, bytes) else counts)
    counts = np.asarray(counts, np.int64)
    if (counts < 0).any() or counts.sum() != h * w:
        raise ValueError(f"run lengths add up to {counts.sum()}, not {h}x{w}")
    values = np.arange(len(counts)) % 2 == 1  # runs alternate, starting with background
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T  # COCO runs go down the columns


def _image(data: Mapping[str, Any], path: Path, options: FormatOptions) -> Mapping[str, Any]:
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise AnnotationError(f"{path}: COCO file without images")
    if len(images) == 1:
        return images[0]
    if options.image is not None:
        hits = [
            im
            for im in images
            if isinstance(im, Mapping)
            and Path(str(im.get("file_name", ""))).name == options.image.name
        ]
        if len(hits) == 1:
            return hits[0]
    raise AnnotationError(
        f"{path}: holds {len(images)} images; give --image with the file name of the one to read"
    )


def read(path: Path, options: FormatOptions) -> Annotations:
    data = _load_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"{path}: not a COCO file (no 'annotations' list)")
    image = _image(data, path, options)
    if not isinstance(image, Mapping):
        raise AnnotationError(f"{path}: an image entry is not an object")
    cats = {
        c.get("id"): str(c.get("name") or "")
        for c in data.get("categories") or []
        if isinstance(c, Mapping)
    }
    objects = []
    for i, ann in enumerate(data["annotations"]):
        src = f"{path}: annotation {i}"
        if not isinstance(ann, Mapping):
            raise AnnotationError(f"{src} is not an object")
        if ann.get("image_id") != image.get("id"):
            continue
        label = cats.get(ann.get("category_id"), str(ann.get("category_id", "")))
        seg = ann.get("segmentation")
        polys: list[Polygon] = []
        try:
            if isinstance(seg, list) and seg:
                polys = [
                    Polygon(as_ring(np.asarray(part, np.float64).reshape(-1, 2), src))
                    for part in seg
                    if len(part) >= 6
                ]
            elif isinstance(seg, Mapping):
                polys = trace(rle_decode(seg))
            elif isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4:
                x, y, w, h = (float(v) for v in ann["bbox"])
                polys = [Polygon([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])]
        except (TypeError, ValueError, KeyError) as exc:
            raise AnnotationError(f"{src}: bad segmentation ({exc})") from None
        if polys:
            iid = ann.get("id") if isinstance(ann.get("id"), int) else None
            objects.append(AnnotatedObject(from_polygons(polys), label, iid))
    w, h = image.get("width"), image.get("height")
    size = (w, h) if isinstance(w, int) and isinstance(h, int) else None
    mpp = image.get("mpp") if isinstance(image.get("mpp"), int | float) else None
    return Annotations(objects, size, mpp)


def write(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    vocab = options.vocabulary
    cats: dict[str, int] = {}
    used = {o.instance_id for o in annotations.objects if o.instance_id is not None}
    spare = iter(i for i in range(1, 1 << 62) if i not in used)
    anns = []
    for o in annotations.objects:
        if isinstance(o.geometry, Point):
            continue
        name = vocab.output_name(o.label, NAME)
        cid = cats.setdefault(name, len(cats) + 1)
        polys = polygons_of(o.geometry)
        pts = np.concatenate([p.exterior for p in polys])
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        anns.append(
            {
                "id": o.instance_id if o.instance_id is not None else next(spare),
                "image_id": 1,
                "category_id": cid,
                "segmentation": [p.exterior.ravel().tolist() for p in polys],
                "area": float(sum(p.area for p in polys)),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "iscrowd": 0,
            }
        )
    w, h = annotations.image_size or (None, None)
    image: dict[str, Any] = {
        "id": 1,
        "file_name": options.image.name if options.image is not None else "",
        "width": w,
        "height": h,
    }
    if annotations.mpp is not None:
        image["mpp"] = annotations.mpp
    data = {
        "images": [image],
        "annotations": anns,
        "categories": [{"id": i, "name": n} for n, i in cats.items()],
    }
    path.write_text(json.dumps(data), encoding="utf-8")


FORMAT = register_format(
    AnnotationFormat(
        NAME,
        "COCO JSON (one image)",
        (".json",),
        frozenset({"multipolygons", "instance_ids", "classes", "vertices", "mpp", "image_size"}),
        read,
        write,
        lambda path: sniff_json(
            path, lambda d: isinstance(d, dict) and "annotations" in d and "images" in d
        ),
    )
)
