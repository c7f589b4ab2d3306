"""One way to open anything: whole-slide files and plain images behind one ``Slide`` interface.

Coordinates at this API are (x, y) in level-0 pixels; sizes are (width, height); arrays
returned are (rows, cols, 3) uint8 RGB.

Backends, tried in this order:

* OpenSlide: Aperio SVS, Hamamatsu NDPI/VMS, MIRAX, Leica SCN, Ventana, Philips TIFF, DICOM WSI,
  generic tiled TIFF.
* tifffile: OME-TIFF and other TIFFs OpenSlide does not take (multi-dimensional, non-RGB).
* Pillow: plain PNG/JPEG/TIFF/BMP images, as a single-level slide.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shindan.errors import InputError

# Plain images of whole slides are legitimately large; the default bomb guard (~179 Mpx) is not.
Image.MAX_IMAGE_PIXELS = 4_000_000_000

# µm/px a microscope image can have (a 100x objective to a 1x overview); a given --mpp
# outside is a typo, and would resample an image to nothing or to terabytes.
MPP_RANGE = (0.01, 100.0)

# Writers stamp 72 or 96 dpi when they know nothing of the scale; such a value is no µm/px.
_PLACEHOLDER_MPP = {25400 / 72, 25400 / 96, 25400 / 300, 10000.0, 25400.0}


def _plausible_mpp(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    if any(abs(value - p) < 1e-3 * p for p in _PLACEHOLDER_MPP) or value > 100:
        return None
    return float(value)


class Slide(ABC):
    """An opened slide or image. Use :func:`open_slide` to get one.

    Attributes
    ----------
    path : Path
    format : str
        Reader format, e.g. ``"aperio"``, ``"hamamatsu"``, ``"dicom"``, ``"ome-tiff"``, ``"png"``.
    vendor : str or None
    level_dimensions : list of (width, height)
    level_downsamples : list of float
    mpp : float or None
        Micrometres per level-0 pixel: the file's own, else the one given to :func:`open_slide`.
    mpp_source : {"file", "given"} or None
        Where ``mpp`` came from.
    greyscale : bool
        A single-channel plain image, which stain-colour models cannot analyse.
    """

    path: Path
    format: str
    vendor: str | None
    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    mpp: float | None
    mpp_source: str | None = None
    greyscale: bool = False  # a single-channel image (no stain colour to analyse)

    def _set_mpp(self, from_file: float | None, given: float | None) -> None:
        # The file's own scale wins: a --mpp for a folder of mixed inputs is meant for the
        # plain images in it, not to rescale slides that record theirs.
        if from_file is not None:
            self.mpp, self.mpp_source = from_file, "file"
        else:
            self.mpp, self.mpp_source = given, ("given" if given is not None else None)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 size as (width, height) in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def associated_names(self) -> list[str]:
        """Names of associated images (label, macro, thumbnail)."""
        return []

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image as an RGB uint8 array."""
        raise InputError(f"{self.path.name}: no associated image {name!r}")

    @abstractmethod
    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Backend read; location in level-0 pixels, size in level pixels; may assume in-bounds."""

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read an RGB region.

        Parameters
        ----------
        location : (x, y)
            Top-left corner in level-0 pixels; may lie outside the slide (padded white).
        level : int
        size : (width, height)
            Size in pixels of ``level``.

        Returns
        -------
        ndarray of uint8, shape (height, width, 3)
        """
        if not 0 <= level < self.level_count:
            raise InputError(
                f"{self.path.name}: level {level} out of range 0..{self.level_count - 1}"
            )
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise InputError(f"region size must be positive, got {size}")
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        # Clip to the level, read the inside, pad the rest with white glass.
        lx, ly = int(round(location[0] / ds)), int(round(location[1] / ds))
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, lw), min(ly + h, lh)
        out = np.full((h, w, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            loc0 = (int(round(x0 * ds)), int(round(y0 * ds)))
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = self._read(loc0, level, (x1 - x0, y1 - y0))
        return out

    def best_level_for_downsample(self, downsample: float) -> int:
        """The finest level whose downsample does not exceed ``downsample`` (never upsample)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = i
        return best

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """A whole-slide RGB thumbnail whose longer side is at most ``max_size`` pixels."""
        w, h = self.dimensions
        ds = max(w, h) / max_size
        level = self.best_level_for_downsample(max(ds, 1.0))
        lw, lh = self.level_dimensions[level]
        img = Image.fromarray(self.read_region((0, 0), level, (lw, lh)))
        img.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        return np.asarray(img.convert("RGB"))

    def info(self) -> dict[str, Any]:
        """The contract's description: format, width, height, levels, mpp, vendor, associated."""
        w, h = self.dimensions
        return {
            "format": self.format,
            "width": w,
            "height": h,
            "levels": [[int(a), int(b)] for a, b in self.level_dimensions],
            "mpp": self.mpp,
            "vendor": self.vendor,
            "associated": sorted(self.associated_names),
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"<{type(self).__name__} {self.path.name} {self.format} {w}x{h} mpp={self.mpp}>"


class OpenSlideSlide(Slide):
    """Vendor formats through OpenSlide (thread-safe reads)."""

    def __init__(self, path: Path, mpp: float | None = None):
        import openslide

        self._os = openslide.OpenSlide(str(path))
        props = self._os.properties
        self.path = path
        self.format = openslide.OpenSlide.detect_format(str(path)) or "unknown"
        self.vendor = props.get("openslide.vendor")
        self.level_dimensions = [tuple(map(int, d)) for d in self._os.level_dimensions]
        self.level_downsamples = [float(d) for d in self._os.level_downsamples]
        meta = props.get("openslide.mpp-x")
        self._set_mpp(_plausible_mpp(float(meta) if meta else None), mpp)
        # Decode one pixel now so a corrupt file fails at open, not halfway through a run.
        self._read((0, 0), self.level_count - 1, (1, 1))

    @property
    def associated_names(self) -> list[str]:
        return list(self._os.associated_images)

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self._os.associated_images:
            raise InputError(f"{self.path.name}: no associated image {name!r}")
        return np.asarray(self._os.associated_images[name].convert("RGB"))

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        import openslide

        try:
            rgba = self._os.read_region(location, level, size)
        except openslide.OpenSlideError as exc:
            raise InputError(f"{self.path.name}: unreadable slide data ({exc})") from exc
        # Premultiplied RGBA: transparent pixels (outside scanned area) become white glass.
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return np.asarray(white)

    def close(self) -> None:
        self._os.close()


class TiffFileSlide(Slide):
    """OME-TIFF and other TIFFs through tifffile + zarr (lazy, tiled reads)."""

    def __init__(self, path: Path, mpp: float | None = None):
        import tifffile
        import zarr

        self._tif = tifffile.TiffFile(str(path))
        series = self._tif.series[0]
        self.path = path
        self.format = "ome-tiff" if self._tif.is_ome else "tiff"
        self.vendor = None
        self._axes = series.axes
        self._levels = [
            zarr.open(series.aszarr(level=i), mode="r") for i in range(len(series.levels))
        ]
        yi, xi = self._axes.index("Y"), self._axes.index("X")
        self.level_dimensions = [(int(a.shape[xi]), int(a.shape[yi])) for a in self._levels]
        w0 = self.level_dimensions[0][0]
        self.level_downsamples = [w0 / w for w, _ in self.level_dimensions]
        self._set_mpp(self._metadata_mpp(), mpp)
        # Fix one intensity window per slide from the smallest level so tiles agree with each other.
        small = self._plane(self._levels[-1], slice(None), slice(None)).astype(np.float32)
        self._lo, self._hi = (float(np.min(small)), float(np.max(small))) if small.size else (0, 1)
        self._read((0, 0), self.level_count - 1, (1, 1))

    def _metadata_mpp(self) -> float | None:
        if self._tif.is_ome:
            m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', self._tif.ome_metadata or "")
            unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', self._tif.ome_metadata or "")
            if m and (unit is None or unit.group(1) in ("µm", "um", "micron")):
                return _plausible_mpp(float(m.group(1)))
        page = self._tif.pages[0]
        res, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
        if res and unit and res.value[0]:
            per_unit = res.value[0] / res.value[1]
            um = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
            if um:
                return _plausible_mpp(um / per_unit)
        return None

    def _plane(self, arr: Any, rows: slice, cols: slice) -> np.ndarray:
        # First index of every axis that is not Y, X or samples: one 2-D (or RGB) plane.
        index = tuple(
            rows if ax == "Y" else cols if ax == "X" else slice(None) if ax == "S" else 0
            for ax in self._axes
        )
        return np.asarray(arr[index])

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        ds = self.level_downsamples[level]
        x, y = int(round(location[0] / ds)), int(round(location[1] / ds))
        try:
            plane = self._plane(self._levels[level], slice(y, y + size[1]), slice(x, x + size[0]))
        except Exception as exc:  # tifffile/imagecodecs raise many kinds on corrupt data
            raise InputError(f"{self.path.name}: unreadable TIFF data ({exc})") from exc
        if plane.dtype != np.uint8 or plane.ndim == 2:
            plane = plane.astype(np.float32)
            plane = np.clip((plane - self._lo) / max(self._hi - self._lo, 1e-9) * 255, 0, 255)
            plane = plane.astype(np.uint8)
        if plane.ndim == 2:
            plane = np.repeat(plane[..., None], 3, axis=2)
        return np.ascontiguousarray(plane[..., :3])

    def close(self) -> None:
        self._tif.close()


class ImageSlide(Slide):
    """A plain image as a single-level slide."""

    def __init__(self, path: Path, mpp: float | None = None):
        try:
            with Image.open(path) as img:
                img.load()
                self.format = (img.format or path.suffix.lstrip(".")).lower()
                dpi = img.info.get("dpi")
                self.greyscale = img.mode in ("1", "L", "LA", "I", "I;16", "F")
                self._rgb = np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{path.name}: not a readable image ({exc})") from exc
        self.path = path
        self.vendor = None
        h, w = self._rgb.shape[:2]
        self.level_dimensions = [(w, h)]
        self.level_downsamples = [1.0]
        meta = 25400.0 / float(dpi[0]) if dpi and dpi[0] else None
        self._set_mpp(_plausible_mpp(meta), mpp)

    @classmethod
    def from_array(cls, rgb: np.ndarray, mpp: float | None, name: str = "array") -> ImageSlide:
        """Wrap an in-memory RGB array (copied) as a slide."""
        self = cls.__new__(cls)
        self._rgb = np.array(rgb[..., :3], dtype=np.uint8, copy=True)
        self.path, self.format, self.vendor = Path(name), "array", None
        self._set_mpp(None, mpp)
        self.level_dimensions = [(self._rgb.shape[1], self._rgb.shape[0])]
        self.level_downsamples = [1.0]
        return self

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        x, y = location
        return self._rgb[y : y + size[1], x : x + size[0]].copy()


_PLAIN = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_TIFF = {".tif", ".tiff"}


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a whole-slide file or plain image.

    Parameters
    ----------
    path : str or Path
    mpp : float, optional
        Micrometres per pixel at level 0 for a file that records none (a plain image, say).
        A file's own plausible µm/px is kept; ``slide.mpp_source`` says which was used.

    Returns
    -------
    Slide

    Raises
    ------
    InputError
        Missing, unreadable or unsupported file, with a one-line message.

    Examples
    --------
    >>> from shindan.io import open_slide
    >>> slide = open_slide("CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> slide.info()["mpp"]  # doctest: +SKIP
    0.499
    """
    import openslide

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a slide or image file")
    if mpp is not None and not (MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):  # also NaN, inf
        raise InputError(
            f"--mpp must be between {MPP_RANGE[0]} and {MPP_RANGE[1]} µm/px, got {mpp}"
        )
    suffix = p.suffix.lower()
    try:
        vendor_format = openslide.OpenSlide.detect_format(str(p))
    except openslide.OpenSlideError:
        vendor_format = None
    errors: list[str] = []
    if vendor_format and not (suffix in _TIFF and p.name.lower().endswith(".ome.tiff")):
        try:
            return OpenSlideSlide(p, mpp)
        except InputError:
            raise
        except Exception as exc:  # OpenSlideError, OpenSlideUnsupportedFormatError
            errors.append(str(exc))
            if suffix not in _TIFF:
                raise InputError(f"{p.name}: cannot open {vendor_format} slide ({exc})") from exc
    if suffix in _TIFF or p.name.lower().endswith(".ome.tif"):
        try:
            return TiffFileSlide(p, mpp)
        except InputError:
            raise
        except Exception as exc:
            errors.append(str(exc))
            raise InputError(f"{p.name}: cannot open TIFF ({'; '.join(errors)})") from exc
    if suffix in _PLAIN:
        return ImageSlide(p, mpp)
    raise InputError(f"{p.name}: unsupported file type (expected a slide or an image)")
