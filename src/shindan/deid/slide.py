"""De-identify whole-slide TIFFs: a new file without label and macro images or identifying tags.

Aperio SVS, Hamamatsu NDPI, OME-TIFF and plain (pyramidal or multi-page) TIFF are rewritten by
:mod:`shindan.deid.tiff_rewrite`: the compressed tiles and strips are copied byte for byte, so
every reader sees the same pixels, while

* label and macro images are left out (SVS: the stripped images after the thumbnail, and any
  marked macro; NDPI: the directories whose source lens is -1 (macro) or -2 (map)),
* only tags on an allow-list survive (image structure, resolution, colour, scanner make and
  model, and the vendor tags readers need: NDPI's lens, offsets and MCU starts); dates,
  artist, host computer, document names, XMP, IPTC, EXIF/GPS directories, ImageJ metadata,
  NDPI serial numbers, slide label, auth code and calibration text are dropped,
* the Aperio ImageDescription keeps only technical ``key = value`` fields (AppMag, MPP, ...;
  Filename, Date, Time, User, ScanScope ID, ImageID, Barcode and any unknown field go), and
  OME-XML loses experimenters, groups, projects, datasets, plates, annotations, ROIs,
  descriptions, acquisition dates, image names, file names and serial numbers.

What cannot be cleaned with confidence is held back with the reason, never half-cleaned:
other vendors' TIFF flavours (Philips, Leica SCN, Ventana BIF, ...), old-style JPEG, OME-TIFFs
that span several files or carry a label/macro image, a plain TIFF page that is neither a plane
nor a reduced level of the first (it may be a label), an NDPI over 4 GiB, and any output in
which a known identifier is still found (a byte search of the written file).

This is in the spirit of ``anonymize-slide`` and EMPAIA's ``wsi-anon``, which blank the label
in place; here the input is never touched and removed images leave no bytes behind.
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shindan.deid.records import Exported, HeldBack, Identifiers
from shindan.deid.tiff_rewrite import (
    DATA_TAGS,
    SUBIFDS,
    Entry,
    Ifd,
    TiffReader,
    TiffStructureError,
    TiffWriter,
    ascii_entry,
)
from shindan.errors import InputError

# Tags that describe the image itself and identify no one; everything else is dropped.
STRUCTURE_TAGS = frozenset(
    {
        254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 274, 277, 278, 279, 280,
        281, 282, 283, 284, 286, 287, 290, 291, 296, 297, 317, 318, 319, 320, 321, 322, 323,
        324, 325, 330, 332, 338, 339, 340, 341, 347, 529, 530, 531, 532, 32997, 32998, 34675,
        271, 272, 305,  # Make, Model, Software: the scanner and its software, as DICOM keeps
    }
)  # fmt: skip
# Hamamatsu NDPI tags kept: format flag, lens, slide offsets, tissue index, MCU starts,
# fluorescence channel and exposure, focus data, JPEG quality, label-obscured flag, timings.
NDPI_TAGS = frozenset(
    {65420, 65421, 65422, 65423, 65424, 65425, 65426, 65432, 65434, 65435, 65436, 65437,
     65438, 65439, 65440, 65441, 65443, 65444, 65445, 65446, 65447, 65450, 65451, 65454,
     65455, 65456, 65457, 65458, 65500}
)  # fmt: skip
# What dropped NDPI tags held, recorded as identifiers so `deid check` looks for them.
NDPI_IDENTIFYING = {65427: "SlideLabel", 65428: "AuthCode", 65442: "ScannerSerialNumber"}
# Aperio ImageDescription fields kept (technical); all others are dropped.
APERIO_KEEP = frozenset(
    {"AppMag", "MPP", "StripeWidth", "OriginalWidth", "OriginalHeight", "Originalheight",
     "Left", "Top", "LineCameraSkew", "LineAreaXOffset", "LineAreaYOffset", "Focus Offset",
     "Filtered", "Exposure Time", "Exposure Scale", "Gamma", "ICC Profile", "Parmset"}
)  # fmt: skip
# Dropped Aperio fields whose values identify the slide, its scan or its operator.
APERIO_IDENTIFYING = frozenset(
    {"Filename", "Date", "Time", "User", "ScanScope ID", "ImageID", "Title", "Barcode",
     "DSR ID", "Rack", "Slide", "SessionMode", "ScannerType"}
)  # fmt: skip
# ImageJ description lines kept (shape and calibration); "info", labels and the rest go.
IMAGEJ_KEEP = frozenset(
    {"ImageJ", "hyperstack", "images", "channels", "slices", "frames", "unit", "spacing",
     "loop", "min", "max", "mode", "finterval", "fps", "xorigin", "yorigin", "zorigin"}
)  # fmt: skip
# tifffile flavours this module understands; any other flavour is held back.
KNOWN_FLAVOURS = frozenset({"svs", "ndpi", "ome", "imagej", "shaped", "uniform", "multipage"})
# OME-XML elements removed with everything inside them.
OME_DROP = frozenset(
    {"Experimenter", "ExperimenterGroup", "ExperimenterRef", "ExperimenterGroupRef",
     "StructuredAnnotations", "AnnotationRef", "ROI", "ROIRef", "Project", "ProjectRef",
     "Dataset", "DatasetRef", "Folder", "FolderRef", "Screen", "Plate", "PlateRef",
     "AcquisitionDate", "Description", "UUID"}
)  # fmt: skip
OME_DROP_ATTRS = frozenset({"Name", "SerialNumber", "LotNumber", "UUID", "FileName"})
OME_KEEP_NAME = frozenset({"Channel", "Filter", "Dichroic", "FilterSet", "Objective"})
_ASSOCIATED = re.compile(r"\b(label|macro|overview|barcode|slide ?label)\b", re.I)
MIN_SEARCH_LEN = 4  # shorter identifier values match compressed bytes by chance


@dataclass
class _Plan:
    """What to write: the kept directories and the entries replaced or dropped in each."""

    flavour: str
    keep: list[int]
    found: dict[str, str] = field(default_factory=dict)  # identifiers met in the metadata
    notes: list[str] = field(default_factory=list)
    edit: Callable[[int, Ifd], dict[int, Entry]] | None = None


class _HoldBack(Exception):
    """The input cannot be cleaned with confidence (the message is the reason)."""


def _description(reader: TiffReader, ifd: Ifd) -> str:
    entry = ifd.entries.get(270)
    return reader.values(entry)[0] if entry is not None and entry.type == 2 else ""


def _raw_text(entry: Entry | None) -> str:
    if entry is None:
        return ""
    return entry.raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _first(reader: TiffReader, ifd: Ifd, tag: int, default: float = 0) -> float:
    entry = ifd.entries.get(tag)
    if entry is None:
        return default
    value = reader.values(entry)[0]
    return value[0] / value[1] if isinstance(value, tuple) else value


def _size(reader: TiffReader, ifd: Ifd) -> tuple[int, int]:
    return int(_first(reader, ifd, 256)), int(_first(reader, ifd, 257))


def _kept_entries(ifd: Ifd, extra: frozenset[int] = frozenset()) -> dict[int, Entry]:
    return {t: e for t, e in ifd.entries.items() if t in STRUCTURE_TAGS or t in extra}


def scrub_aperio(description: str) -> tuple[str, dict[str, str]]:
    """Keep the technical fields of an Aperio ImageDescription; return it and what went.

    Examples
    --------
    >>> text, found = scrub_aperio("Aperio Image Library v1\\r\\n10x10|AppMag = 20|User = ab")
    >>> text, found
    ('Aperio Image Library v1\\r\\n10x10|AppMag = 20', {'User': 'ab'})
    """
    head, *fields = description.split("|")
    kept, found = [head], {}
    for item in fields:
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key in APERIO_KEEP:
            kept.append(item)
        elif key in APERIO_IDENTIFYING and value:
            found[key] = value
    return "|".join(kept), found


def scrub_imagej(description: str) -> str:
    """Keep the shape and calibration lines of an ImageJ description."""
    lines = [ln for ln in description.splitlines() if ln.partition("=")[0].strip() in IMAGEJ_KEEP]
    return "\n".join(lines) + "\n" if lines else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def scrub_ome(xml: str) -> tuple[str, dict[str, str]]:
    """Remove identifying elements and attributes from OME-XML; return it and what went.

    Raises ``_HoldBack`` for what cannot be cleaned here: an OME-TIFF whose planes live in
    other files, or one that holds a label/macro image.
    """
    namespaces = {}
    for _event, (prefix, uri) in ET.iterparse(_StringReader(xml), events=("start-ns",)):
        namespaces.setdefault(prefix, uri)
    for prefix, uri in namespaces.items():
        ET.register_namespace(prefix, uri)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise _HoldBack(f"OME-XML does not parse ({exc})") from exc
    found: dict[str, str] = {}
    files = {u.get("FileName") for u in root.iter() if _local(u.tag) == "UUID"} - {None}
    uuids = {(u.text or "").strip() for u in root.iter() if _local(u.tag) == "UUID"}
    own = root.get("UUID")
    if len(files) > 1 or (own and uuids - {own, ""}):
        raise _HoldBack("a multi-file OME-TIFF (planes in other files) is not supported")
    if any(_local(e.tag) == "BinaryOnly" for e in root.iter()):
        raise _HoldBack("OME-TIFF whose metadata lives in a companion file is not supported")
    for image in (e for e in root.iter() if _local(e.tag) == "Image"):
        if _ASSOCIATED.search(image.get("Name", "")):
            raise _HoldBack(f"OME-TIFF holds a {image.get('Name')!r} image (label/macro)")

    def note(el: ET.Element, prefix: str) -> None:
        for key, value in el.attrib.items():
            if value and not key.endswith("ID") and _local(key) not in {"ID"}:
                found.setdefault(f"ome.{prefix}.{_local(key)}", value)
        if el.text and el.text.strip():
            found.setdefault(f"ome.{prefix}", el.text.strip())

    def clean(el: ET.Element) -> None:
        for child in list(el):
            name = _local(child.tag)
            if name in OME_DROP:
                if name not in {"UUID", "StructuredAnnotations", "ROI"}:
                    for sub in child.iter():
                        note(sub, _local(sub.tag))
                elif name == "UUID":
                    note(child, "UUID")
                el.remove(child)
            else:
                clean(child)
        for key in list(el.attrib):
            name = _local(key)
            if name in OME_DROP_ATTRS and not (name == "Name" and _local(el.tag) in OME_KEEP_NAME):
                value = el.attrib.pop(key)
                if value:
                    found.setdefault(f"ome.{_local(el.tag)}.{name}", value)

    clean(root)
    root.attrib.pop("UUID", None)
    text = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>' + text, found


class _StringReader:
    """A file-like view of a str for ``ET.iterparse``."""

    def __init__(self, text: str) -> None:
        self._data, self._pos = text.encode("utf-8"), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk, self._pos = self._data[self._pos : end], min(end, len(self._data))
        return chunk


def _flavours(path: Path) -> set[str]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return set(tif.flags)
    except Exception as exc:  # tifffile raises many kinds on corrupt files
        raise _HoldBack(f"not a readable TIFF ({exc})") from exc


def _plan_ndpi(reader: TiffReader, chain: list[Ifd], size: int) -> _Plan:
    if not reader.big and size >= 2**32:
        raise _HoldBack("NDPI over 4 GiB (offsets need the vendor's 64-bit extension)")
    plan = _Plan("NDPI", [])
    for i, ifd in enumerate(chain):
        if 65421 not in ifd.entries:
            raise _HoldBack(f"NDPI directory {i} has no source-lens tag (cannot tell a macro)")
        lens = _first(reader, ifd, 65421)
        if lens > 0:
            plan.keep.append(i)
        for tag, name in NDPI_IDENTIFYING.items():
            if tag in ifd.entries and ifd.entries[tag].type == 2:
                value = _raw_text(ifd.entries[tag]).strip()
                if value:
                    plan.found.setdefault(f"ndpi.{name}", value)
        comments = _raw_text(ifd.entries.get(65449))
        for m in re.finditer(r"^[;]?([\w.\[\]/ ]*?(?:S/N|Serial\w*|Date|Created|Updated))=(.+)$",
                             comments.replace("\r", "\n"), re.M):  # fmt: skip
            plan.found.setdefault(f"ndpi.{m.group(1).strip()}", m.group(2).strip())
    dropped = len(chain) - len(plan.keep)
    plan.notes.append(f"NDPI: {dropped} macro/map image(s) removed")

    def edit(i: int, ifd: Ifd) -> dict[int, Entry]:
        return _kept_entries(ifd, NDPI_TAGS)

    plan.edit = edit
    return plan


def _plan_svs(reader: TiffReader, chain: list[Ifd]) -> _Plan:
    plan = _Plan("Aperio SVS", [])
    for i, ifd in enumerate(chain):
        desc = _description(reader, ifd)
        second = desc.splitlines()[1] if len(desc.splitlines()) > 1 else ""
        tiled = 322 in ifd.entries
        macro_flag = int(_first(reader, ifd, 254)) & 8
        associated = bool(_ASSOCIATED.match(second.strip())) or macro_flag
        # Levels are tiled; the first stripped image after level 0 is the thumbnail; any
        # other stripped image is an associated image (label, macro) and goes.
        if i == 0 or (tiled and not associated) or (i == 1 and not associated):
            plan.keep.append(i)
        _, found = scrub_aperio(desc)
        for key, value in found.items():
            plan.found.setdefault(f"svs.{key}", value)
    plan.notes.append(f"SVS: {len(chain) - len(plan.keep)} label/macro image(s) removed")

    def edit(i: int, ifd: Ifd) -> dict[int, Entry]:
        entries = _kept_entries(ifd)
        desc = _description(reader, ifd)
        if desc:
            entries[270] = ascii_entry(270, scrub_aperio(desc)[0])
        return entries

    plan.edit = edit
    return plan


def _check_planes(reader: TiffReader, chain: list[Ifd]) -> None:
    """Every directory must be a plane of the first image or a reduced level of it."""
    w0, h0 = _size(reader, chain[0])
    for i, ifd in enumerate(chain[1:], start=1):
        w, h = _size(reader, ifd)
        if (w, h) == (w0, h0):
            continue
        smaller = w < w0 and h < h0 and w > 0 and h > 0
        if smaller and abs((w / h) / (w0 / h0) - 1) < 0.05:
            continue
        raise _HoldBack(
            f"page {i} ({w}x{h}) is neither a plane nor a reduced level of page 0 "
            f"({w0}x{h0}): it may be a label or macro image"
        )


def _plan_ome(reader: TiffReader, chain: list[Ifd]) -> _Plan:
    # Every page stays (TiffData counts IFDs); label/macro images are refused in scrub_ome.
    cleaned, found = scrub_ome(_raw_text(chain[0].entries.get(270)))
    plan = _Plan("OME-TIFF", list(range(len(chain))), found={**found})
    plan.notes.append("OME-XML: experimenters, annotations, ROIs, names, dates removed")

    def edit(i: int, ifd: Ifd) -> dict[int, Entry]:
        entries = _kept_entries(ifd)
        if i == 0:
            entries[270] = ascii_entry(270, cleaned)
        return entries

    plan.edit = edit
    return plan


def _plan_plain(reader: TiffReader, chain: list[Ifd], flavours: set[str]) -> _Plan:
    _check_planes(reader, chain)
    plan = _Plan("TIFF", list(range(len(chain))))
    imagej = "imagej" in flavours

    def edit(i: int, ifd: Ifd) -> dict[int, Entry]:
        entries = _kept_entries(ifd)
        desc = _description(reader, ifd)
        if imagej and desc.startswith("ImageJ="):
            kept = scrub_imagej(desc)
            if kept:
                entries[270] = ascii_entry(270, kept)
        return entries

    plan.edit = edit
    return plan


def _identifying_strings(reader: TiffReader, chain: list[Ifd], found: dict[str, str]) -> None:
    """Record the values of dropped free-text tags (DateTime, Artist, ...) as identifiers."""
    names = {269: "DocumentName", 285: "PageName", 306: "DateTime", 315: "Artist",
             316: "HostComputer", 33432: "Copyright"}  # fmt: skip
    for ifd in chain:
        for tag, name in names.items():
            value = _raw_text(ifd.entries.get(tag)).strip()
            if value:
                found.setdefault(f"tiff.{name}", value)


def plan_tiff(reader: TiffReader, chain: list[Ifd], flavours: set[str], size: int) -> _Plan:
    """Decide which directories and tags of a TIFF survive (raises ``_HoldBack``)."""
    unknown = flavours - KNOWN_FLAVOURS
    if unknown:
        raise _HoldBack(f"{'/'.join(sorted(unknown))} TIFF: its vendor metadata is not cleaned")
    for ifd in chain:
        if int(_first(reader, ifd, 259)) == 6:
            raise _HoldBack("old-style JPEG TIFF (compression 6) is not supported")
    if "ndpi" in flavours:
        plan = _plan_ndpi(reader, chain, size)
    elif "svs" in flavours:
        plan = _plan_svs(reader, chain)
    elif "ome" in flavours:
        plan = _plan_ome(reader, chain)
    else:
        plan = _plan_plain(reader, chain, flavours)
    _identifying_strings(reader, chain, plan.found)
    if not plan.keep:
        raise _HoldBack("no image left after removing label and macro images")
    return plan


def _write(reader: TiffReader, chain: list[Ifd], plan: _Plan, out, drop: frozenset[int]) -> None:
    writer = TiffWriter(out, reader.bo, reader.big, ndpi=plan.flavour == "NDPI")
    assert plan.edit is not None

    def write_one(ifd: Ifd, entries: dict[int, Entry]) -> tuple[int, int]:
        blocks = reader.blocks(ifd)
        entries = dict(entries)
        for off_tag, _ in DATA_TAGS:
            if off_tag in blocks and off_tag in entries:
                new = [writer.copy_block(reader.fh, o, n) for o, n in blocks[off_tag]]
                entries[off_tag] = writer.offsets_entry(off_tag, new)
        if ifd.sub and SUBIFDS in entries:
            subs = [{t: e for t, e in _kept_entries(s).items() if t not in drop} for s in ifd.sub]
            offsets = [write_one(s, e)[0] for s, e in zip(ifd.sub, subs, strict=True)]
            entries[SUBIFDS] = writer.offsets_entry(SUBIFDS, offsets)
        else:
            entries.pop(SUBIFDS, None)
        return writer.write_ifd(entries)

    previous: int | None = None
    for i in plan.keep:
        entries = {t: e for t, e in plan.edit(i, chain[i]).items() if t not in drop}
        at, ptr = write_one(chain[i], entries)
        writer.link(previous, at)
        previous = ptr


def leftover_identifiers(path: Path, values: dict[str, str]) -> list[str]:
    """Identifier values (of a searchable length) still present in the written file."""
    needles = {}
    for key, value in values.items():
        for form in {value, value.strip()}:
            if len(form) >= MIN_SEARCH_LEN:
                needles[form.encode("utf-8")] = key
    if not needles:
        return []
    hits, tail, longest = set(), b"", max(len(n) for n in needles)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            window = tail + chunk
            hits.update(key for n, key in needles.items() if n in window)
            tail = window[-(longest - 1) :] if longest > 1 else b""
    return sorted(hits)


def _check_opens(path: Path) -> None:
    """The written file must open and decode (an unreadable input gives an unreadable copy)."""
    from shindan.io.slide import open_slide

    try:
        with open_slide(path) as slide:
            w, h = slide.dimensions
            slide.read_region((w // 2, h // 2), 0, (1, 1))
    except Exception as exc:  # InputError, or a reader's own error on corrupt data
        raise _HoldBack(f"the slide does not decode ({exc})") from exc


def _temp_path(dst: Path) -> Path:
    # The suffix stays last: readers (and the check below) pick the format by it.
    return dst.with_name(f".part-{os.getpid()}-{dst.name}")


def rewrite_tiff(
    src: Path,
    dst: Path,
    extra_identifiers: dict[str, str],
    check: bool = True,
    drop: frozenset[int] = frozenset(),
) -> tuple[_Plan, float]:
    """Write the de-identified TIFF ``dst`` from ``src`` (atomically); raise ``_HoldBack``.

    ``check`` opens the result with :func:`shindan.io.open_slide`; ``drop`` names tags to
    leave out beyond the allow-list (plain images drop the ICC profile).

    Returns the plan that was applied and the seconds it took.
    """
    start = time.perf_counter()
    flavours = _flavours(src)
    size = src.stat().st_size
    tmp = _temp_path(dst)
    try:
        with open(src, "rb") as fh:
            try:
                reader = TiffReader(fh, size)
                chain = reader.chain()
                plan = plan_tiff(reader, chain, flavours, size)
                with open(tmp, "xb") as out:
                    _write(reader, chain, plan, out, drop)
            except TiffStructureError as exc:
                raise _HoldBack(f"unreadable TIFF structure ({exc})") from exc
        if check:
            _check_opens(tmp)
        left = leftover_identifiers(tmp, {**extra_identifiers, **plan.found})
        if left:
            raise _HoldBack(f"identifiers still found after cleaning: {', '.join(left)}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return plan, time.perf_counter() - start


def deidentify_slide(
    src: Path, dst: Path, pseudo: object, case: str, identifiers: Identifiers
) -> Exported | HeldBack:
    """Write a de-identified copy of a whole-slide TIFF (SVS, NDPI, OME-TIFF, plain TIFF).

    Parameters
    ----------
    src : Path
        The slide; never modified.
    dst : Path
        The new file (must not exist). Keep the source's suffix (``.svs``, ``.ndpi``,
        ``.ome.tiff``): readers choose the format by it.
    pseudo : Pseudonymiser
        Unused for slides (no dates or UIDs are kept); accepted for a uniform interface.
    case : str
        The patient's pseudonym, recorded in the result.
    identifiers : Identifiers
        What the export knows about the patient; the identifying values met in the slide's
        metadata (file name, dates, user, scanner serial, ...) are added to it, and none of
        them may remain in the written file.

    Returns
    -------
    Exported or HeldBack
        ``Exported`` (``path`` is ``dst`` as given, ``modality`` "SM") when written;
        ``HeldBack`` with the reason when the slide cannot be cleaned with confidence (nothing
        is written then).

    Raises
    ------
    InputError
        ``src`` is missing or ``dst`` already exists.

    Examples
    --------
    >>> from shindan.deid.records import Identifiers
    >>> r = deidentify_slide(Path("CMU-1.svs"), Path("out/A.svs"), None, "KYOTO-AB",
    ...                      Identifiers("CMU-1"))  # doctest: +SKIP
    >>> r.identifiers.values["svs.User"]  # doctest: +SKIP
    'b414003d-95c6-48b0-9369-8010ed517ba7'
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    if dst.exists():
        raise InputError(f"{dst}: already exists (an export never overwrites a file)")
    try:
        known = {**identifiers.values, "patient_id": identifiers.patient_id}
        plan, _ = rewrite_tiff(src, dst, known)
    except _HoldBack as exc:
        return HeldBack(src, str(exc))
    except OSError as exc:
        return HeldBack(src, f"cannot read or write ({exc.strerror or exc})")
    found = {**plan.found, **identifiers.values}
    profile = f"slide {plan.flavour}: " + "; ".join(
        [*plan.notes, "identifying tags dropped (allow-list), pixel data copied unchanged"]
    )
    return Exported(
        path=dst,
        case=case,
        study="",
        modality="SM",
        profile=profile,
        identifiers=Identifiers(identifiers.patient_id, found),
    )
