import numpy as np
import pytest
from PIL import Image

from shindan.errors import InputError
from shindan.io import open_slide
from shindan.tiling import detect_tissue, read_at_mpp

GOOD = {
    "CMU-1-Small-Region.svs": ("aperio", 2220, 2967, 0.499, ["label", "macro", "thumbnail"]),
    "test3-DAPI-2-387.ndpi": ("hamamatsu", 3968, 4864, 0.2282, ["macro"]),
    "test3-TRITC_2_560.ndpi": ("hamamatsu", 3968, 4864, 0.2282, ["macro"]),
    "4D-series.ome.tiff": ("ome-tiff", 439, 167, None, []),
    "openslide-fixtures/boxes.tiff": ("generic-tiff", 300, 250, None, []),
    "openslide-fixtures/boxes.png": ("png", 300, 250, None, []),
    "openslide-fixtures/boxes-no-icc.png": ("png", 300, 250, None, []),
    "openslide-fixtures/boxes_0.dcm": ("dicom", 16, 16, 0.499, ["thumbnail"]),
    "openslide-fixtures/boxes_1.dcm": ("dicom", 16, 16, 0.499, ["thumbnail"]),
    "openslide-fixtures/small.svs": ("aperio", 16, 16, 0.499, ["thumbnail"]),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_shared_slide_opens(shared_data, name):
    fmt, w, h, mpp, assoc = GOOD[name]
    with open_slide(shared_data / "slides" / name) as s:
        info = s.info()
        assert (info["format"], info["width"], info["height"]) == (fmt, w, h)
        assert info["levels"][0] == [w, h]
        assert info["associated"] == assoc
        if mpp is None:
            assert info["mpp"] is None
        else:
            assert info["mpp"] == pytest.approx(mpp, rel=1e-3)
        region = s.read_region((0, 0), s.level_count - 1, (8, 8))
        assert region.shape == (8, 8, 3) and region.dtype == np.uint8
        for a in assoc:
            assert s.associated_image(a).ndim == 3


@pytest.mark.parametrize("name", ["unreadable.svs", "unopenable.tiff"])
def test_broken_slides_give_one_line_error(shared_data, name):
    with pytest.raises(InputError) as exc:
        open_slide(shared_data / "slides" / "openslide-fixtures" / name)
    assert name in str(exc.value) and "\n" not in str(exc.value)


def test_missing_and_wrong_kind(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_slide(tmp_path / "nope.svs")
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(InputError, match="unsupported"):
        open_slide(bad)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image"):
        open_slide(fake)
    with pytest.raises(InputError):
        open_slide(tmp_path)


def test_given_mpp_and_padding(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = 200
    Image.fromarray(img).save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png", mpp=0.5) as s:
        assert (s.mpp, s.mpp_source) == (0.5, "given")
        r = s.read_region((50, 30), 0, (20, 20))
        assert r[:10, :10, 0].min() == 200 and r[15, 15].tolist() == [255, 255, 255]
    with pytest.raises(InputError, match="--mpp"):
        open_slide(tmp_path / "a.png", mpp=-1)


def test_a_files_own_mpp_wins_over_the_given_one(tmp_path):
    # 50,800 dpi = 0.5 µm/px written by the scanner's export; --mpp is for files without one
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "c.png", dpi=(50800, 50800))
    with open_slide(tmp_path / "c.png", mpp=2.0) as s:
        assert (round(s.mpp, 3), s.mpp_source) == (0.5, "file")


def test_a_slides_own_mpp_wins_over_the_given_one(shared_data):
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs", mpp=0.95) as s:
        assert (s.mpp, s.mpp_source) == (0.499, "file")


def test_read_at_mpp_resamples_pyramid(shared_data):
    with open_slide(shared_data / "slides" / "test3-TRITC_2_560.ndpi") as s:
        out = read_at_mpp(s, (10, 20), (64, 48), s.mpp * 4)
        assert out.shape == (48, 64, 3)
        # Same field read from level 0 and shrunk by hand agrees with the pyramid read.
        direct = s.read_region((40, 80), 0, (256, 192))
        import cv2

        ref = cv2.resize(direct, (64, 48), interpolation=cv2.INTER_AREA)
        assert np.abs(out.astype(int) - ref.astype(int)).mean() < 6


def test_read_at_mpp_without_mpp_asks_for_it(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.png")
    with open_slide(tmp_path / "b.png") as s, pytest.raises(InputError, match="--mpp"):
        read_at_mpp(s, (0, 0), (4, 4), 1.0)


def test_tissue_detection_on_real_slide(shared_data):
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as s:
        tm = detect_tissue(s)
    assert 0.2 < tm.mask.mean() < 0.9


@pytest.mark.parametrize(
    "stain",
    [
        [(190, 120, 170)],  # PAS: magenta
        [(225, 150, 190), (120, 70, 160)],  # H&E: eosin pink, haematoxylin purple
        [(200, 60, 70), (110, 150, 205)],  # Masson trichrome: red muscle, blue collagen
    ],
)
def test_tissue_ignores_glass_dust_and_pen(stain):
    from shindan.tiling.tissue import tissue_mask_from_rgb

    rng = np.random.default_rng(0)
    img = np.full((200, 300, 3), 242, np.uint8) + rng.integers(0, 6, (200, 300, 3)).astype(np.uint8)
    for i, rgb in enumerate(stain):  # tissue in stripes of each stain colour
        img[50:150, 40 + 50 * i // len(stain) * 2 : 140] = rgb
    img[60:140, 160:200] = (40, 70, 170)  # blue marker pen
    img[150:190, 160:200] = (40, 130, 60)  # green marker pen
    img[20:22, 250:252] = (70, 70, 70)  # dust speck
    mask = tissue_mask_from_rgb(img, mpp=8.0)
    assert mask[50:150, 40:140].mean() > 0.95
    assert mask[60:190, 160:200].mean() < 0.05
    assert not mask[20:22, 250:252].any()
    assert mask.mean() < 0.2


def test_tissue_on_real_pas(shared_data):
    from PIL import Image as PILImage

    from shindan.tiling.tissue import tissue_mask_from_rgb

    path = sorted((shared_data / "kidney/glomeruli-hubmap-pas/train").glob("*.jpg"))[0]
    img = np.asarray(PILImage.open(path).convert("RGB").reduce(8))
    assert tissue_mask_from_rgb(img, mpp=4.0).mean() > 0.5
