"""Nucleus instance segmentation of an in-memory image at any µm/px."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from shindan.engine import Predictor, load_predictor
from shindan.errors import InputError
from shindan.nuclei.postprocess import DEFAULTS, instances_from_probs

# Above this many pixels the watershed runs on the model's grid (then labels are enlarged by
# nearest neighbour) instead of on the input grid, to bound memory.
FULL_RES_LIMIT_PX = 16_000_000


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


def nuclei_probabilities(image: np.ndarray, mpp: float, predictor: Predictor,
                         batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """(3, h, w) background/interior/boundary probabilities on the model's µm/px grid."""
    from shindan.engine.tiled import predict_array

    scale = mpp / predictor.card.mpp
    h, w = image.shape[:2]
    small = _resize(image, (max(1, round(h * scale)), max(1, round(w * scale))))
    return predict_array(predictor, np.ascontiguousarray(small), batch_size=batch_size,
                         progress=progress)


def segment_nuclei(
    image: np.ndarray,
    mpp: float,
    *,
    model: str = "nuclei",
    backend: str = "auto",
    predictor: Predictor | None = None,
    progress: bool = False,
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

    Returns
    -------
    ndarray (H, W) int32
        0 background, 1..N one label per nucleus.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                         f"{image.dtype}")
    if not mpp or mpp <= 0:
        raise InputError(f"µm/px must be positive, got {mpp}")
    pred = predictor or _predictor(str(model), backend)
    params = {**DEFAULTS, **pred.card.data.get("postprocess", {}).get("watershed", {})}
    probs = nuclei_probabilities(image, mpp, pred, progress=progress)
    h, w = image.shape[:2]
    ratio = (h * w) / max(1, probs.shape[1] * probs.shape[2])  # input px per model px
    if h * w <= FULL_RES_LIMIT_PX and ratio >= 1:
        # enlarge probabilities first: instance outlines follow the finer grid
        up = np.stack([_resize(p, (h, w)) for p in probs])
        return instances_from_probs(up, interior_threshold=params["interior_threshold"],
                                    foreground_threshold=params["foreground_threshold"],
                                    min_marker_px=round(params["min_marker_px"] * ratio),
                                    min_size_px=round(params["min_size_px"] * ratio))
    lab = instances_from_probs(probs, **{k: params[k] for k in DEFAULTS})
    return _resize(lab, (h, w), nearest=True).astype(np.int32)
