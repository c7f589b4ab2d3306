"""Plain images: EXIF, XMP, IPTC, ICC, comments and PNG text out; pixels identical.

Made-up images carry known identifiers in every metadata place Pillow and tifffile can
write; the written file's bytes are searched for them and its decoded pixels compared.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from shindan.deid.burned_in import OcrUnavailable, check_ocr
from shindan.deid.plain import deidentify_image, strip_jpeg
from shindan.deid.records import Exported, HeldBack, Identifiers
from shindan.errors import InputError

SECRETS = [b"Hanako", b"Suzuki", b"99887766", b"2023:04:05", b"SN-77AB12", b"Kyoto",
           "京都".encode(), b"xmpmeta", b"ICCSECRET"]  # fmt: skip


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[315] = "Hanako Suzuki"
    exif[306] = "2023:04:05 06:07:08"
    exif[270] = "Patient 99887766"
    exif[274] = 6  # orientation: dropped with the rest
    sub = exif.get_ifd(0x8769)
    sub[36867] = "2023:04:05 06:07:08"
    sub[42033] = "SN-77AB12"
    return exif


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>Hanako Suzuki</dc:creator></x:xmpmeta>'


def _image(seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))


def _make(tmp_path: Path, kind: str) -> Path:
    img = _image()
    path = tmp_path / f"in.{kind}"
    icc = b"ICCSECRET" * 20
    if kind in ("jpg", "progressive.jpg"):
        img.save(path, exif=_exif(), comment=b"Kyoto Hospital 99887766", xmp=XMP, quality=90,
                 icc_profile=icc, progressive=kind.startswith("progressive"))  # fmt: skip
        # An IPTC (Photoshop APP13) segment and a trailing second image, as phones add.
        data = path.read_bytes()
        app13 = b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00\x00\x00\x00\x0cHanako Suzuk"
        data = data[:2] + b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13 + data[2:]
        path.write_bytes(data + b"\xff\xd8 trailing MPF image of Hanako \xff\xd9")
    elif kind == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Author", "Hanako Suzuki")
        info.add_itxt("Comment", "京都大学病院 99887766")
        info.add(b"tIME", b"\x07\xe7\x04\x05\x06\x07\x08")
        img.save(path, pnginfo=info, exif=_exif(), dpi=(254, 254), icc_profile=icc)
    elif kind == "tif":
        tifffile.imwrite(path, np.asarray(img), description="Patient 99887766",
                         datetime="2023:04:05 06:07:08", resolution=(100, 100),
                         extratags=[(315, "s", 0, "Hanako Suzuki", True),
                                    (700, "B", 0, XMP, True),
                                    (34675, "B", 0, icc, True)])  # fmt: skip
    elif kind == "bmp":
        img.save(path)
    return path


@pytest.mark.parametrize("kind", ["jpg", "progressive.jpg", "png", "tif", "bmp"])
def test_metadata_removed_pixels_identical(tmp_path, kind):
    src = _make(tmp_path, kind)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    original = np.asarray(Image.open(src))
    raw = src.read_bytes()
    assert kind == "bmp" or any(s in raw for s in SECRETS)  # the input does carry them
    dst = tmp_path / f"out.{kind.split('.')[-1]}"
    result = deidentify_image(src, dst, None, "KYOTO-X", Identifiers("99887766"), mask=False)
    assert isinstance(result, Exported), getattr(result, "reason", "")
    assert result.path == dst and result.case == "KYOTO-X"
    data = dst.read_bytes()
    assert [s for s in SECRETS if s in data] == []
    assert np.array_equal(np.asarray(Image.open(dst)), original)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before  # input untouched
    with Image.open(dst) as out:
        exif = out.getexif()  # for a TIFF: its own tags
        assert not {270, 306, 315, 700, 34665, 34675} & set(exif) and not exif.get_ifd(0x8769)
        assert "comment" not in out.info and "icc_profile" not in out.info
    if kind != "bmp":
        assert "Hanako Suzuki" in result.identifiers.values.values()


def test_jpeg_scan_bytes_are_not_reencoded(tmp_path):
    src = _make(tmp_path, "jpg")
    data = src.read_bytes()
    new, removed = strip_jpeg(data)
    sos_old = data.index(b"\xff\xda")
    sos_new = new.index(b"\xff\xda")
    end_old = data.index(b"\xff\xd9", sos_old)
    assert new[sos_new:] == data[sos_old : end_old + 2]  # the scan, byte for byte
    assert any("APP1" in r for r in removed) and any("APP13" in r for r in removed)
    assert "comment" in removed and any("after the end of image" in r for r in removed)


def test_png_chunks_copied_byte_for_byte(tmp_path):
    src = _make(tmp_path, "png")
    dst = tmp_path / "out.png"
    assert isinstance(deidentify_image(src, dst, None, "C", Identifiers("p"), False), Exported)

    def chunks(data: bytes) -> list[bytes]:
        out, i = [], 8
        while i < len(data):
            n = struct.unpack(">I", data[i : i + 4])[0]
            out.append(data[i : i + 12 + n])
            i += 12 + n
        return out

    kept = chunks(dst.read_bytes())
    assert [c[4:8] for c in kept] == [b"IHDR", b"pHYs", b"IDAT", b"IEND"]
    assert set(kept) <= set(chunks(src.read_bytes()))


def test_animated_broken_and_unsupported_images_are_held_back(tmp_path):
    frames = [_image(i) for i in range(2)]
    apng = tmp_path / "anim.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:])
    cut = tmp_path / "cut.jpg"
    _make(tmp_path, "jpg")
    cut.write_bytes((tmp_path / "in.jpg").read_bytes()[:3000])
    gif = tmp_path / "x.gif"
    frames[0].save(gif)
    bad = tmp_path / "bad.png"
    data = bytearray((tmp_path / "anim.png").read_bytes())
    data[40] ^= 0xFF  # breaks a CRC
    bad.write_bytes(bytes(data))
    for src, why in [(apng, "animated"), (cut, "truncated"), (gif, "not a JPEG"), (bad, "")]:
        dst = tmp_path / f"out-{src.name}"
        result = deidentify_image(src, dst, None, "C", Identifiers("p"), mask=False)
        assert isinstance(result, HeldBack), src.name
        assert why in result.reason and "\n" not in result.reason
        assert not dst.exists()
    with pytest.raises(InputError, match="already exists"):
        deidentify_image(apng, apng, None, "C", Identifiers("p"), mask=False)


def test_png_crc_is_checked(tmp_path):
    src = _make(tmp_path, "png")
    data = bytearray(src.read_bytes())
    i = data.index(b"IDAT")
    data[i + 10] ^= 0x01
    src.write_bytes(bytes(data))
    result = deidentify_image(src, tmp_path / "o.png", None, "C", Identifiers("p"), mask=False)
    assert isinstance(result, HeldBack)
    assert zlib.crc32(b"") == 0  # (zlib is the checker the module uses too)


@pytest.fixture(scope="module")
def ocr() -> None:
    try:
        check_ocr(("eng", "jpn"))
    except OcrUnavailable as exc:
        pytest.skip(str(exc))


def test_masking_paints_text_and_writes_png(tmp_path, ocr):
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 20)
    except OSError:
        pytest.skip("DejaVuSans not installed")
    img = Image.new("RGB", (480, 320), (20, 20, 20))
    ImageDraw.Draw(img).text((12, 10), "SUZUKI HANAKO 99887766", fill=(255, 255, 255), font=font)
    ImageDraw.Draw(img).ellipse((150, 100, 330, 280), fill=(180, 60, 90))
    src = tmp_path / "in.jpg"
    img.save(src, quality=95, exif=_exif())
    original = np.asarray(Image.open(src))
    result = deidentify_image(src, tmp_path / "out.jpg", None, "C", Identifiers("p"), mask=True)
    assert isinstance(result, Exported), getattr(result, "reason", "")
    assert result.path == tmp_path / "out.png" and result.masked_regions >= 1
    masked = np.asarray(Image.open(result.path))
    assert masked.shape == original.shape
    assert np.array_equal(masked[80:], original[80:])  # below the text line: unchanged
    glyphs = original[:40].max(axis=-1) > 128
    assert glyphs.sum() > 300 and (masked[:40][glyphs] == 0).all()  # every glyph pixel black
    assert not (tmp_path / "out.jpg").exists()


def test_masking_an_image_without_text_keeps_the_lossless_copy(tmp_path, ocr):
    yy, xx = np.mgrid[:200, :240]
    base = (120 + 60 * np.sin(xx / 25) * np.cos(yy / 35)).astype(np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(base).save(src)
    dst = tmp_path / "out.png"
    result = deidentify_image(src, dst, None, "C", Identifiers("p"), mask=True)
    assert isinstance(result, Exported) and result.masked_regions == 0
    assert dst.read_bytes() == src.read_bytes()  # nothing to strip, nothing painted


def test_jpeg_with_restart_markers_keeps_its_scan(tmp_path):
    src = tmp_path / "rst.jpg"
    _image().save(src, quality=90, restart_marker_rows=1, exif=_exif())
    data = src.read_bytes()
    assert b"\xff\xdd" in data and b"\xff\xd0" in data  # a restart interval and markers
    dst = tmp_path / "out.jpg"
    result = deidentify_image(src, dst, None, "C", Identifiers("p"), mask=False)
    assert isinstance(result, Exported)
    out = dst.read_bytes()
    assert out[out.index(b"\xff\xda") :] == data[data.index(b"\xff\xda") :]
    assert b"Hanako" not in out
