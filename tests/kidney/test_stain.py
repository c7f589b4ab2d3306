"""Stain recognition (H&E, PAS, other) from the colour of tissue pixels."""

import numpy as np
import pytest
from PIL import Image

from shindan.kidney.stain import CALIBRATION_SETS, classify_stain, stain_features


def test_too_little_tissue_is_no_call():
    glass = np.full((64, 64, 3), 245, np.uint8)
    call = classify_stain(glass)
    assert call.stain == "other" and call.tissue_pixels == 0


def test_features_ignore_black_and_glass():
    img = np.full((60, 60, 3), 245, np.uint8)
    img[:30] = (200, 110, 170)
    padded = img.copy()
    padded[:, 50:] = 0  # blacked-out area: not tissue
    a, n_a = stain_features(img)
    b, n_b = stain_features(padded)
    assert n_a == 1800 and n_b == 1500
    np.testing.assert_allclose(a, b)


# a few images of each set: the calibration's accuracy on whole images, measured on 120 per
# set, is in shindan.kidney.stain and docs/design.md
@pytest.mark.parametrize("name", list(CALIBRATION_SETS))
def test_stain_of_shared_sets(shared_data, name):
    patterns, stain = CALIBRATION_SETS[name]
    files = sorted(p for pat in patterns for p in shared_data.glob(pat) if "_mask" not in p.name)
    files = files[:: max(1, len(files) // 6)][:6]
    calls = [classify_stain(np.asarray(Image.open(f).convert("RGB"))).stain for f in files]
    hits = sum(c == stain for c in calls)
    assert hits >= len(calls) - 1, calls


def test_he_kidney_tile_is_not_called_pas(shared_data):
    # HE_001 (pale H&E) lies between the clusters: it must not pass as PAS, for which the
    # glomerulosclerosis model would then run unmarked
    img = np.asarray(Image.open(shared_data / "kidney/tiles-aapi-he/HE_001/image.jpg"))
    assert classify_stain(img).stain != "PAS"
    for tile in ("11000_16000_0", "13600_18000_0"):
        img = np.asarray(Image.open(shared_data / f"kidney/tiles-aapi-he/{tile}/image.jpg"))
        assert classify_stain(img).stain == "H&E"
