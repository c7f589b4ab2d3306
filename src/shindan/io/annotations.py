"""Annotation files: read polygons with class names, rasterise them, write QuPath GeoJSON.

Readers return :class:`Annotation` objects whose coordinates are (x, y) in level-0 pixels of
the image they annotate. Formats:

* QuPath GeoJSON (``.geojson``/``.json`` FeatureCollection, Polygon/MultiPolygon, class from
  ``properties.classification.name``, or ``names`` joined as "Tubule: Atrophic" for derived
  classes, see :func:`base_class`);
* Aperio ImageScope XML (``.xml``: ``Annotations/Annotation/Regions/Region/Vertices``; class from
  the region's ``Text``, else the annotation's ``Name``, else the layer's ``Attribute``;
  ``NegativeROA`` regions are holes of their layer, rectangles and ellipses become polygons);
* labelme JSON (``.json`` with ``shapes``: ``label``, ``points``, polygon/rectangle/circle);
* ASAP XML and COCO JSON through :mod:`shindan.io.annotation_formats` (polygons only);
* label-mask images (``.png``/``.tif``: one integer class per pixel, see :func:`read_label_mask`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shindan.errors import AnnotationError

IGNORE = 255  # label value for pixels that carry no annotation (excluded from losses)
# Class names (lower case) of regions a user excluded from training (QuPath's Ignore*).
IGNORE_CLASSES = frozenset({"ignore*", "ignore", "exclude", "excluded"})


@dataclass(frozen=True)
class Annotation:
    """One polygon with a class name.

    Attributes
    ----------
    polygon : ndarray, shape (N, 2)
        Exterior ring as (x, y) float coordinates in level-0 pixels.
    label : str
        Class name as written in the file ('' when the file has none).
    holes : list of ndarray
        Interior rings, same convention.
    """

    polygon: np.ndarray
    label: str = ""
    holes: list[np.ndarray] = field(default_factory=list)

    def scaled(self, factor: float, offset: tuple[float, float] = (0.0, 0.0)) -> Annotation:
        """Coordinates ``(xy - offset) * factor`` (e.g. level-0 pixels → a target µm/px grid)."""
        off = np.asarray(offset, np.float64)
        return Annotation(
            (self.polygon - off) * factor, self.label, [(h - off) * factor for h in self.holes]
        )


def _ring(points: Any, source: str) -> np.ndarray:
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: polygon coordinates are not numbers") from None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise AnnotationError(f"{source}: polygon coordinates are not a list of (x, y) points")
    arr = arr[:, :2]
    if not np.isfinite(arr).all():
        raise AnnotationError(f"{source}: polygon has non-finite coordinates")
    return arr


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None


# --------------------------------------------------------------------------------------- GeoJSON
def _geojson_class(props: Mapping[str, Any] | None) -> str:
    props = props or {}
    cls = props.get("classification")
    if isinstance(cls, Mapping) and cls.get("name") is not None:
        return str(cls["name"])
    if isinstance(cls, Mapping) and isinstance(cls.get("names"), list) and cls["names"]:
        # QuPath derived class, displayed as "Tubule: Atrophic"
        return ": ".join(str(n) for n in cls["names"])
    if isinstance(cls, str):
        return cls
    for key in ("name", "label", "class"):
        if isinstance(props.get(key), str):
            return props[key]
    return ""


def base_class(label: str) -> str:
    """The base class of a QuPath derived class name ("Tubule: Atrophic" → "Tubule").

    Parameters
    ----------
    label : str
        Class name as read from a file.

    Returns
    -------
    str
        The part before the first ':' (all of ``label`` when it has none), stripped.
    """
    return label.split(":", 1)[0].strip()


def _geojson_geometry(geom: Mapping[str, Any], label: str, src: str) -> list[Annotation]:
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Polygon":
        polys = [coords]
    elif kind == "MultiPolygon":
        polys = coords
    elif kind == "GeometryCollection":
        return [a for g in geom.get("geometries", []) for a in _geojson_geometry(g, label, src)]
    else:  # points and lines carry no area to train on
        return []
    if not isinstance(polys, list):
        raise AnnotationError(f"{src}: {kind} without a coordinate list")
    out = []
    for rings in polys:
        if not rings:
            continue
        ext = _ring(rings[0], src)
        if len(ext) >= 3:
            out.append(Annotation(ext, label, [_ring(r, src) for r in rings[1:]]))
    return out


def read_geojson(path: str | Path) -> list[Annotation]:
    """Polygons of a QuPath GeoJSON export (FeatureCollection, Feature list or single Feature)."""
    p = Path(path)
    data = _load_json(p)
    if isinstance(data, list):
        features = data
    elif isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        features = [data]
    else:
        raise AnnotationError(f"{p}: not GeoJSON (no FeatureCollection or Feature)")
    if not isinstance(features, list):
        raise AnnotationError(f"{p}: 'features' is not a list")
    out: list[Annotation] = []
    for i, feat in enumerate(features):
        if isinstance(feat, Mapping) and feat.get("geometry", False) is None:
            continue  # "geometry": null is valid GeoJSON (an unlocated feature)
        if not isinstance(feat, Mapping) or not isinstance(feat.get("geometry"), Mapping):
            raise AnnotationError(f"{p}: feature {i} has no geometry")
        out += _geojson_geometry(
            feat["geometry"], _geojson_class(feat.get("properties")), f"{p}: feature {i}"
        )
    return out


# --------------------------------------------------------------------------- Aperio ImageScope
_GENERIC_LAYER = re.compile(r"(layer|annotation)\s*\d*", re.IGNORECASE)


def _imagescope_layer_class(ann: ET.Element) -> str:
    """Class name of an ImageScope layer: its Name, else its first named attribute."""
    name = (ann.get("Name") or "").strip()
    if name and not _GENERIC_LAYER.fullmatch(name):
        return name
    attrs = ann.find("Attributes")
    for attr in attrs.findall("Attribute") if attrs is not None else []:
        key, value = (attr.get("Name") or "").strip(), (attr.get("Value") or "").strip()
        # ImageScope writes the layer class either as the attribute name or as the value of
        # its default "Description" column
        if key.lower() == "description":
            if value:
                return value
        elif key:
            return key
    return name


def _imagescope_shape(region: ET.Element, pts: np.ndarray) -> np.ndarray | None:
    """Outline of a region: rectangles (Type 1) and ellipses (Type 2) from their corners."""
    kind = region.get("Type", "0").strip()
    if kind in ("1", "2") and len(pts) in ((2, 4) if kind == "1" else (2,)):
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        if x1 <= x0 or y1 <= y0:
            return None
        if kind == "1":
            return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
    return pts if len(pts) >= 3 else None


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool((a.min(0) <= b.max(0)).all() and (b.min(0) <= a.max(0)).all())


def read_imagescope_xml(path: str | Path) -> list[Annotation]:
    """Polygons of an Aperio ImageScope XML file (every Region's Vertices).

    Regions with ``NegativeROA="1"`` are not painted: they become holes of the positive regions
    of the same layer that they overlap. Rectangles and ellipses given by their corners become
    polygons (an ellipse as 64 points).
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except ET.ParseError as exc:
        raise AnnotationError(f"{p}: not valid XML ({exc})") from None
    if root.tag != "Annotations":
        raise AnnotationError(
            f"{p}: not an ImageScope file (root <{root.tag}>, expected <Annotations>)"
        )
    out = []
    for ann in root.iter("Annotation"):
        name = _imagescope_layer_class(ann)
        positive: list[tuple[np.ndarray, str]] = []
        negative: list[np.ndarray] = []
        for region in ann.iter("Region"):
            label = region.get("Text") or name
            try:
                pts = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
            except (TypeError, ValueError):
                raise AnnotationError(
                    f"{p}: region {region.get('Id')} has a vertex without numeric X/Y"
                ) from None
            ring = _imagescope_shape(region, np.asarray(pts, np.float64).reshape(-1, 2))
            if ring is None:
                continue
            if (region.get("NegativeROA") or "0").strip() == "1":
                negative.append(ring)
            else:
                positive.append((ring, label))
        for ring, label in positive:
            # a hole only cuts its own polygon when painted, so a box overlap test is enough
            holes = [h for h in negative if _boxes_overlap(ring, h)]
            out.append(Annotation(ring, label, holes))
    return out


# ---------------------------------------------------------------------------------- labelme
def _labelme_shape(shape: Mapping[str, Any], src: str) -> Annotation | None:
    pts = _ring(shape.get("points") or [], src) if shape.get("points") else None
    if pts is None:
        return None
    kind = shape.get("shape_type") or "polygon"
    label = str(shape.get("label", ""))
    if kind == "rectangle" and len(pts) == 2:
        (x0, y0), (x1, y1) = pts
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    elif kind == "circle" and len(pts) == 2:
        r = float(np.hypot(*(pts[1] - pts[0])))
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([pts[0][0] + r * np.cos(t), pts[0][1] + r * np.sin(t)], 1)
    elif kind != "polygon":
        return None  # points, lines: no area
    return Annotation(pts, label) if len(pts) >= 3 else None


def read_labelme(path: str | Path) -> list[Annotation]:
    """Polygons of a labelme JSON file (polygon, rectangle and circle shapes)."""
    p = Path(path)
    data = _load_json(p)
    if not isinstance(data, Mapping) or not isinstance(data.get("shapes"), list):
        raise AnnotationError(f"{p}: not a labelme file (no 'shapes' list)")
    out = []
    for i, shape in enumerate(data["shapes"]):
        if not isinstance(shape, Mapping):
            raise AnnotationError(f"{p}: shape {i} is not an object")
        a = _labelme_shape(shape, f"{p}: shape {i}")
        if a is not None:
            out.append(a)
    return out


# ------------------------------------------------------------------------------ label masks
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")


def read_label_mask(path: str | Path) -> np.ndarray:
    """A label-mask image as a 2-D integer array (one class code per pixel).

    RGB masks whose three channels are equal are read as grey; other RGB masks are an error
    (their colour table is unknown). 1-bit masks read as 0/1.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError:
        raise AnnotationError(f"{p}: no such file") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise AnnotationError(f"{p}: not a readable mask image ({exc})") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            raise AnnotationError(f"{p}: colour mask; give a single-channel label mask")
        arr = arr[..., 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise AnnotationError(f"{p}: not a 2-D integer label mask")
    return arr


# ------------------------------------------------------------------------------- dispatcher
def annotation_format(path: str | Path) -> str:
    """'geojson', 'imagescope', 'labelme' or 'mask' from the file name (and JSON content)."""
    p = Path(path)
    suf = p.suffix.lower()
    if suf == ".geojson":
        return "geojson"
    if suf == ".xml":
        return "imagescope"
    if suf in MASK_SUFFIXES:
        return "mask"
    if suf == ".json":
        data = _load_json(p)
        if isinstance(data, Mapping) and "shapes" in data:
            return "labelme"
        return "geojson"
    raise AnnotationError(
        f"{p}: unknown annotation format (use .geojson, .xml, labelme .json or a label-mask .png)"
    )


def read_annotations(path: str | Path) -> list[Annotation]:
    """Polygons of any supported vector annotation file (level-0 pixel coordinates).

    Label masks are converted with :func:`mask_to_annotations` (class name = the pixel value).
    """
    p = Path(path)
    if not p.exists():
        raise AnnotationError(f"{p}: no such file")
    fmt = annotation_format(p)
    if fmt in ("geojson", "imagescope"):
        # .json and .xml may also be COCO or ASAP: read those with the format registry
        from shindan.io.annotation_formats import get_format

        for other in ("coco",) if fmt == "geojson" else ("asap",):
            if get_format(other).sniff(p):
                return get_format(other).read(p).to_polygon_annotations()
    if fmt == "geojson":
        return read_geojson(p)
    if fmt == "imagescope":
        return read_imagescope_xml(p)
    if fmt == "labelme":
        return read_labelme(p)
    return mask_to_annotations(read_label_mask(p))


# ------------------------------------------------------------------------------ rasterising
def _paint(out: np.ndarray, ring: np.ndarray, value: int) -> None:
    """Set every pixel whose centre lies inside ``ring`` (x, y on the output grid).

    Pixel (r, c) covers [c, c + 1) × [r, r + 1), so its centre is (c + 0.5, r + 0.5): a
    polygon edge on a pixel border never takes the pixel beyond it (areas come out exact).
    """
    from skimage.draw import polygon as fill_polygon

    rr, cc = fill_polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape=out.shape)
    out[rr, cc] = value


def _polygon_mask(
    a: Annotation, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Pixels of ``a`` (exterior minus its own holes) within its bounding box on the grid.

    Holes are cut from this polygon's own mask, so they never erase other polygons.
    """
    if len(a.polygon) < 3:
        return None
    lo = np.floor(a.polygon.min(0)).astype(np.int64)
    hi = np.ceil(a.polygon.max(0)).astype(np.int64) + 1
    c0, r0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    c1, r1 = min(int(hi[0]), shape[1]), min(int(hi[1]), shape[0])
    if c1 <= c0 or r1 <= r0:
        return None
    off = np.array([c0, r0], np.float64)
    mask = np.zeros((r1 - r0, c1 - c0), bool)
    _paint(mask, a.polygon - off, 1)
    for h in a.holes:
        _paint(mask, np.asarray(h, np.float64) - off, 0)
    return (slice(r0, r1), slice(c0, c1)), mask


def rasterize(
    annotations: Iterable[Annotation],
    shape: tuple[int, int],
    classes: Mapping[str, int] | None = None,
    *,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    fill: int = 0,
    dtype: Any = np.uint8,
) -> np.ndarray:
    """Paint polygons into a label mask of ``shape`` (rows, cols).

    Parameters
    ----------
    annotations : iterable of Annotation
        Level-0 pixel coordinates.
    shape : (rows, cols)
        Output grid, whose pixel (0, 0) covers level-0 ``offset`` and whose pixels are
        ``1/scale`` level-0 pixels wide (``scale = mpp_level0 / mpp_target``).
    classes : mapping class name → code, optional
        Unlisted names are skipped; a derived class ("Tubule: Atrophic") not listed itself
        paints as its base class (see :func:`base_class`). Default: every polygon paints 1.
    fill : int
        Value of pixels no polygon covers (e.g. 255 = ignore for partly annotated images).

    Later polygons paint over earlier ones. A hole only cuts its own polygon: its pixels keep
    what other polygons painted there, else ``fill``.
    """
    out = np.full(shape, fill, dtype=dtype)
    for a in annotations:
        if classes is None:
            code = 1
        else:
            code = classes.get(a.label)
            if code is None:
                code = classes.get(base_class(a.label))
        if code is None:
            continue
        painted = _polygon_mask(a.scaled(scale, offset), out.shape)
        if painted is not None:
            out[painted[0]][painted[1]] = int(code)
    return out


def rasterize_instances(
    annotations: Sequence[Annotation],
    shape: tuple[int, int],
    *,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Instance label map (int32; 0 background, polygon *i* → ``i + 1``) on a scaled grid.

    Later polygons paint over earlier ones; a hole only cuts its own polygon.
    """
    out = np.zeros(shape, np.int32)
    for i, a in enumerate(annotations, start=1):
        painted = _polygon_mask(a.scaled(scale, offset), out.shape)
        if painted is not None:
            out[painted[0]][painted[1]] = i
    return out


def rasterize_at_mpp(
    annotations: Iterable[Annotation],
    size_wh: tuple[int, int],
    mpp: float,
    target_mpp: float,
    classes: Mapping[str, int] | None = None,
    *,
    fill: int = 0,
) -> np.ndarray:
    """Label mask of a whole image of level-0 size ``size_wh`` (µm/px ``mpp``) at ``target_mpp``."""
    scale = mpp / target_mpp
    w, h = size_wh
    rows, cols = max(1, round(h * scale)), max(1, round(w * scale))
    return rasterize(annotations, (rows, cols), classes, scale=scale, fill=fill)


# ---------------------------------------------------------------------- polygons from rasters
def instances_to_polygons(
    label_map: np.ndarray,
    mpp: float | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    label: str = "Nucleus",
) -> list[Annotation]:
    """One outer polygon per instance of an integer label map.

    Coordinates are ``(col, row) * scale + offset`` (pixel corners, so a polygon traced on a
    grid of ``scale`` level-0 pixels per pixel lands on level 0). ``mpp`` is accepted for
    symmetry with the writers and is not needed for the geometry.
    """
    import cv2
    from scipy import ndimage

    del mpp
    lab = np.asarray(label_map)
    out: list[Annotation] = []
    off = np.asarray(offset, np.float64)
    if lab.dtype.kind not in "iu" or lab.dtype.itemsize > 8 or lab.dtype == np.uint64:
        lab = lab.astype(np.int64)
    for idx, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        # the instance with a 1 px empty border (findContours needs it), without np.pad's
        # per-call overhead (thousands of nuclei per block)
        sub = np.zeros((sl[0].stop - sl[0].start + 2, sl[1].stop - sl[1].start + 2), np.uint8)
        np.equal(lab[sl], idx, out=sub[1:-1, 1:-1], casting="unsafe")
        contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        c = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
        if len(c) < 3:  # a 1-2 pixel object: use its pixel square(s)' bounding box
            x0, y0 = c.min(0)
            x1, y1 = c.max(0) + 1
            c = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
        else:
            # findContours follows pixel centres (index i = centre at i + 0.5 in corner
            # coordinates); move half a pixel outwards so the outline hugs the pixel borders
            centre = c.mean(0)
            c = c + 0.5 + 0.5 * np.sign(c - centre)
        c += np.array([sl[1].start - 1, sl[0].start - 1], np.float64)
        out.append(Annotation(c * scale + off, label))
    return out


def mask_to_annotations(mask: np.ndarray, ignore: int = IGNORE) -> list[Annotation]:
    """Polygons of every connected region of each class value (>0, not ``ignore``) of a mask."""
    from skimage.measure import label as cc_label

    out = []
    for v in np.unique(mask):
        if v == 0 or v == ignore:
            continue
        regions = cc_label(mask == v, connectivity=1)
        out += [
            Annotation(a.polygon, str(int(v)), a.holes)
            for a in instances_to_polygons(regions, label=str(int(v)))
        ]
    return out


# -------------------------------------------------------------------------------- writer
DEFAULT_COLOURS = {"Nucleus": (0, 180, 255)}


def _rgb_int(rgb: Sequence[int]) -> int:
    r, g, b = (int(c) & 255 for c in rgb)
    # QuPath stores colours as packed signed ARGB integers with opaque alpha
    return ((0xFF << 24) | (r << 16) | (g << 8) | b) - (1 << 32)


def to_geojson(
    annotations: Iterable[Annotation],
    object_type: str = "detection",
    colours: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """A QuPath-compatible FeatureCollection (one Polygon Feature per annotation)."""
    colours = {**DEFAULT_COLOURS, **(colours or {})}
    feats = []
    for a in annotations:
        rings = [a.polygon, *a.holes]
        coords = []
        for r in rings:
            r = np.asarray(r, np.float64)
            if len(r) and not np.array_equal(r[0], r[-1]):
                r = np.vstack([r, r[:1]])  # GeoJSON rings are closed
            coords.append(np.round(r, 2).tolist())
        cls = {"name": a.label or "Nucleus", "color": _rgb_int(colours.get(a.label, (255, 0, 0)))}
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {"objectType": object_type, "classification": cls},
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def write_geojson(
    polygons: Iterable[Annotation], path: str | Path, *, object_type: str = "detection"
) -> Path:
    """Write polygons as QuPath GeoJSON detections, atomically (temp file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = to_geojson(polygons, object_type)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}-", dir=p.parent)
    os.chmod(tmp, 0o644)  # mkstemp files are private; outputs are for sharing
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
