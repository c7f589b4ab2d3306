"""Tile augmentation for histology training: geometry, strong stain jitter, scale jitter.

Stain jitter works in the Haematoxylin-Eosin-DAB optical-density space (Tellez et al. 2018)
plus HSV-like hue/saturation/brightness shifts wide enough to move H&E towards PAS colours
(magenta/purple) and back, so structures learned mostly on H&E transfer to PAS.
"""

from __future__ import annotations

import numpy as np

# Ruifrok & Johnston stain vectors (as in skimage.color.rgb2hed), rows = H, E, DAB
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def flip_rotate(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random one of the 8 dihedral transforms, applied to image and label alike."""
    k = int(rng.integers(4))
    image, label = np.rot90(image, k), np.rot90(label, k)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def hed_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    sigma: float = 0.25,
    bias: float = 0.04,
    density: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Scale and shift each stain's optical density by a random factor (1 ± sigma) and bias.

    ``density`` is the range of one extra factor shared by all stains (drawn log-uniformly):
    below 1 fades the whole section towards white (a pale, thin or over-differentiated
    stain), above 1 darkens it, while glass stays white.
    """
    od = -np.log(np.maximum(image.astype(np.float32), 1.0) / 255.0)
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB.astype(np.float32)
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32)
    if density != (1.0, 1.0):
        alpha *= np.float32(np.exp(rng.uniform(np.log(density[0]), np.log(density[1]))))
    beta = rng.uniform(-bias, bias, 3).astype(np.float32)
    hed = hed * alpha + beta
    od2 = np.maximum(hed @ _RGB_FROM_HED.astype(np.float32), 0)
    out = 255.0 * np.exp(-od2)
    return np.clip(out, 0, 255).reshape(image.shape).astype(np.uint8)


def colour_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    hue: float = 0.06,
    saturation: float = 0.3,
    brightness: float = 0.15,
    contrast: float = 0.2,
) -> np.ndarray:
    """Random hue rotation (fraction of the colour circle), saturation, brightness, contrast."""
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 256) % 256
    hsv[..., 1] *= rng.uniform(1 - saturation, 1 + saturation)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)
    out = out.astype(np.float32)
    m = out.mean()
    out = (out - m) * rng.uniform(1 - contrast, 1 + contrast) + m
    out *= rng.uniform(1 - brightness, 1 + brightness)
    return np.clip(out, 0, 255).astype(np.uint8)


def he_to_pas_like(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Push an H&E tile towards PAS: stronger, bluer haematoxylin and magenta-purple cytoplasm."""
    od = -np.log(np.maximum(image.astype(np.float32), 1.0) / 255.0)
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB.astype(np.float32)
    # PAS stains basement membranes/cytoplasm magenta (a redder "eosin") and is usually darker
    pas_vec = np.array([0.25, 0.85, 0.45], np.float32)
    pas_vec += rng.normal(0, 0.05, 3).astype(np.float32)
    pas_vec /= np.linalg.norm(pas_vec)
    basis = _RGB_FROM_HED.astype(np.float32).copy()
    basis[1] = pas_vec
    hed[:, 0] *= rng.uniform(1.0, 1.5)
    hed[:, 1] *= rng.uniform(1.0, 1.8)
    od2 = np.maximum(hed @ basis, 0)
    out = 255.0 * np.exp(-od2)
    return np.clip(out, 0, 255).reshape(image.shape).astype(np.uint8)


def stain_augment(
    image: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    pas_prob: float = 0.0,
    density: tuple[float, float] = (1.0, 1.0),
    grey_prob: float = 0.0,
) -> np.ndarray:
    """HED jitter, maybe an H&E→PAS-like shift, then colour jitter (``strength`` scales all).

    ``density``: range of a global stain-intensity factor (see :func:`hed_jitter`);
    ``grey_prob``: chance of a near-grey tile, so that shape, not hue, must carry the class.
    """
    out = image
    if pas_prob and rng.random() < pas_prob:
        out = he_to_pas_like(out, rng)
    out = hed_jitter(out, rng, sigma=0.25 * strength, bias=0.04 * strength, density=density)
    if grey_prob and rng.random() < grey_prob:
        grey = out.astype(np.float32).mean(2, keepdims=True)
        keep = rng.uniform(0.0, 0.4)  # a trace of colour left
        out = np.clip(grey + keep * (out - grey), 0, 255).astype(np.uint8)
    if rng.random() < 0.2:  # occasional blur: focus varies between scanners
        import cv2

        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.0))
    return colour_jitter(
        out,
        rng,
        hue=0.05 * strength,
        saturation=0.3 * strength,
        brightness=0.15 * strength,
        contrast=0.2 * strength,
    )
