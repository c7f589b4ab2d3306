"""Card-driven input preparation of classifiers: cell-centred crop, resize, colour normalisation.

One function, :func:`prepare`, turns a full-resolution image into the model's uint8 input exactly
as the card says; ``classify predict``, ``classify evaluate``, ``explain`` (hence the ONNX and
torch backends alike) and the training's validation and test all call it, and training calls
:func:`train_transform`, which differs only by drawing the augmentation in place of the resize.

The card's ``input`` may hold (both optional; absent means off, as for older cards):

``cell_crop``
    A number ``k``: find the stained nucleus nearest the centre (Otsu on blue minus green, the
    colour of any Romanowsky or haematoxylin stain) and crop a square of ``k`` times the
    nucleus's larger extent around it, padded with the image's background colour. The model
    then sees every cell at the same size whatever the camera, magnification or framing.
``colour``
    ``"stretch"``: map each channel's 1st..99th percentile to 0..255 (per image), which removes
    the lamp colour, white balance and overall stain strength; ``"grey"``: the luminance,
    stretched the same way, in all three channels (no hue at all: another stain's colour
    cannot mislead the model); ``"none"``: leave as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from shindan.engine.augment import crop_box, resize
from shindan.errors import ModelError

COLOUR_METHODS = ("none", "stretch", "grey")
# The nucleus is searched on a copy this many pixels wide (speed; the box is scaled back).
_SEARCH_SIDE = 96


def _nucleus_mask(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Stained (blue-purple) pixels of a small copy of ``image``, and that copy's scale."""
    h, w = image.shape[:2]
    scale = _SEARCH_SIDE / max(h, w)
    small = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (3, 3), 0)
    blue = small[..., 2].astype(np.int16) - small[..., 1].astype(np.int16)
    blue = np.clip(blue + 128, 0, 255).astype(np.uint8)
    thr, mask = cv2.threshold(blue, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if thr < 128 + 10:  # no clearly stained pixels: Otsu split noise
        return np.zeros_like(mask, bool), scale
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return mask.astype(bool), scale


def cell_box(image: np.ndarray, context: float) -> tuple[int, int, int, int]:
    """The square ``(r0, r1, c0, c1)`` centred on the central nucleus, ``context`` times its
    larger extent (it may reach beyond the image). The whole image's largest centred square
    when no nucleus is found.

    Examples
    --------
    >>> im = np.full((100, 120, 3), 230, np.uint8)
    >>> im[40:60, 50:70] = (90, 60, 150)  # a purple nucleus 20 px across
    >>> cell_box(im, 2.0)
    (30, 70, 40, 80)
    """
    h, w = image.shape[:2]
    mask, scale = _nucleus_mask(image)
    n, lab, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if n <= 1:
        side = min(h, w)
        r0, c0 = (h - side) // 2, (w - side) // 2
        return r0, r0 + side, c0, c0 + side
    sh, sw = mask.shape
    areas = stats[1:, cv2.CC_STAT_AREA].astype(float)
    d = np.hypot(cents[1:, 0] - sw / 2, cents[1:, 1] - sh / 2) / max(sh, sw)
    # The nucleus: big and central (a lobed nucleus: its lobes near the biggest central piece).
    main = int(np.argmax(areas * np.exp(-((d / 0.25) ** 2))))
    near = np.hypot(*(cents[1:] - cents[1 + main]).T) / max(sh, sw) < 0.25
    keep = 1 + np.flatnonzero(near & (areas >= 0.1 * areas[main]))
    sel = np.isin(lab, keep)
    rows, cols = np.flatnonzero(sel.any(1)), np.flatnonzero(sel.any(0))
    r_a, r_b, c_a, c_b = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    extent = max(r_b - r_a, c_b - c_a) / scale
    side = max(8, round(context * extent))
    rc, cc = (r_a + r_b) / 2 / scale, (c_a + c_b) / 2 / scale
    r0, c0 = round(rc - side / 2), round(cc - side / 2)
    return r0, r0 + side, c0, c0 + side


def background_colour(image: np.ndarray) -> tuple[int, int, int]:
    """The smear's background (plasma/glass): per channel, the 90th percentile."""
    return tuple(int(v) for v in np.percentile(image.reshape(-1, 3), 90, axis=0))


def cell_crop(image: np.ndarray, context: float) -> np.ndarray:
    """The square around the central nucleus (:func:`cell_box`), padded with the background.

    Examples
    --------
    >>> im = np.full((100, 120, 3), 230, np.uint8)
    >>> im[40:60, 50:70] = (90, 60, 150)
    >>> cell_crop(im, 2.0).shape
    (40, 40, 3)
    """
    h, w = image.shape[:2]
    r0, r1, c0, c1 = cell_box(image, context)
    pad = max(0, -r0, -c0, r1 - h, c1 - w)
    if pad:
        image = cv2.copyMakeBorder(
            image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=background_colour(image)
        )
    return image[r0 + pad : r1 + pad, c0 + pad : c1 + pad].copy()


def normalise_colour(image: np.ndarray, method: str = "stretch") -> np.ndarray:
    """Per-image colour normalisation (a new array; ``image`` is not changed).

    Examples
    --------
    >>> im = np.stack([np.linspace(60, 200, 100)] * 3, -1).reshape(10, 10, 3).astype(np.uint8)
    >>> out = normalise_colour(im, "stretch")
    >>> int(out.min()), int(out.max())
    (0, 255)
    """
    if method == "none":
        return image.copy()
    if method not in COLOUR_METHODS:
        raise ModelError(f"unknown colour normalisation {method!r} (known: {COLOUR_METHODS})")
    if method == "grey":
        image = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    flat = image.reshape(-1, image.shape[-1]).astype(np.float32)
    lo, hi = np.percentile(flat, [1, 99], axis=0)
    span = np.maximum(hi - lo, 8.0)  # a flat channel is not blown up into noise
    out = (image.astype(np.float32) - lo) * (255.0 / span)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _settings(spec: Mapping[str, Any]) -> tuple[float | None, str, int, float]:
    """(cell_crop, colour, size, crop) of a card's ``input`` section."""
    context = spec.get("cell_crop")
    colour = spec.get("colour", "none")
    if colour not in COLOUR_METHODS:
        raise ModelError(f"unknown colour normalisation {colour!r} (known: {COLOUR_METHODS})")
    if context is not None and not float(context) > 0:
        raise ModelError(f"input.cell_crop must be positive, got {context!r}")
    return (
        None if context is None else float(context),
        colour,
        int(spec["size"]),
        float(spec.get("crop", 1.0)),
    )


def model_box(image: np.ndarray, spec: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """The part of ``image`` the model sees, ``(r0, r1, c0, c1)`` (may reach past its edges)."""
    context, _, _, crop = _settings(spec)
    if context is None:
        return crop_box(image.shape, crop)
    r0, r1, c0, c1 = cell_box(image, context)
    b0, b1, d0, d1 = crop_box((r1 - r0, c1 - c0), crop)
    return r0 + b0, r0 + b1, c0 + d0, c0 + d1


def prepare(image: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """The model's uint8 ``(size, size, 3)`` input from a full-resolution RGB image.

    Parameters
    ----------
    image : (rows, cols, 3) uint8 array
        RGB image as read from disk (not changed).
    spec : mapping
        The card's ``input`` section: ``size``, and optionally ``crop``, ``cell_crop``,
        ``colour``.

    Examples
    --------
    >>> im = np.full((100, 120, 3), 230, np.uint8)
    >>> prepare(im, {"size": 32, "colour": "stretch", "cell_crop": 2.0}).shape
    (32, 32, 3)
    """
    context, colour, size, crop = _settings(spec)
    if context is not None:
        image = cell_crop(image, context)
    return normalise_colour(resize(image, size, crop), colour)


def train_transform(
    spec: Mapping[str, Any], augment: Callable[[np.ndarray, np.random.Generator], np.ndarray]
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """:func:`prepare` with ``augment(image, rng)`` (which also crops and resizes) in place of
    the resize: the same cell crop before it and the same colour normalisation after it."""
    context, colour, _, _ = _settings(spec)

    def transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if context is not None:
            image = cell_crop(image, context)
        return normalise_colour(augment(image, rng), colour)

    return transform


def eval_transform(
    spec: Mapping[str, Any], shift: Callable[[np.ndarray], np.ndarray] | None = None
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """:func:`prepare` as a dataset transform ``(image, rng)``, after an optional domain shift
    of the full-resolution image."""

    def transform(image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return prepare(shift(image) if shift else image, spec)

    return transform
