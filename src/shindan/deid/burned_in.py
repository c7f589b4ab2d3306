"""Burned-in text: find it with OCR (Tesseract, English and Japanese), paint it black.

Ultrasound, secondary captures and screenshots often carry the patient's name, ID, date or
hospital in the pixels. :func:`mask_burned_in` paints over

* the regions configured for the device (a rules file per manufacturer/model, see
  :func:`load_region_rules`), and
* every word Tesseract reads with some confidence, in both polarities (light text on dark and
  dark on light, each against its local background), upscaled when the image is small,
  frame by frame,

and then reads the masked image again (painting and re-reading up to :data:`ROUNDS` times).
The result is *confident* only when the last reading finds no text: no word of two or more
letters, digits or CJK characters with confidence of at least :data:`CLEAN_CONFIDENCE` (a lone
character: :data:`SINGLE_CONFIDENCE`), and none in the extra ``rotations`` asked for.
That is a statement about what OCR can read: text that is very faint (stroke contrast under
:data:`MIN_CONTRAST` of 255 grey levels), tiny, stylised or rotated (only the rotations
asked for are tried) may be missed by every reading, so an image from a device known to burn
in text should also have configured regions. An image that is not confident should be held
back, with ``reason``. Strong speckle or noise can make OCR "read" short nonsense words;
those small boxes are masked too (too much is the safe side).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shindan.errors import InputError, ShindanError

# Words read at this confidence (Tesseract's 0-100) or more are masked ...
MASK_CONFIDENCE = 40
# ... and after masking, no word may be read at this confidence or more.
CLEAN_CONFIDENCE = 60
SINGLE_CONFIDENCE = 85  # a lone character: speckle often reads as one at 60-70
ROUNDS = 3  # read-and-paint rounds per frame before the last check
BUSY_FRACTION = 0.1  # strokes above/below a word beyond this: it sits in image content
# Stroke contrast (grey levels of the frame stretched to 0-255) below which nothing is read,
# and at which a stroke shows full black to OCR.
MIN_CONTRAST = 20
FULL_CONTRAST = 96
MARGIN = 4  # pixels added around every masked box (anti-aliased glyph edges)
OCR_TIMEOUT = 120  # seconds per Tesseract call; a hung OCR is a failed check, not a pass
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9d]")
_ALNUM = re.compile(r"[0-9A-Za-z\u00c0-\u024f]")
INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-jpn"

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


class OcrUnavailable(ShindanError):
    """Tesseract (or one of the requested languages) is not installed."""


@dataclass(frozen=True)
class MaskResult:
    """The outcome of :func:`mask_burned_in`.

    Attributes
    ----------
    pixels : ndarray
        A new array, same shape and dtype as the input, with the masked boxes painted.
    regions : tuple of (x, y, w, h)
        The boxes painted (margin included, clipped to the image), over all frames.
    confident : bool
        True when the check after masking read no text (see the module docstring).
    reason : str
        What was checked, or why the image is not clean.
    """

    pixels: np.ndarray
    regions: tuple[Box, ...]
    confident: bool
    reason: str


@dataclass(frozen=True)
class Word:
    """A word Tesseract read: its text, confidence (0-100), box and frame index."""

    text: str
    confidence: float
    box: Box
    frame: int = 0
    isolated: bool = True  # quiet above and below, as a line of text is (see _isolated)

    @property
    def chars(self) -> int:
        return len(_CJK.findall(self.text)) + len(_ALNUM.findall(self.text))

    @property
    def is_text(self) -> bool:
        """Read as text, not OCR noise: two letters/digits/CJK characters at
        :data:`CLEAN_CONFIDENCE`, or a single one at :data:`SINGLE_CONFIDENCE` standing
        on its own (speckle often reads as a single kana or digit with high confidence)."""
        if self.chars >= 2:
            return self.confidence >= CLEAN_CONFIDENCE
        return self.chars == 1 and self.isolated and self.confidence >= SINGLE_CONFIDENCE

    @property
    def maskable(self) -> bool:
        """Worth painting over: text, or any reading with some confidence on its own (in
        busy image content, weak readings are noise, and painting them would spoil it)."""
        return self.is_text or (self.isolated and self.confidence >= MASK_CONFIDENCE)


@dataclass(frozen=True)
class RegionRule:
    """Boxes to mask on every image of one device (``model`` "" = any model of the maker;
    ``size`` (width, height) = only images of that size)."""

    manufacturer: str
    model: str = ""
    regions: tuple[Box, ...] = ()
    size: tuple[int, int] | None = None

    def matches(self, manufacturer: str, model: str, size: tuple[int, int] | None) -> bool:
        if self.manufacturer.strip().casefold() != manufacturer.strip().casefold():
            return False
        if self.model and self.model.strip().casefold() != model.strip().casefold():
            return False
        return self.size is None or size is None or tuple(self.size) == tuple(size)


def load_region_rules(path: str | Path) -> list[RegionRule]:
    """Read per-device mask regions from a JSON or TOML file.

    The file holds a list of rules (JSON: a list, or ``{"devices": [...]}``; TOML:
    ``[[devices]]`` tables), each with ``manufacturer``, optional ``model``, optional
    ``size`` ``[width, height]`` and ``regions``: ``[[x, y, width, height], ...]`` in pixels.

    Raises
    ------
    InputError
        The file is missing or not a valid rules file (one-line message).

    Examples
    --------
    >>> import json, tempfile
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    >>> _ = f.write(json.dumps([{"manufacturer": "ACME", "model": "US-1",
    ...                          "regions": [[0, 0, 640, 40]]}])); f.close()
    >>> load_region_rules(f.name)[0].regions
    ((0, 0, 640, 40),)
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except FileNotFoundError:
        raise InputError(f"{p}: no such region rules file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSON/TOML decode errors
        raise InputError(f"{p}: not a JSON/TOML region rules file ({exc})") from None
    items = data.get("devices") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(f"{p}: expected a list of devices (or a 'devices' list)")
    rules = []
    for i, item in enumerate(items):
        try:
            boxes = tuple(_box(b) for b in item["regions"])
            size = tuple(int(v) for v in item["size"]) if item.get("size") else None
            if size is not None and len(size) != 2:
                raise ValueError("size must be [width, height]")
            rules.append(
                RegionRule(str(item["manufacturer"]), str(item.get("model", "")), boxes, size)
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{p}: device {i + 1}: {exc!s} (need manufacturer, regions)") from None
    return rules


def _box(value: Sequence[Any]) -> Box:
    if len(value) != 4:
        raise ValueError(f"region {value!r} is not [x, y, width, height]")
    x, y, w, h = (int(v) for v in value)
    if min(x, y) < 0 or min(w, h) <= 0:
        raise ValueError(f"region {value!r}: negative position or empty size")
    return x, y, w, h


def regions_for(
    rules: Iterable[RegionRule], manufacturer: str, model: str, size: tuple[int, int] | None
) -> tuple[Box, ...]:
    """All boxes of the rules that match a device (and image size)."""
    return tuple(b for r in rules if r.matches(manufacturer, model, size) for b in r.regions)


@functools.lru_cache(maxsize=1)
def _installed_languages() -> frozenset[str] | None:
    if shutil.which("tesseract") is None:
        return None
    import pytesseract

    try:
        return frozenset(pytesseract.get_languages(config=""))
    except Exception:  # pytesseract raises its own errors for a broken install
        return None


def check_ocr(languages: Sequence[str] = ("eng", "jpn")) -> None:
    """Raise :class:`OcrUnavailable` unless Tesseract and ``languages`` are installed."""
    have = _installed_languages()
    if have is None:
        raise OcrUnavailable(
            f"tesseract is not installed; it finds burned-in text ({INSTALL_HINT})"
        )
    missing = [lang for lang in languages if lang not in have]
    if missing:
        raise OcrUnavailable(f"tesseract has no {'/'.join(missing)} language data ({INSTALL_HINT})")


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    """One frame as 8-bit greyscale, contrast stretched (so faint text reaches OCR)."""
    a = np.asarray(frame)
    if a.ndim == 3:  # RGB(A): luminance
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    a = a.astype(np.float32)
    lo, hi = float(np.min(a)), float(np.max(a))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _upscale(shape: tuple[int, ...]) -> int:
    # Tesseract reads glyphs of ~20 px or more best; small images get 2x (large ones not:
    # upscaled speckle turns into confident-looking nonsense).
    return 2 if max(shape[:2]) < 512 else 1


def read_words(
    grey: np.ndarray, languages: Sequence[str], *, frame: int = 0, rotation: int = 0
) -> list[Word]:
    """Words Tesseract reads in an 8-bit image, boxes in image pixels.

    Two readings, one per polarity: the image minus its local background (a grey opening:
    light strokes on any background) and the local background minus the image (a grey
    closing: dark strokes), each shown to Tesseract as dark text on white. Subtracting the
    background finds text on uneven backgrounds (gradients, light boxes) that a global
    threshold loses, and leaves smooth regions blank instead of inventing words in them.

    ``rotation`` (0, 90, 180, 270) turns the image first, to read text running that way;
    boxes are then in the turned image.
    """
    import pytesseract
    from PIL import Image

    img = np.rot90(grey, k=rotation // 90) if rotation else grey
    scale = _upscale(img.shape)
    words = []
    stroke_images = _stroke_images(img)
    for strokes in stroke_images:
        image = Image.fromarray(strokes)
        if scale > 1:
            size = (image.width * scale, image.height * scale)
            image = image.resize(size, Image.Resampling.LANCZOS)
        with _one_ocr_thread():
            data = pytesseract.image_to_data(
                image,
                lang="+".join(languages),
                config="--psm 11",
                output_type=pytesseract.Output.DICT,
                timeout=OCR_TIMEOUT,
            )
        for i, text in enumerate(data["text"]):
            conf = float(data["conf"][i])
            if not text.strip() or conf < 0:
                continue
            x, y, w, h = (int(data[k][i]) // scale for k in ("left", "top", "width", "height"))
            box = (x, y, max(w, 1), max(h, 1))
            alone = _isolated(stroke_images, box)
            words.append(Word(text.strip(), conf, box, frame, alone))
    return words


def _isolated(stroke_images: list[np.ndarray], box: Box) -> bool:
    """Whether the bands just above and below a word are nearly free of strokes.

    Burned-in text sits on a plain background, so a line of it has quiet bands above and
    below; OCR noise in speckle or tissue is surrounded by more of the same.
    """
    x, y, w, h = box
    pad = max(3, h // 4)
    rows, cols = stroke_images[0].shape
    x0, x1 = max(0, x), min(cols, x + w)
    bands = [
        (max(0, y - 1 - pad), max(0, y - 1)),
        (min(rows, y + h + 1), min(rows, y + h + 1 + pad)),
    ]
    total = busy = 0
    for top, bottom in bands:
        for strokes in stroke_images:
            part = strokes[top:bottom, x0:x1]
            total += part.size
            busy += int(np.count_nonzero(part < 250))  # any stroke above MIN_CONTRAST
    return total == 0 or busy / total < BUSY_FRACTION


@contextlib.contextmanager
def _one_ocr_thread() -> Iterator[None]:
    """Tesseract's OpenMP threads slow it down on a busy machine: one thread per call (the
    variable reaches only the tesseract child process; it is restored afterwards)."""
    before = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = before or "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)


def _stroke_images(grey: np.ndarray) -> list[np.ndarray]:
    """Light strokes and dark strokes of an 8-bit image, each as dark-on-white uint8."""
    from scipy import ndimage as ndi

    g = grey.astype(np.float32)
    # Wider than any glyph stroke but narrower than the background's features.
    size = (max(15, min(g.shape) // 25),) * 2
    out = []
    for strokes in (g - ndi.grey_opening(g, size=size), ndi.grey_closing(g, size=size) - g):
        # A fixed scale, not the image's own maximum: once the text is painted over, the
        # faint edges left (JPEG ringing, the paint's border) must stay faint, or OCR
        # "reads" them. Strokes fainter than MIN_CONTRAST grey levels are not text here.
        strokes[strokes < MIN_CONTRAST] = 0
        scaled = np.clip(strokes * (255.0 / FULL_CONTRAST), 0, 255)
        out.append(np.ascontiguousarray(255 - scaled).astype(np.uint8))
    return out


def _frames(pixels: np.ndarray, multiframe: bool | None) -> tuple[np.ndarray, bool]:
    """View the input as (frames, rows, cols[, samples]); also say whether it had frames."""
    if multiframe is None:
        multiframe = pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4))
    if pixels.ndim not in (2, 3, 4) or (multiframe and pixels.ndim == 2):
        raise InputError(f"pixel array of shape {pixels.shape}: expected an image or frames")
    return (pixels if multiframe else pixels[None]), multiframe


def _paint(frames: np.ndarray, box: Box, margin: int, fill: Any) -> Box:
    rows, cols = frames.shape[1:3]
    x, y, w, h = box
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(cols, x + w + margin), min(rows, y + h + margin)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    frames[:, y0:y1, x0:x1] = fill
    return (x0, y0, x1 - x0, y1 - y0)


def mask_burned_in(
    pixels: np.ndarray,
    *,
    regions: Iterable[Box] = (),
    ocr: bool = True,
    languages: Sequence[str] = ("eng", "jpn"),
    margin: int = MARGIN,
    fill: float | Sequence[float] | None = None,
    multiframe: bool | None = None,
    rotations: Sequence[int] = (0,),
) -> MaskResult:
    """Paint configured regions and OCR-found text black; check nothing readable remains.

    Parameters
    ----------
    pixels : ndarray
        (rows, cols), (rows, cols, 3|4), or frames of either. Never modified.
    regions : iterable of (x, y, w, h)
        Boxes masked on every frame whatever OCR finds (see :func:`regions_for`).
    ocr : bool
        Find text with Tesseract and check the result. Without OCR the result is confident
        only if configured regions were given (trusting the configuration).
    languages : sequence of str
        Tesseract languages.
    margin : int
        Pixels added around every box.
    fill : scalar or per-channel sequence, optional
        The paint; default 0 (or a lower minimum of signed data): black for MONOCHROME2
        and RGB. Pass the
        maximum for MONOCHROME1, ``(0, 128, 128)`` for YBR data left as YBR.
    multiframe : bool, optional
        Whether the first axis is frames; guessed from the shape when not given.
    rotations : sequence of int
        Orientations (degrees) read in the check after masking; text found turned
        90/180/270 degrees makes the result not confident.

    Returns
    -------
    MaskResult

    Raises
    ------
    OcrUnavailable
        ``ocr`` is true and Tesseract or a language is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> blank = np.zeros((64, 64), np.uint8)
    >>> r = mask_burned_in(blank, regions=[(0, 0, 10, 10)], ocr=False)
    >>> r.regions, r.confident
    (((0, 0, 14, 14),), True)
    """
    src = np.asarray(pixels)
    frames_in, _ = _frames(src, multiframe)
    out = np.array(frames_in, copy=True)
    if fill is None:  # black: 0, or the minimum of signed/float data when that is lower
        fill = 0 if src.dtype.kind in "ub" or not src.size else min(src.min(), 0)
    painted: list[Box] = []
    for box in regions:
        b = _paint(out, tuple(int(v) for v in box), margin, fill)
        if b[2] and b not in painted:
            painted.append(b)
    if not ocr:
        result = out if src.ndim == out.ndim else out[0]
        ok = bool(painted)
        why = "configured regions masked; no OCR check" if ok else "no OCR and no regions"
        return MaskResult(result.reshape(src.shape), tuple(painted), ok, why)

    check_ocr(languages)
    done: dict[bytes, list[Box]] = {}  # frame content -> boxes painted (repeats read once)
    for i in range(len(out)):
        key = _to_uint8(out[i]).tobytes()
        if key in done:
            for box in done[key]:
                _paint(out[i : i + 1], box, 0, fill)
            continue
        boxes, left = _clean_frame(out, i, languages, margin, fill)
        done[key] = boxes
        painted.extend(b for b in boxes if b not in painted)
        if left:
            shown = ", ".join(f"{w.text!r} ({w.confidence:.0f})" for w in left[:3])
            reason = f"text still read after masking in frame {i}: {shown}"
            return MaskResult(_shaped(out, src), tuple(painted), False, reason)
        for rot in (r for r in rotations if r % 360):
            words = read_words(_to_uint8(out[i]), languages, frame=i, rotation=rot)
            turned = [w for w in words if w.is_text]
            if turned:
                shown = ", ".join(f"{w.text!r} ({w.confidence:.0f})" for w in turned[:3])
                reason = f"text read turned {rot} degrees in frame {i}: {shown}"
                return MaskResult(_shaped(out, src), tuple(painted), False, reason)
    n, turns = len(out), "/".join(str(r) for r in rotations)
    reason = (
        f"no text read after masking (Tesseract {'+'.join(languages)}, both polarities, "
        f"{n} frame{'s' if n > 1 else ''}, rotation {turns}; faint or stylised text may "
        "escape OCR)"
    )
    return MaskResult(_shaped(out, src), tuple(painted), True, reason)


def _shaped(out: np.ndarray, src: np.ndarray) -> np.ndarray:
    return (out if src.ndim == out.ndim else out[0]).reshape(src.shape)


def _clean_frame(
    out: np.ndarray, i: int, languages: Sequence[str], margin: int, fill: Any
) -> tuple[list[Box], list[Word]]:
    """Read, paint what was read, read again (up to :data:`ROUNDS` times) in frame ``i``.

    Returns the boxes painted and the words still read as text at the end (empty: clean).
    """
    boxes: list[Box] = []
    for r in range(ROUNDS):
        words = read_words(_to_uint8(out[i]), languages, frame=i)
        if r > 0 and not any(w.is_text for w in words):
            return boxes, []
        # First reading: everything read with some confidence. Later ones: only what still
        # reads as text (low-confidence readings then are mostly the edges of the paint).
        hits = [w for w in words if (w.is_text if r else w.maskable)]
        if not hits:  # nothing read at all: clean as read
            return boxes, []
        for w in hits:
            b = _paint(out[i : i + 1], w.box, margin, fill)
            if b[2] and b not in boxes:
                boxes.append(b)
        for b in _line_gaps(boxes):
            if b not in boxes:
                boxes.append(_paint(out[i : i + 1], b, 0, fill))
    words = read_words(_to_uint8(out[i]), languages, frame=i)
    return boxes, [w for w in words if w.is_text]


def _line_gaps(boxes: Sequence[Box]) -> list[Box]:
    """The gaps between painted boxes of one text line, at most two line heights wide.

    OCR can miss a glyph between two words it reads (the lone 田 of '山田 太郎' in a serif
    face); a name then leaks a character. Painting the gap covers it.
    """
    gaps = []
    for ax, ay, aw, ah in boxes:
        for bx, by, _bw, bh in boxes:
            gap = bx - (ax + aw)
            overlap = min(ay + ah, by + bh) - max(ay, by)
            if 0 < gap <= 2 * max(ah, bh) and overlap >= min(ah, bh) / 2:
                top = min(ay, by)
                gaps.append((ax + aw, top, gap, max(ay + ah, by + bh) - top))
    return gaps


def dicom_masker(
    rules: Iterable[RegionRule] = (),
    *,
    ocr: bool = True,
    languages: Sequence[str] = ("eng", "jpn"),
) -> Callable[[np.ndarray, Any], MaskResult]:
    """A ``masker(pixels, dataset)`` for the DICOM path: the dataset's Manufacturer and
    ManufacturerModelName pick the configured regions, its frames and photometric
    interpretation decide the frame axis and the black paint.

    ``pixels`` is ``ds.pixel_array``: frames first when multi-frame, colour as RGB.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.Manufacturer, ds.Rows, ds.Columns = "ACME", 8, 8
    >>> masker = dicom_masker([RegionRule("ACME", regions=((0, 0, 8, 2),))], ocr=False)
    >>> masker(np.ones((8, 8), np.uint8), ds).pixels[:, 0].tolist()  # 4 px margin
    [0, 0, 0, 0, 0, 0, 1, 1]
    """
    rules = list(rules)

    def masker(pixels: np.ndarray, ds: Any) -> MaskResult:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        size = (int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "Rows", 0) or 0))
        boxes = regions_for(
            rules,
            str(getattr(ds, "Manufacturer", "") or ""),
            str(getattr(ds, "ManufacturerModelName", "") or ""),
            size if all(size) else None,
        )
        photometric = str(getattr(ds, "PhotometricInterpretation", "") or "")
        # MONOCHROME1 shows its maximum as black; colour arrives as RGB (pydicom converts
        # YBR), where the default (the minimum, 0) is black.
        fill: Any = np.asarray(pixels).max() if photometric == "MONOCHROME1" else None
        return mask_burned_in(
            pixels,
            regions=boxes,
            ocr=ocr,
            languages=languages,
            fill=fill,
            multiframe=frames > 1,
        )

    return masker
