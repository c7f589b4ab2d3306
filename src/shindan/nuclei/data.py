"""Training data for nucleus instance segmentation (MoNuSeg-style: images + masks / polygons).

Targets are three classes on the model's grid: 0 background, 1 nucleus interior, 2 nucleus
boundary (the inner rim of each instance, ``boundary_px`` pixels wide), and optionally 3
nucleus core (the centre of each instance, see :func:`instance_targets`), 255 = unknown,
254 (:data:`MERGED`) = "some nucleus class". Images with instance polygons give exact
boundaries; images with only a binary mask give instances as connected components. A
component that looks like several merged nuclei (low solidity, large) keeps its exact rim
against the background (boundary) and its exact surroundings (background), but its inside is
only known to be nucleus: it gets the partial label :data:`MERGED`, since the boundaries
between the touching nuclei in it are not drawn (see :func:`label_sets`).

Label-mask images with more than two values (e.g. uint16 PNGs, 0 background, 1..N) are
instance maps: they give exact instances, like polygons, over the whole image (see
:func:`is_instance_map`).

Polygon files may be partly annotated: polygons of a region class (:data:`REGION_CLASSES`,
e.g. QuPath's ``Region*``) outline the annotated area and are not nuclei; without any, the
annotated area is the nuclei's bounding box plus a margin. Outside it the target is 255 (see
:func:`read_nuclei`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shindan.errors import InputError
from shindan.io.annotations import (
    IGNORE,
    IGNORE_CLASSES,
    MASK_SUFFIXES,
    rasterize,
    rasterize_instances,
    read_annotations,
    read_label_mask,
)

MONUSEG_MPP = 0.2527  # µm/px of the MoNuSeg 40x tiles
MERGED = 254  # target code: some nucleus class (inside a merged-looking blob)
# Class names (lower case) of polygons that outline the annotated area, not a nucleus.
REGION_CLASSES = frozenset({"region*", "region", "roi", "annotated region", "tissue"})
MARGIN_UM = 50.0  # annotated area of a file without regions: the nuclei's box plus this


def label_sets(core: bool = False) -> dict[int, list[int]]:
    """Partial labels for the training loss (``TrainConfig.label_sets``): :data:`MERGED`
    allows every nucleus class (interior, boundary, and core when the model has it)."""
    return {MERGED: [1, 2, 3] if core else [1, 2]}


@dataclass
class NucleiSample:
    """One training image resampled to the model's grid.

    Attributes
    ----------
    name : str
    image : ndarray (H, W, 3) uint8
    target : ndarray (H, W) uint8, 0/1/2/254/255 (see module docstring)
    instances : ndarray (H, W) int32 or None
        Instance labels on the same grid when the source had polygons.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    instances: np.ndarray | None


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def resize(image: np.ndarray, shape_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize to (rows, cols): area averaging when shrinking images, nearest for labels."""
    import cv2

    h, w = shape_hw
    if image.shape[:2] == (h, w):
        return image.copy()
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def instance_targets(
    instances: np.ndarray,
    unknown: np.ndarray | None = None,
    boundary_px: int = 1,
    core: float = 0.0,
) -> np.ndarray:
    """0/1/2(/3) target (background / interior / inner boundary / core) of an instance map;
    255 where ``unknown``.

    The boundary is the instance pixels within ``boundary_px`` pixels (4-connected steps for
    1, 8-connected steps beyond) of a pixel with another label or background: a thicker rim
    makes the gap between touching nuclei easier to learn at fine resolutions. With ``core``
    in (0, 1), the instance pixels at least ``core`` × the instance's largest distance from
    its edge are class 3: one compact centre per nucleus, kept apart from its neighbours'
    centres by two rims and interiors, so that as watershed markers they stay apart where
    the interiors of touching nuclei meet (wherever a rim is missed).

    Examples
    --------
    >>> import numpy as np
    >>> inst = np.zeros((9, 9), np.int32)
    >>> inst[1:8, 1:8] = 1
    >>> t = instance_targets(inst, core=0.6)
    >>> t[4]
    array([0, 2, 1, 3, 3, 3, 1, 2, 0], dtype=uint8)
    """
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    t = np.zeros(instances.shape, np.uint8)
    t[instances > 0] = 1
    if boundary_px <= 1:
        rim = find_boundaries(instances, mode="inner")
    else:
        size = 2 * boundary_px + 1
        rim = (ndimage.grey_erosion(instances, size=size, mode="nearest") != instances) | (
            ndimage.grey_dilation(instances, size=size, mode="nearest") != instances
        )
    if core > 0:
        t[(instances > 0) & (_relative_depth(instances) >= core)] = 3
    t[rim & (instances > 0)] = 2
    if unknown is not None:
        t[unknown] = IGNORE
    return t


def _relative_depth(instances: np.ndarray) -> np.ndarray:
    """Each instance pixel's distance from its instance's edge over the instance's largest."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    inside = (instances > 0) & ~find_boundaries(instances, mode="inner")
    dist = ndimage.distance_transform_edt(inside)  # touching instances: edges count as outside
    peak = ndimage.maximum(dist, instances, index=np.arange(int(instances.max()) + 1))
    peak = np.asarray(peak, np.float64)
    return np.where(instances > 0, dist / np.maximum(peak[instances], 1e-6), 0.0)


def mask_instances(
    mask: np.ndarray, min_solidity: float = 0.88, max_area_ratio: float = 1.8
) -> tuple[np.ndarray, np.ndarray]:
    """Instances of a binary mask (connected components) and the pixels of doubtful ones.

    A component whose solidity (area / convex-hull area) is below ``min_solidity``, or whose
    area exceeds ``max_area_ratio`` × the median component area (with at least 5 components),
    is probably several touching nuclei: its pixels are returned as unknown.
    """
    from skimage.measure import label, regionprops

    lab = label(mask > 0, connectivity=1)
    unknown = np.zeros(mask.shape, bool)
    props = regionprops(lab)
    median = float(np.median([r.area for r in props])) if len(props) >= 5 else np.inf
    for r in props:
        if r.area > 30 and (r.solidity < min_solidity or r.area > max_area_ratio * median):
            sl = r.slice
            unknown[sl] |= lab[sl] == r.label
    return lab.astype(np.int32), unknown


def is_instance_map(mask: np.ndarray) -> bool:
    """Whether a label mask is a nucleus instance map (0 background, one value per nucleus)
    rather than a binary nucleus mask: it holds more than two values.

    A map of a single nucleus reads as a binary mask, which gives the same instance.

    Examples
    --------
    >>> import numpy as np
    >>> is_instance_map(np.array([[0, 1], [2, 2]], np.uint16))
    True
    >>> is_instance_map(np.array([[0, 255], [255, 0]], np.uint8))
    False
    """
    values = np.unique(mask)
    return len(values) > 2


def has_instances(annotation_path: str | Path) -> bool:
    """Whether an annotation file gives nucleus instances: polygons, or an instance map
    (see :func:`is_instance_map`), not a binary mask."""
    if Path(annotation_path).suffix.lower() not in MASK_SUFFIXES:
        return True
    return is_instance_map(read_label_mask(annotation_path))


def _resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map resampled to ``shape`` by nearest neighbour (pixel centres), as int32."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int), w - 1)
    return labels.astype(np.int32)[np.ix_(rows, cols)]


def read_nuclei(
    annotation_path: str | Path,
    shape: tuple[int, int],
    margin_px: float,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus instances and annotated area of a polygon file or instance map on a grid of
    ``shape``.

    Parameters
    ----------
    annotation_path : path
        GeoJSON, ImageScope XML or labelme JSON, or an instance-map image (see
        :func:`is_instance_map`; its annotated area is the whole image).
    shape : (rows, cols)
        Output grid, ``scale`` grid pixels per level-0 pixel.
    margin_px : float
        Margin (grid pixels) of the nuclei's bounding box, the annotated area of a file
        without region polygons.
    scale : float
        ``mpp_level0 / mpp_grid``.

    Returns
    -------
    instances : ndarray (rows, cols) int32
        0 background, polygon *i* of the nuclei → ``i + 1``.
    area : ndarray (rows, cols) bool
        The annotated area: inside a polygon of a class in :data:`REGION_CLASSES`, or
        without any, the nuclei's bounding box plus ``margin_px`` (a partly annotated image
        teaches only where it was annotated), minus polygons of an ignore class
        (:data:`~shindan.io.annotations.IGNORE_CLASSES`, e.g. QuPath's ``Ignore*``).

    Raises
    ------
    InputError
        If the file holds no nucleus polygon (empty, or only points, lines or regions), or
        is a binary mask, or an instance map whose size does not match ``shape / scale``.
    """
    if Path(annotation_path).suffix.lower() in MASK_SUFFIXES:
        m = read_label_mask(annotation_path)
        if not is_instance_map(m):
            raise InputError(f"{annotation_path}: a binary mask, not a nucleus instance map")
        expected = (max(1, round(m.shape[0] * scale)), max(1, round(m.shape[1] * scale)))
        if expected != tuple(shape):
            raise InputError(
                f"{annotation_path}: instance map is {m.shape[1]}x{m.shape[0]}, "
                f"image is {round(shape[1] / scale)}x{round(shape[0] / scale)}"
            )
        return _resize_labels(m, shape), np.ones(shape, bool)
    anns = read_annotations(annotation_path)
    kind = [a.label.strip().lower() for a in anns]
    regions = [a for a, k in zip(anns, kind, strict=True) if k in REGION_CLASSES]
    excluded = [a for a, k in zip(anns, kind, strict=True) if k in IGNORE_CLASSES]
    nuclei = [
        a for a, k in zip(anns, kind, strict=True) if k not in REGION_CLASSES | IGNORE_CLASSES
    ]
    if not nuclei:
        raise InputError(
            f"{annotation_path}: no nucleus polygon (the file is empty or holds only points, "
            "lines or regions)"
        )
    inst = rasterize_instances(nuclei, shape, scale=scale)
    if regions:
        area = rasterize(regions, shape, scale=scale) > 0
    else:
        pts = np.concatenate([a.polygon for a in nuclei]) * scale
        x0, y0 = np.maximum(0, np.floor(pts.min(0) - margin_px)).astype(int)
        x1, y1 = np.ceil(pts.max(0) + margin_px).astype(int)
        area = np.zeros(shape, bool)
        area[y0:y1, x0:x1] = True
    if excluded:  # regions the user excluded (Ignore*) teach nothing, nuclei or not
        area &= rasterize(excluded, shape, scale=scale) == 0
    return inst, area


def load_sample(
    image_path: str | Path,
    annotation_path: str | Path | None,
    mpp: float,
    target_mpp: float,
    boundary_px: int = 1,
    core: float = 0.0,
) -> NucleiSample:
    """Read an image and its nucleus polygons, instance map or binary mask, resampled to
    ``target_mpp`` (``boundary_px``: rim width of the boundary class; ``core``: centre class,
    see :func:`instance_targets`).

    Polygon files teach only their annotated area (see :func:`read_nuclei`; 255 elsewhere);
    instance maps (see :func:`is_instance_map`) and binary masks are taken as complete."""
    image = read_rgb(image_path)
    h, w = image.shape[:2]
    scale = mpp / target_mpp
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = resize(image, shape)
    inst = None
    if annotation_path is None:
        raise InputError(f"{image_path}: no mask or annotation file found")
    is_mask = Path(annotation_path).suffix.lower() in MASK_SUFFIXES
    m = read_label_mask(annotation_path) if is_mask else None
    if m is not None and m.shape != (h, w):
        raise InputError(f"{annotation_path}: mask is {m.shape[1]}x{m.shape[0]}, image is {w}x{h}")
    if m is not None and is_instance_map(m):
        # exact instances over the whole image, as from polygons
        inst = _resize_labels(m, shape)
        target = instance_targets(inst, boundary_px=boundary_px, core=core)
    elif m is not None:
        m_small = resize((m > 0).astype(np.float32), shape) > 0.5
        lab, merged = mask_instances(m_small)
        target = instance_targets(lab, boundary_px=boundary_px, core=core)
        # a merged blob's rim against background is a true boundary; inside it, the
        # boundaries (and centres) of its nuclei are unknown: nucleus, class not known
        target[merged & ((target == 1) | (target == 3))] = MERGED
    else:
        inst, area = read_nuclei(annotation_path, shape, MARGIN_UM / target_mpp, scale)
        target = instance_targets(inst, ~area, boundary_px=boundary_px, core=core)
    return NucleiSample(Path(image_path).stem, small, target, inst)


def make_sampler(
    samples: list[NucleiSample],
    size: int,
    *,
    stain: float = 1.0,
    density: tuple[float, float] = (1.0, 1.0),
):
    """A training-tile sampler: random crop, dihedral transform, stain jitter (``stain``:
    strength; ``density``: range of a global stain-intensity factor, see
    :func:`shindan.engine.augment.hed_jitter`), scale jitter."""
    from shindan.engine.augment import flip_rotate, stain_augment

    weights = np.array([s.image.shape[0] * s.image.shape[1] for s in samples], float)
    weights /= weights.sum()

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = samples[int(rng.choice(len(samples), p=weights))]
        # scale jitter ±15%: nuclei sizes and scanner calibration vary
        z = rng.uniform(0.85, 1.15)
        src = max(16, int(round(size / z)))
        h, w = s.target.shape
        src_h, src_w = min(src, h), min(src, w)
        y = int(rng.integers(0, h - src_h + 1))
        x = int(rng.integers(0, w - src_w + 1))
        img = s.image[y : y + src_h, x : x + src_w]
        tgt = s.target[y : y + src_h, x : x + src_w]
        img = resize(img, (size, size))
        tgt = resize(tgt, (size, size), nearest=True)
        img, tgt = flip_rotate(img, tgt, rng)
        img = stain_augment(img, rng, strength=stain, density=density)
        return img, tgt

    return sample
