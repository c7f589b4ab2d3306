"""Decompression-bomb guards of intake: an image is judged by the size its header declares,
before anything decodes it.

A file is refused when its declared pixels are over a limit (plain images: like Pillow's
``MAX_IMAGE_PIXELS``; slides and DICOM whole-slide images: their level 0), or when it declares
far more pixels than its bytes can hold. No real encoder comes near :data:`PIXELS_PER_BYTE`:
deflate (PNG, TIFF) tops out at 1032:1, 8256 pixels per byte for a 1-bit image, and JPEG at
about a hundred; a higher figure is a forged header or a sparse TIFF whose tiles are missing.
"""

from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath

# judged only above this many pixels: small images cannot hurt whatever their bytes
RATIO_FLOOR = 2**24
PIXELS_PER_BYTE = 20_000
PLAIN = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TIFF_LIKE = {".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif", ".qptiff"}
DICOM = {".dcm", ".dicom"}


def declared_pixels(path: Path, name: str) -> tuple[int, str] | None:
    """The pixels the header of ``path`` declares and the kind (``"image"`` or ``"slide"``),
    or None for a file that is no image shindan knows.

    ``name`` is the file's name in the export (its suffix says the format). Only headers
    are read. A header too broken to read is left to the check that follows.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "a"
    >>> Image.new("RGB", (30, 20)).save(path, "PNG")
    >>> declared_pixels(path, "case/image-0001.png")
    (600, 'image')
    """
    suffix = PurePosixPath(name.lower()).suffix
    try:
        if suffix in PLAIN:
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                try:
                    with Image.open(path) as img:
                        width, height = img.size
                except Image.DecompressionBombError as exc:  # over twice Pillow's limit
                    numbers = [int(t) for t in str(exc).split() if t.isdigit()]
                    return (numbers[0] if numbers else 2**63, "image")
            return width * height, "image"
        if suffix in TIFF_LIKE:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                largest = max(
                    (int(p.imagewidth) * int(p.imagelength) for p in tif.pages), default=0
                )
            return largest, "slide"
        if suffix in DICOM:
            import pydicom

            data = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            total = (data.get("TotalPixelMatrixColumns"), data.get("TotalPixelMatrixRows"))
            if all(total):
                return int(total[0]) * int(total[1]), "slide"
            frames = int(data.get("NumberOfFrames") or 1)
            return int(data.get("Rows") or 0) * int(data.get("Columns") or 0) * frames, "image"
    except Exception:  # noqa: BLE001 - unreadable headers are the export check's to report
        return None
    return None


def bomb_problem(
    path: Path,
    name: str,
    image_pixels: int,
    slide_pixels: int,
    pixels_per_byte: int = PIXELS_PER_BYTE,
) -> str | None:
    """Why ``path`` is refused as a decompression bomb, or None.

    Parameters
    ----------
    path : Path
        The received file.
    name : str
        Its path in the export.
    image_pixels, slide_pixels : int
        Largest plain image, and largest slide level 0, accepted (pixels).
    pixels_per_byte : int
        Largest declared pixels per byte of file (above :data:`RATIO_FLOOR` pixels).

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "a"
    >>> Image.new("RGB", (300, 200)).save(path, "PNG")
    >>> bomb_problem(path, "image-0001.png", image_pixels=50_000, slide_pixels=10**9)
    'image-0001.png: declares 60000 pixels, over the limit of 50000 for images'
    """
    found = declared_pixels(path, name)
    if found is None:
        return None
    pixels, kind = found
    limit = image_pixels if kind == "image" else slide_pixels
    shown = PurePosixPath(name).name
    if pixels > limit:
        level = " at level 0" if kind == "slide" else ""
        return f"{shown}: declares {pixels} pixels{level}, over the limit of {limit} for {kind}s"
    size = max(path.stat().st_size, 1)
    if pixels > RATIO_FLOOR and pixels / size > pixels_per_byte:
        return (
            f"{shown}: declares {pixels} pixels in {size} bytes ({pixels // size} per byte; "
            f"no real image exceeds {pixels_per_byte}): a decompression bomb"
        )
    return None
