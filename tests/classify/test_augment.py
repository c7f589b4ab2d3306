"""Augmentation and domain shifts: shapes, determinism, inputs left alone."""

import numpy as np
import pytest

from shindan.classify.augment import Augmenter, affine, hed_jitter, resize
from shindan.classify.shifts import SHIFTS, get_shift
from shindan.errors import InputError
from tests.classify.synth import draw


@pytest.fixture()
def image():
    return draw("disc", np.random.default_rng(1), side=60)[0]


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


def test_affine_zoom_and_resize(image):
    assert resize(image, 30).shape == (30, 30, 3)
    zoomed = affine(image, 60, scale=2.0)
    assert zoomed.shape == (60, 60, 3)
    # Zooming 2x into the centred disc makes the dark object cover more of the image.
    assert (zoomed.mean(axis=2) < 150).mean() > (image.mean(axis=2) < 150).mean()


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shifts(image, name):
    out = get_shift(name)(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_unknown_shift():
    with pytest.raises(InputError, match="unknown shift"):
        get_shift("nope")
