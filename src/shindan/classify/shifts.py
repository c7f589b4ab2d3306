"""Fixed, deterministic domain shifts for robustness checks (never used in training).

Each shift imitates what another lab, microscope or scanner does to an image, with a kind or
strength that the training augmentation does not produce: a different stain-vector basis,
a lamp colour temperature, washed-out staining, magnification outside the zoom range, heavy
JPEG, defocus, a plain white background. All take and return (rows, cols, 3) uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from skimage.color import hed2rgb, rgb2hed

from shindan.engine.augment import affine, jpeg
from shindan.errors import InputError

# Another basis of stain vectors (rows: haematoxylin, eosin, residual; as RGB optical density),
# rotated away from skimage's Ruifrok–Johnston one: a different dye lot / stain protocol.
_OTHER_STAINS = np.array([[0.75, 0.62, 0.25], [0.12, 0.88, 0.46], [0.27, 0.57, 0.78]])
_OTHER_STAINS = _OTHER_STAINS / np.linalg.norm(_OTHER_STAINS, axis=1, keepdims=True)


def stain_basis(image: np.ndarray) -> np.ndarray:
    """Unmix with the standard H&E(-DAB) basis and remix with another stain-vector basis."""
    from skimage.color import combine_stains

    hed = rgb2hed(image)
    out = combine_stains(hed, _OTHER_STAINS)
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def stain_strong(image: np.ndarray) -> np.ndarray:
    """Haematoxylin +40%, eosin -30% (over-stained nuclei, pale cytoplasm)."""
    hed = rgb2hed(image) * np.array([1.4, 0.7, 1.0])
    return np.clip(hed2rgb(hed) * 255 + 0.5, 0, 255).astype(np.uint8)


def warm_lamp(image: np.ndarray) -> np.ndarray:
    """Yellow halogen light without white balance: R×1.08, G×0.98, B×0.78, gamma 0.85."""
    x = image.astype(np.float32) / 255.0 * np.array([1.08, 0.98, 0.78], np.float32)
    return np.clip(np.clip(x, 0, 1) ** 0.85 * 255 + 0.5, 0, 255).astype(np.uint8)


def washed_out(image: np.ndarray) -> np.ndarray:
    """Faded stain: halve the distance of every pixel from white."""
    x = 255.0 - 0.5 * (255.0 - image.astype(np.float32))
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _zoom(factor: float, border: tuple[int, int, int] | None = None):
    def f(image: np.ndarray) -> np.ndarray:
        size = max(image.shape[:2])
        out = affine(image, size, scale=factor, border=border)
        return out[: image.shape[0], : image.shape[1]] if out.shape[:2] != image.shape[:2] else out

    f.__doc__ = f"Magnification ×{factor} about the centre" + (
        ", white surround." if border else ", reflected borders."
    )
    f.zoom = factor  # type: ignore[attr-defined]
    return f


def blur(image: np.ndarray) -> np.ndarray:
    """Defocus: Gaussian blur, sigma 2.5 px at the image's own resolution."""
    return cv2.GaussianBlur(image, (0, 0), 2.5)


def jpeg_15(image: np.ndarray) -> np.ndarray:
    """Heavy JPEG compression (quality 15)."""
    return jpeg(image, 15)


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "stain-basis": stain_basis,
    "stain-strong": stain_strong,
    "warm-lamp": warm_lamp,
    "washed-out": washed_out,
    "zoom-0.65": _zoom(0.65),
    "zoom-1.5": _zoom(1.5),
    "white-surround-0.75": _zoom(0.75, (250, 250, 250)),
    "blur-2.5": blur,
    "jpeg-15": jpeg_15,
}


def describe(names: list[str] | tuple[str, ...], scale: tuple[float, float] | None = None) -> str:
    """How the robustness check was done, for model cards.

    ``scale`` is the training zoom range: zoom shifts inside it are flagged as such.
    """
    parts = []
    for n in names:
        text = f"{n}: {(SHIFTS[n].__doc__ or '').strip().rstrip('.')}"
        z = getattr(SHIFTS[n], "zoom", None)
        if z is not None and scale is not None and scale[0] <= z <= scale[1]:
            text += " (this zoom lies inside the training zoom range)"
        parts.append(text)
    return (
        "The held-out images were re-evaluated after each fixed, deterministic shift below "
        "(applied to the full-resolution image before the model's crop and resize). The "
        "colour, blur and JPEG shifts are stronger than, or of another kind than, anything "
        "the training augmentation draws. " + "; ".join(parts) + "."
    )


def get_shift(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The shift called ``name`` (see :data:`SHIFTS`)."""
    try:
        return SHIFTS[name]
    except KeyError:
        raise InputError(f"unknown shift {name!r} (choose from {', '.join(SHIFTS)})") from None
