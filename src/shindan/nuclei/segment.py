"""Nucleus instance segmentation of an in-memory image at any µm/px."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from shindan.engine import Predictor, load_predictor
from shindan.errors import InputError
from shindan.nuclei.postprocess import DEFAULTS, instances_from_probs
from shindan.util.timing import StageTimer

# Above this many pixels the watershed runs on the model's grid (then labels are enlarged by
# nearest neighbour) instead of on the input grid, to bound memory.
FULL_RES_LIMIT_PX = 16_000_000
# With a ``where`` mask, probabilities are exact within this distance of every wanted pixel
# (a large nucleus's diameter), so each nucleus touching a wanted pixel is segmented whole.
REACH_UM = 12.0


@lru_cache(maxsize=4)
def _predictor(model: str, backend: str) -> Predictor:
    return load_predictor(model, backend)


def _resize(arr: np.ndarray, shape_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    import cv2

    h, w = shape_hw
    if arr.shape[:2] == (h, w):
        return arr
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if h < arr.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(arr, (w, h), interpolation=interp)


def nuclei_probabilities(
    image: np.ndarray,
    mpp: float,
    predictor: Predictor,
    batch_size: int = 8,
    progress: bool = False,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """(C, h, w) class probabilities (background, interior, boundary[, core]) on the model's
    µm/px grid; with a ``where`` mask (image grid), tiles farther than :data:`REACH_UM` from
    every wanted pixel are not run and count as background."""
    from shindan.engine.tiled import predict_array

    scale = mpp / predictor.card.mpp
    h, w = image.shape[:2]
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = _resize(image, shape)
    if where is not None:
        if where.shape != (h, w):
            raise InputError(f"where has shape {where.shape}, the image {(h, w)}")
        # area-weighted: a wanted pixel keeps its model pixel wanted at any scale
        where = _resize(where.astype(np.float32), shape) > 0
    return predict_array(
        predictor,
        np.ascontiguousarray(small),
        batch_size=batch_size,
        progress=progress,
        where=where,
        reach=int(np.ceil(REACH_UM / predictor.card.mpp)),
    )


def segment_nuclei(
    image: np.ndarray,
    mpp: float,
    *,
    model: str = "nuclei",
    backend: str = "auto",
    predictor: Predictor | None = None,
    progress: bool = False,
    timer: StageTimer | None = None,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Nucleus instance labels of an RGB image on its own pixel grid.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
        RGB image (not modified).
    mpp : float
        Its scale in µm/px; the image is resampled to the model's µm/px and back.
    model : str
        Shipped model name or model folder.
    backend : str
        'auto', 'onnx', 'torch' or 'torch-bf16'.
    predictor : Predictor, optional
        An already loaded predictor (overrides ``model``/``backend``).
    where : ndarray (H, W) of bool, optional
        The pixels whose nuclei are wanted: the network runs only on tiles within
        :data:`REACH_UM` of them (elsewhere nuclei may be missing). Nuclei touching a wanted
        pixel are as without a mask.
    timer : StageTimer, optional
        Receives the seconds of the network (``nuclei_net``, with resampling) and of the
        watershed (``nuclei_watershed``).

    Returns
    -------
    ndarray (H, W) int32
        0 background, 1..N one label per nucleus.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    if not mpp or mpp <= 0:
        raise InputError(f"µm/px must be positive, got {mpp}")
    pred = predictor or _predictor(str(model), backend)
    params = {**DEFAULTS, **pred.card.data.get("postprocess", {}).get("watershed", {})}
    timer = timer or StageTimer()
    with timer("nuclei_net"):
        probs = nuclei_probabilities(image, mpp, pred, progress=progress, where=where)
    h, w = image.shape[:2]
    ratio = (h * w) / max(1, probs.shape[1] * probs.shape[2])  # input px per model px
    with timer("nuclei_watershed"):
        if h * w <= FULL_RES_LIMIT_PX and ratio >= 1:
            # enlarge probabilities first: instance outlines follow the finer grid
            up = np.stack([_resize(p, (h, w)) for p in probs])
            return instances_from_probs(
                up,
                interior_threshold=params["interior_threshold"],
                foreground_threshold=params["foreground_threshold"],
                min_marker_px=round(params["min_marker_px"] * ratio),
                min_size_px=round(params["min_size_px"] * ratio),
                marker_h=params.get("marker_h", 0.0) * ratio**0.5,
            )
        lab = instances_from_probs(probs, **{k: params[k] for k in DEFAULTS})
        return _resize(lab, (h, w), nearest=True).astype(np.int32)


def largest_pieces(labels: np.ndarray) -> np.ndarray:
    """``labels`` with each label reduced to its largest 8-connected piece (others become 0).

    Examples
    --------
    >>> lab = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [2, 0, 0, 0]])
    >>> largest_pieces(lab).tolist()
    [[1, 1, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0]]
    """
    from skimage.measure import label as pieces_of

    pieces = pieces_of(labels, background=0, connectivity=2)
    n = int(pieces.max())
    if n == 0:
        return labels.copy()
    owner = np.zeros(n + 1, labels.dtype)
    owner[pieces.ravel()] = labels.ravel()
    area = np.bincount(pieces.ravel(), minlength=n + 1)
    best: dict[int, int] = {}
    for piece in range(1, n + 1):
        k = int(owner[piece])
        if k not in best or area[piece] > area[best[k]]:
            best[k] = piece
    keep = np.zeros(n + 1, bool)
    keep[list(best.values())] = True
    return np.where(keep[pieces], labels, 0).astype(labels.dtype)


def _is_glass(image: np.ndarray) -> bool:
    """True when a region is (almost) all bright, unstained glass: nothing to segment."""
    grey = image.mean(axis=2)
    return bool((grey > 220).mean() > 0.98)


def segment_nuclei_slide(
    slide,
    *,
    predictor: Predictor,
    chunk: int = 2048,
    margin: int = 96,
    progress: bool = False,
) -> np.ndarray:
    """Nucleus instance labels of a whole slide's level 0, processed in chunks.

    Each chunk is read with ``margin`` extra level-0 pixels on every side; a nucleus is kept
    by the chunk that holds its centroid, so nuclei on chunk borders are neither cut nor
    doubled. Glass-only chunks are skipped.

    Returns
    -------
    ndarray (H, W) int32
        0 background, 1..N one label per nucleus, on the slide's level-0 grid.
    """
    from scipy import ndimage

    from shindan.util.progress import progress_bar

    if slide.mpp is None:
        raise InputError(f"{slide.path}: no µm/px in the file; give --mpp")
    w, h = slide.dimensions
    out = np.zeros((h, w), np.int32)
    next_id = 1
    boxes = [(x, y) for y in range(0, h, chunk) for x in range(0, w, chunk)]
    with progress_bar("nuclei", total=len(boxes), enabled=progress) as advance:
        for x0, y0 in boxes:
            cw, ch = min(chunk, w - x0), min(chunk, h - y0)
            rx0, ry0 = max(0, x0 - margin), max(0, y0 - margin)
            rx1, ry1 = min(w, x0 + cw + margin), min(h, y0 + ch + margin)
            image = slide.read_region((rx0, ry0), 0, (rx1 - rx0, ry1 - ry0))
            advance()
            if _is_glass(image):
                continue
            lab = segment_nuclei(image, float(slide.mpp), predictor=predictor)
            n = int(lab.max())
            if n == 0:
                continue
            cy, cx = np.asarray(ndimage.center_of_mass(lab > 0, lab, np.arange(1, n + 1))).T
            cy, cx = cy + ry0, cx + rx0
            keep = (cx >= x0) & (cx < x0 + cw) & (cy >= y0) & (cy < y0 + ch)
            lut = np.zeros(n + 1, np.int32)
            lut[1:][keep] = np.arange(next_id, next_id + int(keep.sum()), dtype=np.int32)
            next_id += int(keep.sum())
            region = out[ry0:ry1, rx0:rx1]
            # where a neighbour chunk's nucleus is already written, this chunk's yields; what
            # is left of a nucleus keeps its largest piece, so every label is one region
            new = largest_pieces(np.where(region == 0, lut[lab], 0))
            region[new > 0] = new[new > 0]
    # a nucleus fully covered by one written earlier leaves a gap in the ids: renumber 1..N
    present = np.bincount(out.ravel(), minlength=next_id) > 0
    present[0] = False
    if present.sum() != next_id - 1:
        lut = np.zeros(next_id, np.int32)
        lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
        out = lut[out]
    return out
