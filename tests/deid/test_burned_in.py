"""Burned-in text: made-up images with English and Japanese text drawn with Pillow.

OCR runs for real (Debian tesseract with eng + jpn); the tests skip with the reason when it or
a Japanese font is missing. Whether text is gone is checked with an independent Tesseract call
(pytesseract directly), not with the module's own second pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import shindan.deid.burned_in as burned_in
from shindan.deid.burned_in import (
    OcrUnavailable,
    check_ocr,
    dicom_masker,
    load_region_rules,
    mask_burned_in,
    regions_for,
)
from shindan.errors import InputError

LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@pytest.fixture(scope="module")
def ocr() -> None:
    try:
        check_ocr(("eng", "jpn"))
    except OcrUnavailable as exc:
        pytest.skip(str(exc))


def _font(lang: str, size: int) -> ImageFont.FreeTypeFont:
    if lang == "ja":
        found = ""
        if shutil.which("fc-list"):
            out = subprocess.run(
                ["fc-list", ":lang=ja", "-f", "%{file}\n"], capture_output=True, text=True
            ).stdout.split()
            found = next((f for f in sorted(out) if "gothic" in f.lower()), out[0] if out else "")
        if not found:
            pytest.skip("no Japanese font installed (apt-get install fonts-ipafont-gothic)")
        return ImageFont.truetype(found, size)
    try:
        return ImageFont.truetype(LATIN_FONT, size)
    except OSError:
        pytest.skip(f"font {LATIN_FONT} not installed (fonts-dejavu-core)")


def _ultrasound(shape=(480, 640), seed=0) -> np.ndarray:
    """A speckled sector on black, like an ultrasound frame (uint8 greyscale)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cx = shape[1] / 2
    cone = (((xx - cx) ** 2 + (yy + 50) ** 2) < (0.95 * shape[0]) ** 2) & (
        np.abs(xx - cx) < (yy + 50) * 0.8
    )
    img = np.zeros(shape, np.float64)
    img[cone & (yy > 40)] = rng.gamma(2, 30, int((cone & (yy > 40)).sum()))
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(img: np.ndarray, texts, fill=255) -> np.ndarray:
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    for xy, text, font in texts:
        d.text(xy, text, fill=fill, font=font)
    return np.asarray(pil).copy()


def _read(img: np.ndarray, lang: str) -> str:
    import pytesseract

    grey = img if img.ndim == 2 else np.asarray(Image.fromarray(img).convert("L"))
    both = [grey, 255 - grey]
    return " ".join(
        pytesseract.image_to_string(Image.fromarray(g), lang=lang, config="--psm 11") for g in both
    )


def _outside(shape, regions) -> np.ndarray:
    keep = np.ones(shape[:2], bool)
    for x, y, w, h in regions:
        keep[y : y + h, x : x + w] = False
    return keep


def test_english_text_is_found_masked_and_gone(ocr):
    font = _font("en", 18)
    img = _draw(
        _ultrasound(),
        [((10, 8), "SATO HANAKO  ID 12345678", font), ((420, 8), "2024/05/01 10:22", font)],
    )
    before = img.copy()
    assert "12345678" in _read(img, "eng")  # the test image really carries readable text
    result = mask_burned_in(img)
    assert np.array_equal(img, before)  # input untouched
    assert result.pixels is not img and result.pixels.shape == img.shape
    assert result.confident, result.reason
    assert len(result.regions) >= 4
    keep = _outside(img.shape, result.regions)
    assert np.array_equal(result.pixels[keep], img[keep])  # nothing else changed
    for x, y, w, h in result.regions:
        assert (result.pixels[y : y + h, x : x + w] == 0).all()
    text = _read(result.pixels, "eng")
    for word in ("SATO", "HANAKO", "12345678", "2024/05/01", "10:22"):
        assert word not in text


def test_japanese_text_is_found_masked_and_gone(ocr):
    ja = _font("ja", 22)
    rgb = np.repeat(_ultrasound(seed=1)[..., None], 3, axis=2)
    img = _draw(
        rgb,
        [((12, 440), "山田 太郎", ja), ((200, 440), "京都大学病院", ja), ((12, 8), "田中", ja)],
        fill=(255, 255, 0),
    )
    read = _read(img, "jpn")
    assert "病院" in read.replace(" ", "")  # readable before
    result = mask_burned_in(img)
    assert result.confident, result.reason
    keep = _outside(img.shape, result.regions)
    assert np.array_equal(result.pixels[keep], img[keep])
    after = _read(result.pixels, "jpn").replace(" ", "")
    for word in ("山田", "太郎", "京都", "病院", "田中"):
        assert word not in after


def test_image_without_text_is_left_alone(ocr):
    yy, xx = np.mgrid[:300, :400]
    base = (100 + 80 * np.sin(xx / 30) * np.cos(yy / 40)).astype(np.uint8)
    rgb = np.stack([base, 255 - base, base // 2], axis=-1)
    result = mask_burned_in(rgb)
    assert result.regions == ()
    assert result.confident, result.reason
    assert np.array_equal(result.pixels, rgb)


def test_multiframe_uint16_dark_text_on_light(ocr):
    """Dark-on-light text (the other polarity) in one frame of a 16-bit clip."""
    font = _font("en", 20)
    light = np.full((2, 200, 360), 3000, np.uint16)
    light[:, 120:, :] += (np.arange(360, dtype=np.uint16) * 3)[None, None, :]  # a gradient
    frame1 = _draw((light[1] // 16).astype(np.uint8), [((10, 20), "KIMURA 55501234", font)], 0)
    light[1] = np.where(frame1 < 100, 0, light[1])  # the text, black, in frame 1 only
    result = mask_burned_in(light)
    assert result.pixels.dtype == np.uint16 and result.pixels.shape == light.shape
    assert result.confident, result.reason
    assert result.regions
    assert np.array_equal(result.pixels[0], light[0])  # frame without text untouched
    assert all(y < 60 for _, y, _, _ in result.regions)  # only the text line was masked
    text = _read((result.pixels[1] // 16).astype(np.uint8), "eng")
    assert "KIMURA" not in text and "55501234" not in text


def test_rotated_text_is_not_confident(ocr):
    """Text running sideways is not read upright; the check turned 90° finds it: held back."""
    font = _font("en", 26)
    canvas = Image.new("L", (420, 90), 0)
    ImageDraw.Draw(canvas).text((10, 20), "WATANABE 20240501", fill=255, font=font)
    img = np.zeros((460, 300), np.uint8)
    img[20:440, 100:190] = np.asarray(canvas.rotate(90, expand=True))
    result = mask_burned_in(img, rotations=(0, 90, 270))
    assert not result.confident
    assert "turned" in result.reason


def test_configured_regions_json_toml_and_dicom(tmp_path):
    rules_json = tmp_path / "regions.json"
    rules_json.write_text(
        json.dumps(
            {
                "devices": [
                    {"manufacturer": "ACME Medical", "model": "Sono 5", "regions": [[0, 0, 64, 8]]},
                    {"manufacturer": "ACME Medical", "size": [64, 48], "regions": [[0, 40, 64, 8]]},
                ]
            }
        )
    )
    rules_toml = tmp_path / "regions.toml"
    rules_toml.write_text(
        '[[devices]]\nmanufacturer = "Other"\nregions = [[1, 2, 3, 4]]\n', encoding="utf-8"
    )
    rules = load_region_rules(rules_json)
    both = ((0, 0, 64, 8), (0, 40, 64, 8))
    assert regions_for(rules, "acme medical ", "SONO 5", (64, 48)) == both
    assert regions_for(rules, "ACME Medical", "Sono 6", (100, 100)) == ()
    assert load_region_rules(rules_toml)[0].regions == ((1, 2, 3, 4),)

    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Manufacturer, ds.ManufacturerModelName = "ACME Medical", "Sono 5"
    ds.Rows, ds.Columns, ds.PhotometricInterpretation = 48, 64, "MONOCHROME1"
    pixels = np.full((48, 64), 100, np.uint16)
    pixels[20, 20] = 900
    result = dicom_masker(rules, ocr=False)(pixels, ds)
    assert result.confident and len(result.regions) == 2
    assert (result.pixels[:12] == 900).all()  # MONOCHROME1: the maximum shows black
    assert (result.pixels[36:] == 900).all()
    assert np.array_equal(result.pixels[12:36], pixels[12:36])
    assert (pixels[:12] == 100).all()  # the input is not modified


def test_no_ocr_no_regions_is_not_confident():
    result = mask_burned_in(np.zeros((10, 10), np.uint8), ocr=False)
    assert not result.confident and result.regions == ()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a JSON/TOML"),
        ('[{"manufacturer": "A", "regions": [[0, 0, 5]]}]', "device 1"),
        ('[{"regions": [[0, 0, 5, 5]]}]', "device 1"),
        ('{"x": 1}', "expected a list"),
    ],
)
def test_bad_rules_file_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        load_region_rules(path)
    assert "\n" not in str(err.value)


def test_missing_tesseract_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(burned_in.shutil, "which", lambda name: None)
    burned_in._installed_languages.cache_clear()
    try:
        with pytest.raises(OcrUnavailable, match="tesseract is not installed") as err:
            mask_burned_in(np.zeros((8, 8), np.uint8))
        assert "\n" not in str(err.value)
    finally:
        burned_in._installed_languages.cache_clear()


def test_speckle_without_text_is_barely_touched(ocr):
    """OCR 'reads' words in speckle; only a small part of the image may be painted for it."""
    from scipy import ndimage as ndi

    img = _ultrasound(seed=3).astype(np.float64)
    cone = ndi.gaussian_filter((img > 0).astype(float), 3) > 0.5
    speckle = np.clip(np.where(cone, ndi.gaussian_filter(img, 1.5) * 1.8, 0), 0, 255)
    speckle = speckle.astype(np.uint8)
    result = mask_burned_in(speckle)
    assert result.confident, result.reason
    painted = (result.pixels != speckle).mean()
    assert painted < 0.03, f"{painted:.1%} of a text-free image painted"


def test_every_glyph_of_a_masked_line_is_covered(ocr):
    """A screenshot line '氏名: 山田 太郎': OCR reads 山 and 太郎 but may miss 田 between them;
    the gap between painted words of one line is painted too, so no glyph stays readable."""
    out = subprocess.run(
        ["fc-list", ":lang=ja", "-f", "%{file}\n"], capture_output=True, text=True
    ).stdout.split()
    mincho = sorted(f for f in out if "mincho" in f.lower())
    if not mincho:
        pytest.skip("no Japanese Mincho font installed (apt-get install fonts-ipafont-mincho)")
    ja = ImageFont.truetype(mincho[0], 28)  # a serif face: OCR misses the lone 田 in it
    pil = Image.new("L", (640, 240), 255)
    d = ImageDraw.Draw(pil)
    d.text((20, 20), "氏名: 山田 太郎", fill=0, font=ja)
    d.text((20, 80), "ID: 12345678  1960/01/02", fill=0, font=ja)
    img = np.asarray(pil).copy()
    line = np.zeros(img.shape, bool)
    for xy, text in (((20, 20), "氏名: 山田 太郎"), ((20, 80), "ID: 12345678  1960/01/02")):
        x0, y0, x1, y1 = d.textbbox(xy, text, font=ja)
        line[y0:y1, x0:x1] = True
    result = mask_burned_in(img)
    assert result.confident, result.reason
    left = line & _outside(img.shape, result.regions) & (result.pixels < 128)
    assert not left.any(), f"{left.sum()} glyph pixels left unpainted"
