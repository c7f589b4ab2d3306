"""Training augmentation (crop and tile pipelines): shapes, determinism, inputs left alone."""

import numpy as np
import pytest
from skimage.color import hed2rgb, rgb2hed

from shindan.engine.augment import (
    Augmenter,
    affine,
    colour_jitter,
    flip_rotate,
    grey,
    hed_jitter,
    resize,
    scale_density,
    stain_augment,
)
from tests.classify.synth import draw


@pytest.fixture()
def image():
    return draw("disc", np.random.default_rng(1), side=60)[0]


@pytest.fixture()
def tissue():
    img = np.full((32, 32, 3), (190, 110, 170), np.uint8)
    img[:8] = 255  # glass
    return img


def test_augmenter_shape_determinism_and_no_mutation(image):
    before = image.copy()
    aug = Augmenter.with_strength(40)
    a = aug(image, np.random.default_rng(5))
    b = aug(image, np.random.default_rng(5))
    c = aug(image, np.random.default_rng(6))
    assert a.shape == (40, 40, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(image, before)


def test_colour_strength_zero_keeps_colours(image):
    aug = Augmenter(
        size=60,
        scale=(1, 1),
        shift=0,
        background_p=0,
        hed_sigma=0,
        hed_bias=0,
        hue=0,
        saturation=0,
        brightness=0,
        contrast=0,
        gamma=0,
        gray_p=0,
        blur_p=0,
        noise_p=0,
        jpeg_p=0,
        rotate=False,
    )
    out = aug(image, np.random.default_rng(0))
    # Only 90° rotations/flips and tiny white-balance gain remain: same colour histogram mean.
    assert abs(out.mean() - image.mean()) < 0.08 * image.mean()


def test_hed_jitter_changes_colour_not_shape(image):
    out = hed_jitter(image, np.random.default_rng(0), sigma=0.3, bias=0.05)
    assert out.shape == image.shape and not np.array_equal(out, image)
    same = hed_jitter(image, np.random.default_rng(0), sigma=0.0, bias=0.0)
    assert np.abs(same.astype(int) - image).max() <= 1  # no jitter: the image comes back


def test_hed_jitter_matches_skimage_stain_space(image):
    """The bias is in OD units: skimage's rgb2hed units times ln(1e6)."""
    ours = hed_jitter(image, np.random.default_rng(3), sigma=0.1, bias=0.3).astype(float)
    rng = np.random.default_rng(3)  # the same draws: stain scales, then biases
    a, b = rng.uniform(0.9, 1.1, 3), rng.uniform(-0.3, 0.3, 3) / np.log(1e6)
    ref = np.clip(hed2rgb(rgb2hed(image) * a + b) * 255 + 0.5, 0, 255)
    assert np.abs(ours - ref).mean() < 2.0 < np.abs(ref - image).mean()


def test_density_fades_and_darkens_tissue_not_glass(tissue):
    faded = hed_jitter(tissue, np.random.default_rng(0), sigma=0.0, bias=0.0, density=(0.4, 0.41))
    assert faded[8:].mean() > tissue[8:].mean() + 20  # paler tissue
    assert faded[:8].min() >= 250  # glass stays white
    dark = hed_jitter(tissue, np.random.default_rng(0), sigma=0.0, bias=0.0, density=(1.5, 1.51))
    assert dark[8:].mean() < tissue[8:].mean() - 15
    assert np.array_equal(scale_density(tissue, 0.4)[:8], tissue[:8])
    assert scale_density(tissue, 0.4)[8:].mean() > tissue[8:].mean() + 20


def test_stain_augment_grey_and_no_mutation(tissue):
    before = tissue.copy()
    out = stain_augment(tissue, np.random.default_rng(1), grey_prob=1.0)
    t = out[8:].astype(float)
    assert np.ptp(t.mean((0, 1))) < 0.4 * np.ptp(tissue[8:].astype(float).mean((0, 1)))
    assert np.array_equal(tissue, before)
    pas = stain_augment(tissue, np.random.default_rng(1), pas_prob=1.0)
    assert pas.shape == tissue.shape and not np.array_equal(pas, tissue)


def test_grey_and_colour_jitter(tissue):
    g = grey(tissue)
    assert (g == g[..., :1]).all()
    half = grey(tissue, keep=0.5).astype(int)
    assert np.ptp(half[8:].mean((0, 1))) < np.ptp(tissue[8:].astype(int).mean((0, 1)))
    same = colour_jitter(tissue, np.random.default_rng(0), 0, 0, 0, 0)
    assert np.abs(same.astype(int) - tissue).max() <= 3  # HSV round trip quantises
    moved = colour_jitter(tissue, np.random.default_rng(0), gamma=0.3, gain=0.08)
    assert not np.array_equal(moved, tissue)


def test_flip_rotate_moves_image_and_label_together():
    img = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    lab = img[..., 0].copy()
    for seed in range(8):
        i, lab2 = flip_rotate(img, lab, np.random.default_rng(seed))
        assert np.array_equal(i[..., 0], lab2)


def test_affine_zoom_and_resize(image):
    assert resize(image, 30).shape == (30, 30, 3)
    zoomed = affine(image, 60, scale=2.0)
    assert zoomed.shape == (60, 60, 3)
    # Zooming 2x into the centred disc makes the dark object cover more of the image.
    assert (zoomed.mean(axis=2) < 150).mean() > (image.mean(axis=2) < 150).mean()
