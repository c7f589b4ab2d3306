"""Training augmentation for every trained model: geometry, stain, colour, focus, compression.

Why: images from other hospitals differ in stain (hue, intensity, basis), white balance,
magnification, crop size and background, focus and compression; drawing each of these at
random keeps a network from relying on them. One implementation of each transform serves
two pipelines:

- :class:`Augmenter` for classifier crops (cells, glomeruli): geometry in one resampling,
  then stain, colour, fade, grey, blur, noise and JPEG; :class:`Resize` is its evaluation view.
- :func:`stain_augment` for segmentation tiles (kidney compartments, nuclei), whose geometry
  (crop, :func:`flip_rotate`) is drawn by the task's sampler together with the label.

Every function takes (rows, cols, 3) uint8 RGB, returns a new uint8 array and never modifies
its input. Stain optical densities (OD) are natural-log units: ``OD = -ln(I / 255)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Ruifrok & Johnston stain vectors (as in skimage.color.rgb2hed), rows = H, E, DAB, unit length
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = (_RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)).astype(
    np.float32
)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


# --- geometry -------------------------------------------------------------------------------


def crop_box(shape: tuple[int, ...], crop: float = 1.0) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the central ``crop`` fraction of each side of an image.

    Examples
    --------
    >>> crop_box((100, 80, 3), 0.5)
    (25, 75, 20, 60)
    """
    h, w = shape[0], shape[1]
    ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    return r0, r0 + ch, c0, c0 + cw


def resize(image: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
    """The model input: the central ``crop`` fraction of each side, resized to ``size``².

    ``crop`` 1 keeps the whole image. A crop centres a centred object (a cell) and enlarges it.

    Examples
    --------
    >>> resize(np.zeros((60, 40, 3), np.uint8), 32).shape
    (32, 32, 3)
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

    Examples
    --------
    >>> affine(np.zeros((50, 70, 3), np.uint8), 32, scale=1.5, angle=30).shape
    (32, 32, 3)
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


def flip_rotate(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random one of the 8 dihedral transforms, applied to image and label alike.

    Examples
    --------
    >>> im, lab = flip_rotate(np.zeros((8, 6, 3), np.uint8), np.zeros((8, 6), np.uint8),
    ...                       np.random.default_rng(0))
    >>> im.shape[:2] == lab.shape
    True
    """
    k = int(rng.integers(4))
    image, label = np.rot90(image, k), np.rot90(label, k)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


# --- stain and colour -----------------------------------------------------------------------


def _od(image: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(image.astype(np.float32), 1.0) / 255.0)


def _from_od(od: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = 255.0 * np.exp(-np.maximum(od, 0))
    return np.clip(out + 0.5, 0, 255).reshape(shape).astype(np.uint8)


def draw_density(rng: np.random.Generator, density: tuple[float, float]) -> float:
    """A global stain-intensity factor drawn log-uniformly from the range ``density``."""
    if density[0] == density[1]:
        return float(density[0])
    return float(np.exp(rng.uniform(np.log(density[0]), np.log(density[1]))))


def scale_density(image: np.ndarray, factor: float) -> np.ndarray:
    """Multiply every pixel's optical density by ``factor``: below 1 fades the stain towards
    white (a pale, thin or over-differentiated section, an old smear), above 1 darkens it;
    glass stays white.

    Examples
    --------
    >>> img = np.full((2, 2, 3), 100, np.uint8)
    >>> int(scale_density(img, 0.5)[0, 0, 0])  # 255·sqrt(100/255)
    160
    """
    return _from_od(_od(image) * np.float32(factor), image.shape)


def hed_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    sigma: float = 0.25,
    bias: float = 0.04,
    density: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Perturb haematoxylin/eosin/DAB optical densities: ``s' = s·a·d + b`` per stain.

    ``a`` ~ U(1-sigma, 1+sigma) and ``b`` ~ U(-bias, bias) per stain, ``b`` in OD units
    (Tellez et al. 2018); ``d`` is one factor shared by all stains drawn from ``density``
    (see :func:`scale_density`).

    Examples
    --------
    >>> img = np.full((4, 4, 3), (190, 110, 170), np.uint8)
    >>> hed_jitter(img, np.random.default_rng(0)).shape
    (4, 4, 3)
    """
    hed = _od(image).reshape(-1, 3) @ _HED_FROM_RGB
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32)
    if density != (1.0, 1.0):
        alpha *= np.float32(draw_density(rng, density))
    beta = rng.uniform(-bias, bias, 3).astype(np.float32)
    return _from_od((hed * alpha + beta) @ _RGB_FROM_HED, image.shape)


def he_to_pas_like(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Push an H&E tile towards PAS: stronger, bluer haematoxylin and magenta-purple cytoplasm.

    Examples
    --------
    >>> img = np.full((4, 4, 3), (230, 150, 200), np.uint8)
    >>> he_to_pas_like(img, np.random.default_rng(0)).shape
    (4, 4, 3)
    """
    hed = _od(image).reshape(-1, 3) @ _HED_FROM_RGB
    # PAS stains basement membranes/cytoplasm magenta (a redder "eosin") and is usually darker
    pas_vec = np.array([0.25, 0.85, 0.45], np.float32)
    pas_vec += rng.normal(0, 0.05, 3).astype(np.float32)
    pas_vec /= np.linalg.norm(pas_vec)
    basis = _RGB_FROM_HED.copy()
    basis[1] = pas_vec
    hed[:, 0] *= rng.uniform(1.0, 1.5)
    hed[:, 1] *= rng.uniform(1.0, 1.8)
    return _from_od(hed @ basis, image.shape)


def colour_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    hue: float = 0.05,
    saturation: float = 0.3,
    brightness: float = 0.15,
    contrast: float = 0.2,
    gamma: float = 0.0,
    gain: float = 0.0,
) -> np.ndarray:
    """Random hue shift (fraction of the colour circle), saturation, brightness and contrast
    scale, gamma (``exp(±gamma)``) and per-channel gain (``1 ± gain``: another lamp's white
    balance), in the order a different microscope camera would apply them.

    Examples
    --------
    >>> img = np.full((4, 4, 3), (190, 110, 170), np.uint8)
    >>> colour_jitter(img, np.random.default_rng(0), gamma=0.3, gain=0.08).dtype
    dtype('uint8')
    """
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 256.0) % 256.0
    hsv[..., 1] *= rng.uniform(1 - saturation, 1 + saturation)
    hsv = np.clip(hsv, 0, 255).astype(np.uint8)
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32) / 255.0
    x = x * rng.uniform(1 - brightness, 1 + brightness)
    m = x.mean()
    x = (x - m) * rng.uniform(1 - contrast, 1 + contrast) + m
    if gamma > 0:
        x = np.clip(x, 0, 1) ** math.exp(rng.uniform(-gamma, gamma))
    if gain > 0:
        x = x * rng.uniform(1 - gain, 1 + gain, 3).astype(np.float32)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def grey(image: np.ndarray, keep: float = 0.0) -> np.ndarray:
    """Luminance grey with a fraction ``keep`` of the colour left (0 = fully grey).

    Examples
    --------
    >>> out = grey(np.full((2, 2, 3), (200, 100, 50), np.uint8))
    >>> bool((out == out[..., :1]).all())
    True
    """
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
    out = lum + keep * (image.astype(np.float32) - lum)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --- focus, sensor, compression -------------------------------------------------------------


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (focus differs between scanners and cameras)."""
    return cv2.GaussianBlur(image, (0, 0), float(sigma))


def noise(image: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Additive Gaussian sensor noise of ``std`` grey levels."""
    return np.clip(image + rng.normal(0, std, image.shape), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through JPEG at ``quality`` (1–100).

    Examples
    --------
    >>> jpeg(np.zeros((8, 8, 3), np.uint8), 50).shape
    (8, 8, 3)
    """
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else image.copy()


# --- pipelines ------------------------------------------------------------------------------


def stain_augment(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    pas_prob: float = 0.0,
    density: tuple[float, float] = (1.0, 1.0),
    grey_prob: float = 0.0,
) -> np.ndarray:
    """Tile pipeline: maybe an H&E→PAS-like shift, HED jitter, maybe near-grey, occasional
    blur, then colour jitter; ``strength`` scales every stain and colour range.

    ``density``: range of a global stain-intensity factor (see :func:`hed_jitter`);
    ``grey_prob``: chance of a near-grey tile, so that shape, not hue, must carry the class.

    Examples
    --------
    >>> img = np.full((16, 16, 3), (190, 110, 170), np.uint8)
    >>> stain_augment(img, np.random.default_rng(0), grey_prob=0.5).shape
    (16, 16, 3)
    """
    out = image
    if pas_prob and rng.random() < pas_prob:
        out = he_to_pas_like(out, rng)
    out = hed_jitter(out, rng, sigma=0.25 * strength, bias=0.04 * strength, density=density)
    if grey_prob and rng.random() < grey_prob:
        out = grey(out, keep=rng.uniform(0.0, 0.4))  # a trace of colour left
    if rng.random() < 0.2:
        out = blur(out, rng.uniform(0.3, 1.0))
    return colour_jitter(
        out,
        rng,
        hue=0.05 * strength,
        saturation=0.3 * strength,
        brightness=0.15 * strength,
        contrast=0.2 * strength,
    )


# skimage's rgb2hed divides OD by ln(1e6); the crop pipeline's bias was 0.025 in those units
_HED_BIAS = 0.025 * math.log(1e6)


@dataclass(frozen=True)
class Augmenter:
    """Crop pipeline: random geometry, stain/colour, fade, grey, focus and compression.

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
        Stain optical-density scale and bias (OD units) ranges (see :func:`hed_jitter`).
    hue, saturation, brightness, contrast, gamma, gain : float
        Colour jitter ranges (see :func:`colour_jitter`).
    gray_p : float
        Probability of a grey image (forces shape cues over colour).
    fade, fade_p : float
        Maximum fraction by which the stain density fades towards white (pale or old smears,
        thin sections; see :func:`scale_density`), and how often (0 = never).
    blur_p, blur_sigma : float
        Probability and maximum sigma (px at output size) of Gaussian blur (focus).
    noise_p, noise_std : float
        Probability and maximum std (grey levels) of Gaussian sensor noise.
    jpeg_p : float, jpeg_quality : (int, int)
        Probability and quality range of JPEG compression.

    Examples
    --------
    >>> aug = Augmenter.with_strength(32)
    >>> aug(np.full((50, 50, 3), 200, np.uint8), np.random.default_rng(0)).shape
    (32, 32, 3)
    """

    size: int
    scale: tuple[float, float] = (0.8, 1.25)
    crop: float = 1.0
    rotate: bool = True
    shift: float = 0.08
    background_p: float = 0.2
    hed_sigma: float = 0.08
    hed_bias: float = _HED_BIAS
    hue: float = 0.04
    saturation: float = 0.35
    brightness: float = 0.2
    contrast: float = 0.25
    gamma: float = 0.3
    gain: float = 0.08
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
            hed_bias=_HED_BIAS * colour,
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
            x = colour_jitter(
                x,
                rng,
                self.hue,
                self.saturation,
                self.brightness,
                self.contrast,
                self.gamma,
                self.gain,
            )
        if self.fade > 0 and rng.random() < self.fade_p:
            x = scale_density(x, 1.0 - rng.uniform(0, self.fade))
        if rng.random() < self.gray_p:
            x = grey(x)
        if rng.random() < self.blur_p:
            x = blur(x, rng.uniform(0.3, self.blur_sigma))
        if rng.random() < self.noise_p:
            x = noise(x, rng, rng.uniform(1, self.noise_std))
        if rng.random() < self.jpeg_p:
            x = jpeg(x, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        return x


@dataclass(frozen=True)
class Resize:
    """The evaluation transform: the central crop resized to the model's input.

    Examples
    --------
    >>> Resize(24)(np.zeros((40, 40, 3), np.uint8)).shape
    (24, 24, 3)
    """

    size: int
    crop: float = 1.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return resize(image, self.size, self.crop)
