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
    if len(exteriors) == 1:  # one region (a traced component): every hole is its own
        return [list(holes)]
    areas = [abs(signed_area(e)) for e in exteriors]
    lo = [e.min(0) for e in exteriors]
    hi = [e.max(0) for e in exteriors]
    out: list[list[np.ndarray]] = [[] for _ in exteriors]
    for h in holes:
        hlo, hhi = h.min(0), h.max(0)
        boxed = [i for i in range(len(exteriors)) if (lo[i] <= hlo).all() and (hhi <= hi[i]).all()]
        inside = [i for i in boxed if contains(exteriors[i], h).mean() > 0.5]
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


def fill(
    rings: Sequence[np.ndarray], shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Pixels inside ``rings`` (an exterior and its holes, even-odd rule), by scanline.

    A pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) is; edges are half-open, so a
    pixel is never counted twice. Cost grows with the outline, not with the polygon's area
    times its vertices (a whole-slide region with thousands of holes paints in milliseconds).

    Returns
    -------
    (rows slice, cols slice), boolean mask of that box; None when nothing is inside.
    """
    x0 = np.concatenate([r[:, 0] for r in rings])
    y0 = np.concatenate([r[:, 1] for r in rings])
    x1 = np.concatenate([np.roll(r[:, 0], -1) for r in rings])
    y1 = np.concatenate([np.roll(r[:, 1], -1) for r in rings])
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    h, w = shape
    # rows whose centre y = r + 0.5 lies in [min y, max y) of each edge
    r0 = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, h).astype(np.int64)
    r1 = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, h).astype(np.int64)
    n = r1 - r0
    if n.sum() == 0:
        return None
    edge = np.repeat(np.arange(len(n)), n)
    rows = r0[edge] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    xs = x0[edge] + (rows + 0.5 - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # each row crosses the closed rings an even number of times: pair them up
    row, xa, xb = rows[0::2], xs[0::2], xs[1::2]
    c0 = np.clip(np.ceil(xa - 0.5), 0, w).astype(np.int64)
    c1 = np.clip(np.ceil(xb - 0.5), 0, w).astype(np.int64)
    ok = c1 > c0
    row, c0, c1 = row[ok], c0[ok], c1[ok]
    if not len(row):
        return None
    top, bottom = int(row.min()), int(row.max()) + 1
    left, right = int(c0.min()), int(c1.max())
    runs = np.zeros((bottom - top, right - left + 1), np.int32)
    np.add.at(runs, (row - top, c0 - left), 1)
    np.add.at(runs, (row - top, c1 - left), -1)
    mask = np.cumsum(runs, axis=1)[:, :-1] > 0
    return (slice(top, bottom), slice(left, right)), mask


def paint(
    annotations: Annotations,
    shape: tuple[int, int],
    value_of: Callable[[AnnotatedObject, int], int],
    dtype: np.dtype | type = np.uint8,
) -> np.ndarray:
    """A label map of ``shape`` (rows, cols): each object's pixels (centre inside its polygons,
    holes cut from the object itself) set to ``value_of(object, index)``; later objects paint
    over earlier ones.

    Examples
    --------
    >>> sq = Polygon([[1, 1], [4, 1], [4, 4], [1, 4]], holes=([[2, 2], [3, 2], [3, 3], [2, 3]],))
    >>> paint(Annotations([AnnotatedObject(sq, "a")]), (5, 5), lambda o, i: 7)[2]
    array([0, 7, 0, 7, 0], dtype=uint8)
    """
    out = np.zeros(shape, dtype)
    for i, o in enumerate(annotations.objects):
        v = value_of(o, i)
        for p in polygons_of(o.geometry):
            painted = fill([p.exterior, *p.holes], shape)
            if painted is not None:
                out[painted[0]][painted[1]] = v
    return out
