"""De-identify plain images (JPEG, PNG, TIFF, BMP): metadata out, pixels untouched.

* JPEG: the marker segments are copied losslessly, without APPn (EXIF, XMP, IPTC/Photoshop,
  ICC, MPF, maker notes), COM comments, or anything after the end-of-image marker (appended
  secondary images); only JFIF (its density, thumbnail dropped) and Adobe APP14 (needed to
  decode colours right) stay. The compressed scan is not re-encoded.
* PNG: the chunks are copied byte for byte, keeping only image data and how to display it
  (IHDR, PLTE, IDAT, IEND, tRNS, gAMA, cHRM, sRGB, sBIT, bKGD, pHYs); text (tEXt, zTXt,
  iTXt), time, EXIF, ICC and private chunks go. Animated PNGs are held back.
* TIFF: as slides (:func:`shindan.deid.slide.rewrite_tiff`): tags on an allow-list only.
* BMP: decoded and written again (lossless), which leaves no room for metadata.

Dropping EXIF also drops its orientation flag: a photo stored sideways then shows as stored.
With ``mask=True`` burned-in text is painted over (:func:`~shindan.deid.burned_in.mask_burned_in`);
a masked image is written as PNG (lossless) since re-encoding a JPEG would change every pixel.
Every output is decoded again and compared with the input (outside the masked boxes).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from shindan.deid.burned_in import mask_burned_in
from shindan.deid.records import Exported, HeldBack, Identifiers
from shindan.deid.slide import _HoldBack, leftover_identifiers, rewrite_tiff
from shindan.errors import InputError

PNG_KEEP = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD",
     b"pHYs"}
)  # fmt: skip
ICC_PROFILE = 34675  # TIFF tag; slides keep theirs (stain colour), plain images do not
PNG_ANIMATION = frozenset({b"acTL", b"fcTL", b"fdAT"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# EXIF tags whose values identify a person, a place, a time or a device unit.
EXIF_IDENTIFYING = {
    270: "ImageDescription", 306: "DateTime", 315: "Artist", 33432: "Copyright",
    36867: "DateTimeOriginal", 36868: "DateTimeDigitized", 42032: "CameraOwnerName",
    42033: "BodySerialNumber", 42037: "LensSerialNumber", 37510: "UserComment",
    40091: "XPTitle", 40092: "XPComment", 40093: "XPAuthor", 40094: "XPKeywords",
    40095: "XPSubject", 42016: "ImageUniqueID",
}  # fmt: skip


def _kind(src: Path) -> str:
    with open(src, "rb") as fh:
        head = fh.read(8)
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head == PNG_SIGNATURE:
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:2] == b"BM":
        return "bmp"
    raise _HoldBack("not a JPEG, PNG, TIFF or BMP image")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        for codec in ("utf-16-le", "utf-8") if value[1:2] == b"\x00" else ("utf-8", "latin-1"):
            try:
                return value.decode(codec).strip("\x00 ")
            except UnicodeDecodeError:
                continue
        return ""
    return str(value).strip("\x00 ")


def _metadata_identifiers(src: Path) -> dict[str, str]:
    """Identifying values in the image's EXIF, comments and text chunks (for the record)."""
    found: dict[str, str] = {}
    try:
        with Image.open(src) as img:
            exif = img.getexif()
            merged = dict(exif)
            for ifd in (0x8769, 0x8825):  # EXIF and GPS sub-directories
                try:
                    merged.update(exif.get_ifd(ifd))
                except Exception:  # a malformed sub-IFD: its values are dropped anyway
                    pass
            for tag, name in EXIF_IDENTIFYING.items():
                value = _text(merged.get(tag, ""))
                if value.upper().startswith(("ASCII", "UNICODE")):
                    value = value[8:].strip("\x00 ")
                if value:
                    found[f"exif.{name}"] = value
            for key, value in (getattr(img, "text", None) or {}).items():  # PNG text chunks
                if isinstance(value, str) and value.strip():
                    found[f"text.{key}"] = value.strip()
            comment = img.info.get("comment")
            if comment:
                found["comment"] = _text(comment)
    except Exception:  # noqa: BLE001 - unreadable metadata is removed, not reported
        pass
    return found


def strip_jpeg(data: bytes) -> tuple[bytes, list[str]]:
    """A JPEG without APPn (but JFIF/Adobe), COM or trailing data; the scans byte for byte.

    Returns the new bytes and the names of what was removed.
    """
    if data[:2] != b"\xff\xd8":
        raise _HoldBack("not a JPEG (no start-of-image marker)")
    out, removed, i, n = bytearray(b"\xff\xd8"), [], 2, len(data)
    in_scan = False
    while i < n:
        if in_scan:
            # Entropy-coded data runs to the next marker that is not stuffing or a restart.
            j = i
            while True:
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    raise _HoldBack("truncated JPEG scan")
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    j += 1 if nxt == 0xFF else 2
                    continue
                break
            out += data[i:j]
            i, in_scan = j, False
            continue
        if data[i] != 0xFF:
            raise _HoldBack(f"JPEG marker expected at byte {i}")
        while i < n and data[i] == 0xFF:
            i += 1  # fill bytes
        if i >= n:
            raise _HoldBack("truncated JPEG")
        marker = data[i]
        i += 1
        if marker == 0xD9:  # end of image: whatever follows (MPF images, trailers) goes
            out += b"\xff\xd9"
            if i < n:
                removed.append(f"{n - i} bytes after the end of image")
            return bytes(out), removed
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += bytes((0xFF, marker))
            continue
        if i + 2 > n:
            raise _HoldBack("truncated JPEG segment")
        length = struct.unpack(">H", data[i : i + 2])[0]
        if length < 2 or i + length > n:
            raise _HoldBack("JPEG segment length beyond the end of the file")
        body = data[i + 2 : i + length]
        segment = bytes((0xFF, marker)) + data[i : i + length]
        i += length
        if marker == 0xE0 and body[:5] == b"JFIF\x00" and len(body) >= 14:
            # Version, units and density only: an embedded thumbnail is dropped.
            jfif = body[:12] + b"\x00\x00"
            out += b"\xff\xe0" + struct.pack(">H", len(jfif) + 2) + jfif
        elif marker == 0xEE and body[:5] == b"Adobe":
            out += segment
        elif 0xE0 <= marker <= 0xEF:
            name = body[:32].split(b"\x00")[0].decode("latin-1")
            removed.append(f"APP{marker - 0xE0} {name}".strip())
        elif marker == 0xFE:
            removed.append("comment")
        else:
            out += segment
            if marker == 0xDA:
                in_scan = True
    raise _HoldBack("JPEG without an end-of-image marker")


def strip_png(data: bytes) -> tuple[bytes, list[str]]:
    """A PNG with only the chunks needed to show the image, copied byte for byte."""
    if data[:8] != PNG_SIGNATURE:
        raise _HoldBack("not a PNG")
    out, removed, i = bytearray(PNG_SIGNATURE), [], 8
    while i + 12 <= len(data):
        length = struct.unpack(">I", data[i : i + 4])[0]
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > len(data):
            raise _HoldBack("truncated PNG chunk")
        if zlib.crc32(data[i + 4 : end - 4]) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise _HoldBack(f"PNG chunk {kind.decode('latin-1')!r} fails its CRC")
        if kind in PNG_ANIMATION:
            raise _HoldBack("animated PNG: its frames are not checked")
        if kind in PNG_KEEP:
            out += data[i:end]
        else:
            removed.append(kind.decode("latin-1"))
        i = end
        if kind == b"IEND":
            if i < len(data):
                removed.append(f"{len(data) - i} bytes after IEND")
            return bytes(out), removed
    raise _HoldBack("PNG without an IEND chunk")


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return np.asarray(img)


def _write_atomic(dst: Path, data: bytes) -> None:
    tmp = dst.with_name(f".part-{os.getpid()}-{dst.name}")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _save_png(dst: Path, pixels: np.ndarray, dpi: object) -> None:
    tmp = dst.with_name(f".part-{os.getpid()}-{dst.name}")
    try:
        img = Image.fromarray(pixels)
        with open(tmp, "xb") as fh:
            img.save(fh, format="PNG", **({"dpi": dpi} if dpi else {}))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def deidentify_image(
    src: Path,
    dst: Path,
    pseudo: object,
    case: str,
    identifiers: Identifiers,
    mask: bool,
) -> Exported | HeldBack:
    """Write a copy of a plain image without metadata; optionally mask burned-in text.

    Parameters
    ----------
    src : Path
        A JPEG, PNG, TIFF or BMP image (the content decides, not the suffix); never modified.
    dst : Path
        The new file (must not exist). A masked image is written as PNG: ``dst`` with the
        suffix ``.png`` (the returned ``path`` says which).
    pseudo : Pseudonymiser
        Unused (no dates are kept); accepted for a uniform interface.
    case : str
        The patient's pseudonym.
    identifiers : Identifiers
        What the export knows; identifying EXIF/comment/text values met are added, and none
        may remain in the written file.
    mask : bool
        Find and paint over burned-in text (raises ``OcrUnavailable`` without Tesseract).

    Returns
    -------
    Exported or HeldBack
        ``HeldBack`` (nothing written) for an unsupported or broken image, text that could not
        be masked with confidence, or identifiers still found after cleaning.

    Examples
    --------
    >>> r = deidentify_image(Path("photo.jpg"), Path("out/A.jpg"), None, "KYOTO-AB",
    ...                      Identifiers("p1"), mask=False)  # doctest: +SKIP
    >>> r.profile  # doctest: +SKIP
    'plain jpeg: metadata removed (APP1 Exif, ...); scan data copied unchanged'
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    try:
        return _deidentify(src, dst, case, identifiers, mask)
    except _HoldBack as exc:
        return HeldBack(src, str(exc))
    except OSError as exc:
        return HeldBack(src, f"cannot read or write ({exc.strerror or exc})")


def _deidentify(
    src: Path, dst: Path, case: str, identifiers: Identifiers, mask: bool
) -> Exported | HeldBack:
    kind = _kind(src)
    found = _metadata_identifiers(src)
    known = {**identifiers.values, **found, "patient_id": identifiers.patient_id}
    try:
        original = _decode(src)
    except Exception as exc:  # Pillow raises many kinds on broken files
        if kind != "tiff":
            raise _HoldBack(f"the image does not decode ({exc})") from exc
        original = None  # a TIFF Pillow cannot read (tiled, 16-bit RGB, ...) is checked below
    masked_regions = 0
    notes: list[str] = []
    if mask:
        if original is None:
            raise _HoldBack("cannot decode this TIFF to look for burned-in text")
        with Image.open(src) as img:
            dpi = img.info.get("dpi")
            if getattr(img, "n_frames", 1) > 1:
                raise _HoldBack("burned-in text masking of multi-page images is not supported")
        result = mask_burned_in(original)
        if not result.confident:
            raise _HoldBack(f"burned-in text not cleaned with confidence: {result.reason}")
        if result.regions:
            out = dst.with_suffix(".png")
            if out.exists():
                raise InputError(f"{out}: already exists (an export never overwrites a file)")
            _save_png(out, result.pixels, dpi)
            outside = np.ones(original.shape[:2], bool)
            for x, y, w, h in result.regions:
                outside[y : y + h, x : x + w] = False
            if not np.array_equal(_decode(out)[outside], original[outside]):
                out.unlink()
                raise _HoldBack("pixels outside the masked boxes changed when written")
            masked_regions = len(result.regions)
            notes.append(f"{masked_regions} burned-in text region(s) painted black; as PNG")
            return _finish(src, out, case, identifiers, known, kind, notes, masked_regions)
        notes.append("no burned-in text found (OCR)")
    if dst.exists():
        raise InputError(f"{dst}: already exists (an export never overwrites a file)")
    if kind == "tiff":
        plan, _ = rewrite_tiff(src, dst, known, check=False, drop=frozenset({ICC_PROFILE}))
        notes.append("TIFF tags on the allow-list only, no ICC; strips/tiles copied unchanged")
        known.update(plan.found)
    elif kind == "bmp":
        with Image.open(src) as img:
            img.load()
            tmp_img = img.copy()
        tmp = dst.with_name(f".part-{os.getpid()}-{dst.name}")
        try:
            with open(tmp, "xb") as fh:
                tmp_img.save(fh, format="BMP")
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        notes.append("BMP written again (lossless)")
    else:
        data = src.read_bytes()
        new, removed = strip_jpeg(data) if kind == "jpeg" else strip_png(data)
        _write_atomic(dst, new)
        what = ", ".join(removed) if removed else "none present"
        notes.append(f"metadata removed ({what}); compressed image data copied unchanged")
    if original is not None and not np.array_equal(_decode(dst), original):
        dst.unlink()
        raise _HoldBack("the cleaned image does not decode to the same pixels")
    return _finish(src, dst, case, identifiers, known, kind, notes, masked_regions)


def _finish(
    src: Path,
    out: Path,
    case: str,
    identifiers: Identifiers,
    known: dict[str, str],
    kind: str,
    notes: list[str],
    masked_regions: int,
) -> Exported | HeldBack:
    left = leftover_identifiers(out, known)
    if left:
        out.unlink()
        return HeldBack(src, f"identifiers still found after cleaning: {', '.join(left)}")
    values = {k: v for k, v in known.items() if k != "patient_id"}
    return Exported(
        path=out,
        case=case,
        study="",
        modality="OT",
        profile=f"plain {kind}: " + "; ".join(notes),
        identifiers=Identifiers(identifiers.patient_id, values),
        masked_regions=masked_regions,
    )
