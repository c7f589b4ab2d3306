"""CT windows: presets, float and uint8 output, explicit width/level."""

import numpy as np
import pytest

from shindan.ct.window import WINDOWS, apply_window, get_window
from shindan.errors import InputError


def test_abdomen_window_float_and_uint8():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    before = hu.copy()
    f = apply_window(hu, "abdomen")
    np.testing.assert_allclose(f, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert f.dtype == np.float32
    u = apply_window(hu, "soft tissue", np.uint8)
    assert u.dtype == np.uint8 and u.tolist() == [0, 0, 128, 255, 255]
    np.testing.assert_array_equal(hu, before)  # input untouched


def test_presets_and_explicit_windows():
    assert (WINDOWS["abdomen"].width, WINDOWS["abdomen"].level) == (400, 40)
    assert get_window("lung").low == -1350 and get_window("bone").high == 1500
    assert get_window("Kidney") == get_window("renal")
    assert get_window("350,50") == get_window((350, 50))
    np.testing.assert_allclose(apply_window(np.array([0.0, 100.0]), (200, 0)), [0.5, 1.0])


@pytest.mark.parametrize("bad", ["brainish", "0,40", (-5, 10)])
def test_bad_window(bad):
    with pytest.raises(InputError):
        get_window(bad)
