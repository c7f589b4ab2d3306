"""The one in-memory model every annotation format reads into and writes from.

Coordinates are (x, y) floats in level-0 pixels of the annotated image, with pixel (row r,
column c) covering ``[c, c + 1) × [r, r + 1)`` (the DICOM SCOORD convention: the top-left
corner of the top-left pixel is (0, 0)). Rings are stored open (the first vertex is not
repeated at the end).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shindan.errors import AnnotationError


def as_ring(points: Any, source: str = "annotation", *, min_points: int = 3) -> np.ndarray:
    """An (N, 2) float64 ring from a list of (x, y) points, without a closing vertex.

    Parameters
    ----------
    points : array-like, shape (N, 2) or (N, 3)
        Vertices; a third coordinate (z) is dropped.
    source : str
        Where the points come from, for the error message.
    min_points : int
        Fewest distinct vertices allowed (3 for a polygon ring).

    Examples
    --------
    >>> as_ring([[0, 0], [4, 0], [4, 4], [0, 0]]).shape
    (3, 2)
    """
    try:
        arr = np.array(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: coordinates are not numbers") from None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise AnnotationError(f"{source}: coordinates are not a list of (x, y) points")
    arr = arr[:, :2]
    if not np.isfinite(arr).all():
        raise AnnotationError(f"{source}: non-finite coordinates")
    # drop the closing vertex, and copies of it some tools repeat before it (so that the
    # result is the same however many times a ring is normalised)
    while len(arr) > 1 and np.array_equal(arr[0], arr[-1]):
        arr = arr[:-1]
    if len(arr) < min_points:
        raise AnnotationError(f"{source}: a ring needs {min_points} points, got {len(arr)}")
    return arr


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a ring: positive when counter-clockwise in (x, y) axes."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@dataclass(frozen=True, eq=False)
class Point:
    """A single located point (e.g. a cell marked by a click)."""

    xy: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "xy", np.asarray(self.xy, np.float64).reshape(2))


@dataclass(frozen=True, eq=False)
class Polygon:
    """An exterior ring with zero or more interior rings (holes)."""

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "exterior", as_ring(self.exterior))
        object.__setattr__(self, "holes", tuple(as_ring(h, "hole") for h in self.holes))

    @property
    def area(self) -> float:
        """Area in square level-0 pixels (exterior minus holes)."""
        return abs(signed_area(self.exterior)) - sum(abs(signed_area(h)) for h in self.holes)


@dataclass(frozen=True, eq=False)
class MultiPolygon:
    """Several disjoint polygons that form one object (one instance in several pieces)."""

    polygons: tuple[Polygon, ...]

    def __post_init__(self) -> None:
        if not self.polygons:
            raise AnnotationError("a multipolygon needs at least one polygon")
        object.__setattr__(self, "polygons", tuple(self.polygons))


Geometry = Point | Polygon | MultiPolygon


def polygons_of(geometry: Geometry) -> tuple[Polygon, ...]:
    """The polygons of a geometry (none for a point)."""
    if isinstance(geometry, Polygon):
        return (geometry,)
    if isinstance(geometry, MultiPolygon):
        return geometry.polygons
    return ()


def from_polygons(polygons: Sequence[Polygon]) -> Polygon | MultiPolygon:
    """One polygon, or a multipolygon of several."""
    return polygons[0] if len(polygons) == 1 else MultiPolygon(tuple(polygons))


@dataclass(frozen=True, eq=False)
class AnnotatedObject:
    """One annotated object: its geometry, class name, optional instance id and properties.

    Attributes
    ----------
    geometry : Point, Polygon or MultiPolygon
        Level-0 pixel coordinates.
    label : str
        Class name ('' when the file gives none).
    instance_id : int or None
        The object's number when the source numbers objects (masks, COCO, labelme groups).
    properties : mapping
        Other key/value pairs a format carries (QuPath measurements, names); kept where the
        output format has room for them.
    """

    geometry: Geometry
    label: str = ""
    instance_id: int | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """'point', 'polygon' or 'multipolygon'."""
        return {Point: "point", Polygon: "polygon", MultiPolygon: "multipolygon"}[
            type(self.geometry)
        ]

    def replace(self, **changes: Any) -> AnnotatedObject:
        """A copy with some fields changed (objects are never mutated)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Annotations:
    """The annotations of one image: objects, the image's level-0 size and its µm/px.

    Examples
    --------
    >>> square = Polygon([[0, 0], [10, 0], [10, 10], [0, 10]])
    >>> anns = Annotations([AnnotatedObject(square, "glomerulus")], (100, 80), 0.25)
    >>> anns.classes(), anns.image_size, anns.objects[0].kind
    (['glomerulus'], (100, 80), 'polygon')
    """

    objects: tuple[AnnotatedObject, ...]
    image_size: tuple[int, int] | None = None  # (width, height) of level 0
    mpp: float | None = None  # µm per level-0 pixel

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if self.image_size is not None:
            w, h = (int(v) for v in self.image_size)
            object.__setattr__(self, "image_size", (w, h))
        if self.mpp is not None:
            object.__setattr__(self, "mpp", float(self.mpp))

    def __len__(self) -> int:
        return len(self.objects)

    def replace(self, **changes: Any) -> Annotations:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def classes(self) -> list[str]:
        """Class names in order of first appearance."""
        return list(dict.fromkeys(o.label for o in self.objects))

    def count(self, what: str) -> int:
        """How many objects carry ``what``: 'holes', 'points', 'multipolygons',
        'instance_ids' or 'properties'."""
        tests = {
            "holes": lambda o: any(p.holes for p in polygons_of(o.geometry)),
            "points": lambda o: isinstance(o.geometry, Point),
            "multipolygons": lambda o: isinstance(o.geometry, MultiPolygon),
            "instance_ids": lambda o: o.instance_id is not None,
            # QuPath's objectType is how QuPath shows an object, not data worth a note
            "properties": lambda o: bool(set(o.properties) - {"objectType"}),
            "classes": lambda o: bool(o.label),
        }
        return sum(1 for o in self.objects if tests[what](o))

    def to_polygon_annotations(self) -> list:
        """The polygons as :class:`shindan.io.annotations.Annotation` (for :func:`rasterize`).

        A multipolygon gives one entry per piece; points are left out (they have no area).
        """
        from shindan.io.annotations import Annotation

        return [
            Annotation(p.exterior, o.label, list(p.holes))
            for o in self.objects
            for p in polygons_of(o.geometry)
        ]


def group_parts(
    items: Iterable[tuple[Any, AnnotatedObject]],
) -> list[AnnotatedObject]:
    """Join polygon objects that share a grouping key into multipolygons.

    Formats that store each piece of an object as its own shape (ImageScope regions, labelme
    shapes with a ``group_id``, ASAP annotations) mark the pieces of one object with one key;
    reading them back joins the pieces, in their original order, at the first piece's place.
    ``None`` keys and points are never joined.
    """
    out: list[AnnotatedObject] = []
    index: dict[Any, int] = {}
    for key, o in items:
        if key is None or isinstance(o.geometry, Point):
            out.append(o)
        elif key not in index:
            index[key] = len(out)
            out.append(o)
        else:
            first = out[index[key]]
            merged = polygons_of(first.geometry) + polygons_of(o.geometry)
            out[index[key]] = first.replace(geometry=MultiPolygon(merged))
    return out
