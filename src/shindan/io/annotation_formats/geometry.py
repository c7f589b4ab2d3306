"""Raster ↔ polygon geometry shared by the formats: tracing label maps, painting objects."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from shindan.io.annotation_formats.model import (
    AnnotatedObject,
    Annotations,
    Polygon,
    from_polygons,
    polygons_of,
    signed_area,
)


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove vertices that lie on the straight line through their neighbours (exact)."""
    prev, nxt = np.roll(ring, 1, 0), np.roll(ring, -1, 0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - prev[:, 1]) - (ring[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - prev[:, 0]
    )
    keep = np.abs(cross) > 1e-9
    return ring[keep] if keep.sum() >= 3 else ring


def contains(ring: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which (x, y) ``points`` lie inside ``ring`` (even-odd rule)."""
    from skimage.measure import points_in_poly

    return points_in_poly(np.asarray(points, np.float64).reshape(-1, 2), ring)


def assign_holes(
    exteriors: Sequence[np.ndarray], holes: Sequence[np.ndarray]
) -> list[list[np.ndarray]]:
    """For each exterior ring, the holes it contains (each hole goes to the smallest
    exterior that holds its vertices; a hole no exterior holds is dropped)."""
    areas = [abs(signed_area(e)) for e in exteriors]
    out: list[list[np.ndarray]] = [[] for _ in exteriors]
    for h in holes:
        inside = [i for i, e in enumerate(exteriors) if contains(e, h).mean() > 0.5]
        if inside:
            out[min(inside, key=lambda i: areas[i])].append(h)
    return out


def trace(mask: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> list[Polygon]:
    """Polygons (with holes) outlining the True pixels of a 2-D boolean mask.

    The outline runs through the midpoints of pixel borders (marching squares at 0.5 on the
    pixel grid, foreground 4-connected), so painting it back with the pixel-centre rule of
    :func:`paint` gives the same pixels. ``offset`` is the (x, y) of the mask's top-left
    corner in level-0 pixels.

    Examples
    --------
    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True; m[2, 2] = False
    >>> [(len(p.exterior), len(p.holes)) for p in trace(m)]
    [(8, 1)]
    """
    from skimage.measure import find_contours

    padded = np.pad(np.asarray(mask, bool), 1).astype(np.float32)
    shift = np.array([offset[0] - 0.5, offset[1] - 0.5])  # padded index i → corner i - 0.5
    exteriors, holes = [], []
    for c in find_contours(padded, 0.5):
        ring = _drop_collinear(c[:-1, ::-1] + shift)  # (row, col) → (x, y), open
        if len(ring) < 3:
            continue
        # skimage winds around high values one way and low values the other: in (x, y)
        # an exterior (foreground inside) has positive shoelace area, a hole negative
        (exteriors if signed_area(ring) > 0 else holes).append(ring)
    return [
        Polygon(e, tuple(h)) for e, h in zip(exteriors, assign_holes(exteriors, holes), strict=True)
    ]


def label_map_to_objects(
    label_map: np.ndarray,
    *,
    instances: bool,
    name_of: Callable[[int], str],
    ignore: Sequence[int] = (),
) -> list[AnnotatedObject]:
    """Objects of an integer label map.

    Parameters
    ----------
    label_map : ndarray of int, shape (rows, cols)
        0 is background.
    instances : bool
        True: each value is one object (instance id = the value; pieces of one value make a
        multipolygon). False: each value is a class, each 4-connected region one object.
    name_of : callable
        Class name of a value (for instance maps it is called with 0 and names every object).
    ignore : sequence of int
        Values that are not objects.
    """
    from scipy import ndimage

    lab = np.asarray(label_map)
    out: list[AnnotatedObject] = []
    values = [int(v) for v in np.unique(lab) if v != 0 and int(v) not in set(ignore)]
    if instances:
        slices = ndimage.find_objects(np.where(np.isin(lab, values), lab, 0).astype(np.int64))
        for v in values:
            sl = slices[v - 1]
            polys = trace(lab[sl] == v, (sl[1].start, sl[0].start))
            if polys:
                out.append(AnnotatedObject(from_polygons(polys), name_of(0), instance_id=v))
        return out
    for v in values:
        regions, n = ndimage.label(lab == v)
        for i, sl in enumerate(ndimage.find_objects(regions), start=1):
            for poly in trace(regions[sl] == i, (sl[1].start, sl[0].start)):
                out.append(AnnotatedObject(poly, name_of(v)))
    return out


def paint(
    annotations: Annotations,
    shape: tuple[int, int],
    value_of: Callable[[AnnotatedObject, int], int],
    dtype: np.dtype | type = np.uint8,
) -> np.ndarray:
    """A label map of ``shape`` (rows, cols): each object's pixels (centre inside its polygons,
    holes cut from the object itself) set to ``value_of(object, index)``; later objects paint
    over earlier ones."""
    from shindan.io.annotations import Annotation, _polygon_mask

    out = np.zeros(shape, dtype)
    for i, o in enumerate(annotations.objects):
        v = value_of(o, i)
        for p in polygons_of(o.geometry):
            painted = _polygon_mask(Annotation(p.exterior, o.label, list(p.holes)), shape)
            if painted is not None:
                out[painted[0]][painted[1]] = v
    return out
