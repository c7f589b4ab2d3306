"""Training augmentation for stained-cell and tissue crops, and the plain evaluation resize.

Why each step: images from other hospitals differ in stain (hue, intensity), white balance,
magnification, crop size and background, focus and compression; the augmenter draws each of
these at random so the network cannot rely on them. All functions take and return
(rows, cols, 3) uint8 RGB and never modify their input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.color import hed2rgb, rgb2hed


def crop_box(shape: tuple[int, ...], crop: float = 1.0) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the central ``crop`` fraction of each side of an image."""
    h, w = shape[0], shape[1]
    ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    return r0, r0 + ch, c0, c0 + cw


def resize(image: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
    """The model input: the central ``crop`` fraction of each side, resized to ``size``².

    ``crop`` 1 keeps the whole image. A crop centres a centred object (a cell) and enlarges it.
    """
    if crop < 1.0:
        r0, r1, c0, c1 = crop_box(image.shape, crop)
        image = image[r0:r1, c0:c1]
    if image.shape[0] == size and image.shape[1] == size:
        return image.copy()
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(
        image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def hed_jitter(
    image: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.05
) -> np.ndarray:
    """Perturb haematoxylin/eosin/DAB optical densities: ``s' = s·a + b`` per stain channel.

    ``a`` ~ U(1-sigma, 1+sigma), ``b`` ~ U(-bias, bias) (Tellez et al. 2018).
    """
    hed = rgb2hed(image)
    a = rng.uniform(1 - sigma, 1 + sigma, 3)
    b = rng.uniform(-bias, bias, 3)
    out = hed2rgb(hed * a + b)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def hsv_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    hue: float = 0.05,
    saturation: float = 0.3,
    brightness: float = 0.2,
    contrast: float = 0.2,
    gamma: float = 0.25,
) -> np.ndarray:
    """Random hue shift (fraction of the colour circle), saturation/brightness/contrast scale
    and gamma, in the order a different microscope camera and white balance would apply them."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 256.0) % 256.0
    hsv[..., 1] *= rng.uniform(1 - saturation, 1 + saturation)
    hsv = np.clip(hsv, 0, 255).astype(np.uint8)
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32) / 255.0
    x = x * rng.uniform(1 - brightness, 1 + brightness)
    m = x.mean()
    x = (x - m) * rng.uniform(1 - contrast, 1 + contrast) + m
    x = np.clip(x, 0, 1) ** math.exp(rng.uniform(-gamma, gamma))
    # Per-channel gain: white balance of another lamp/camera.
    x = x * rng.uniform(0.92, 1.08, 3)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through JPEG at ``quality`` (1–100)."""
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else image.copy()


def affine(
    image: np.ndarray,
    size: int,
    scale: float = 1.0,
    angle: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
    border: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Resample ``image`` into a ``size``² output in one step.

    ``scale`` 1 maps the whole image onto the output; > 1 zooms in (the object looks bigger,
    edges are cut), < 1 zooms out (borders filled by reflection, or by the colour ``border``).
    ``angle`` in degrees, ``shift`` as a fraction of the output side, ``flip`` mirrors left-right.
    """
    h, w = image.shape[:2]
    fit = size / max(h, w) * scale
    c = size / 2.0
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, fit)
    m[:, 2] += (c - w / 2.0 + shift[0] * size, c - h / 2.0 + shift[1] * size)
    if flip:
        m[0] = -m[0]
        m[0, 2] += size
    mode = cv2.BORDER_REFLECT_101 if border is None else cv2.BORDER_CONSTANT
    interp = cv2.INTER_AREA if fit < 0.7 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        image, m, (size, size), flags=interp, borderMode=mode, borderValue=border or (0, 0, 0)
    )


@dataclass(frozen=True)
class Augmenter:
    """Random geometry, stain/colour, focus and compression for training.

    Parameters (ranges are uniform draws)
    ----------
    size : int
        Output side in pixels.
    scale : (float, float)
        Zoom range relative to the evaluation view (magnification and crop-size differences).
    crop : float
        Central fraction of each side that evaluation keeps (see :func:`resize`).
    rotate : bool
        Any rotation (cells and glomeruli have no up); else only flips.
    shift : float
        Maximum translation as a fraction of the side (off-centre crops).
    background_p : float
        Probability of filling borders with a plain light colour instead of reflection
        (other labs crop with different surroundings).
    hed_sigma, hed_bias : float
        Stain optical-density scale and bias ranges (see :func:`hed_jitter`).
    hue, saturation, brightness, contrast, gamma : float
        Colour jitter ranges (see :func:`hsv_jitter`).
    gray_p : float
        Probability of a grey image (forces shape cues over colour).
    fade, fade_p : float
        Maximum fraction by which the stain fades towards white (pale or old smears, thin
        sections), and how often (0 = never).
    blur_p, blur_sigma : float
        Probability and maximum sigma (px at output size) of Gaussian blur (focus).
    noise_p, noise_std : float
        Probability and maximum std (grey levels) of Gaussian sensor noise.
    jpeg_p : float, jpeg_quality : (int, int)
        Probability and quality range of JPEG compression.
    """

    size: int
    scale: tuple[float, float] = (0.8, 1.25)
    crop: float = 1.0
    rotate: bool = True
    shift: float = 0.08
    background_p: float = 0.2
    hed_sigma: float = 0.08
    hed_bias: float = 0.025
    hue: float = 0.04
    saturation: float = 0.35
    brightness: float = 0.2
    contrast: float = 0.25
    gamma: float = 0.3
    gray_p: float = 0.05
    fade: float = 0.0
    fade_p: float = 0.3
    blur_p: float = 0.25
    blur_sigma: float = 1.2
    noise_p: float = 0.2
    noise_std: float = 6.0
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)

    @classmethod
    def with_strength(
        cls,
        size: int,
        colour: float = 1.0,
        scale: tuple[float, float] = (0.8, 1.25),
        crop: float = 1.0,
        fade: float = 0.0,
    ) -> Augmenter:
        """Default augmenter with every colour range multiplied by ``colour`` (0 = none)."""
        return cls(
            size=size,
            scale=scale,
            crop=crop,
            fade=fade,
            hed_sigma=0.08 * colour,
            hed_bias=0.025 * colour,
            hue=0.04 * colour,
            saturation=min(0.9, 0.35 * colour),
            brightness=min(0.9, 0.2 * colour),
            contrast=min(0.9, 0.25 * colour),
            gamma=0.3 * colour,
            gray_p=min(1.0, 0.05 * colour),
        )

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Log-uniform zoom: zooming in 1.25x is as likely as zooming out 1/1.25x.
        lo, hi = np.log(self.scale[0]), np.log(self.scale[1])
        # Zoom is relative to the central crop that evaluation uses.
        scale = float(np.exp(rng.uniform(lo, hi))) / self.crop
        angle = float(rng.uniform(0, 360)) if self.rotate else float(rng.integers(0, 4) * 90)
        shift = tuple(rng.uniform(-self.shift, self.shift, 2))
        border = None
        if rng.random() < self.background_p:
            border = tuple(int(v) for v in rng.integers(200, 256, 3))
        x = affine(image, self.size, scale, angle, shift, bool(rng.random() < 0.5), border)
        if rng.random() < 0.8:
            x = hed_jitter(x, rng, self.hed_sigma, self.hed_bias)
        if rng.random() < 0.8:
            x = hsv_jitter(
                x, rng, self.hue, self.saturation, self.brightness, self.contrast, self.gamma
            )
        if self.fade > 0 and rng.random() < self.fade_p:
            f = 1.0 - rng.uniform(0, self.fade)
            x = np.clip(255.0 - f * (255.0 - x.astype(np.float32)) + 0.5, 0, 255).astype(np.uint8)
        if rng.random() < self.gray_p:
            x = np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        if rng.random() < self.blur_p:
            x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.3, self.blur_sigma)))
        if rng.random() < self.noise_p:
            noise = rng.normal(0, rng.uniform(1, self.noise_std), x.shape)
            x = np.clip(x + noise, 0, 255).astype(np.uint8)
        if rng.random() < self.jpeg_p:
            x = jpeg(x, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        return x


@dataclass(frozen=True)
class Resize:
    """The evaluation transform: the central crop resized to the model's input."""

    size: int
    crop: float = 1.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return resize(image, self.size, self.crop)
