"""Synthetic domain shifts: shapes, every shift changes the image, unknown names refused."""

import numpy as np
import pytest

from shindan.classify.shifts import SHIFTS, get_shift
from shindan.errors import InputError
from tests.classify.synth import draw


@pytest.fixture()
def image():
    return draw("disc", np.random.default_rng(1), side=60)[0]


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shifts(image, name):
    out = get_shift(name)(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_unknown_shift():
    with pytest.raises(InputError, match="unknown shift"):
        get_shift("nope")
