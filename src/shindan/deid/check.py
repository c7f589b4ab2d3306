"""``shindan deid check``: look for what must be gone from an export.

Every file of the folder is scanned

* by structure: every DICOM element (private ones, and inside every sequence), every tag of
  every TIFF page (ImageDescription and OME-XML included), PNG text/time/EXIF chunks, JPEG
  APPn and COM segments, and the strings of JSON files (the manifest);
* byte for byte: every identifier the linkage table knows, in UTF-8 (as written and upper
  case), UTF-16 (both byte orders) and, for Japanese text, Shift-JIS, EUC-JP and ISO-2022-JP;
* by name: every file and folder name must be one an export makes (pseudonyms, kinds and
  counters), never an input's name.

Besides the known identifiers, text fields are searched for identifier patterns (phone
numbers, e-mail addresses, labels such as "氏名" or "MRN: 123456") and for dates written in
free text. Dates in DICOM date elements are legitimate (they are shifted per patient) and are
not reported; an original date the table knows is reported wherever it appears in the files
of its own patient (another patient's shifted dates may coincide with it by chance).
"""

from __future__ import annotations

import functools
import json
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "Known", "check_export", "known_from_table"]

MIN_LEN = 4  # shorter values match unrelated text and compressed bytes by chance
SMALL = 4 << 20  # files up to this size are searched for every patient's values
MIN_DIGITS = 6  # a number-only value shorter than this is not searched (codes, counters)
_CHUNK = 1 << 23

# Names an export writes (see shindan.deid.export): nothing else is expected in it.
EXPORT_NAME = re.compile(
    r"^(manifest\.json|DICOMDIR|no-study|fileset-\d{2,}|[PS]\d{4,7}|I\d{6,7}"
    r"|[A-Za-z0-9][A-Za-z0-9_-]{0,31}-[A-Z2-7]{10}|S[A-Z2-7]{8}"
    r"|[A-Z0-9]{1,16}-\d{5,}\.dcm"
    r"|slide-\d{4,}\.(svs|ndpi|tiff?|ome\.tiff?)|image-\d{4,}\.(jpe?g|png|tiff?|bmp))$"
)
PSEUDONYM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}-[A-Z2-7]{10}$")

PATTERNS = {
    "phone number": re.compile(
        r"(?<![A-Za-z0-9.])(0\d{1,4}-\d{1,4}-\d{3,4}|0[5789]0-?\d{4}-?\d{4}"
        r"|\+\d{1,3}[ -]\d{1,4}[ -]\d{2,4}[ -]\d{3,4}|\(\d{3}\) ?\d{3}-\d{4})(?![A-Za-z0-9.])"
    ),
    "e-mail address": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "identifier label": re.compile(
        r"氏名|患者名|患者ＩＤ|患者ID|患者番号|生年月日|住所|電話番号|カルテ番号|診察券|保険証"
        r"|(?i:patient[ _]?name|patient[ _]?id\b|date of birth|medical record|social security)"
        r"|\b(?:DOB|MRN|SSN)\b"
    ),
    "MRN-like key": re.compile(
        r"(?i)\b(?:id|no|nr|number|chart|record|pid)\s*[:#=]\s*[A-Z]{0,3}\d{4,}\b"
    ),
}
DATE_PATTERNS = re.compile(
    r"(?<![\d.])(?:(?:19|20)\d\d[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:19|20)\d\d)(?![\d.])"
    # YYYYMMDD alone as a word: not a run of digits inside a hex digest or a UID
    r"|(?<![A-Za-z0-9.])(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?![A-Za-z0-9.])"
    r"|(?:19|20)\d\d\s*年\s*\d{1,2}\s*月|(?:令和|平成|昭和|大正)\s*(?:\d{1,2}|元)\s*年"
)
# DICOM value representations holding free text (dates there are not expected).
_FREE_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC"})
_TEXT_VRS = _FREE_TEXT_VRS | {"PN", "AE", "CS", "UR"}
# Device and software versions may carry release dates: not a patient's date.
_DATE_EXEMPT = frozenset(
    {"SoftwareVersions", "DeidentificationMethod", "ImplementationVersionName", "Software"}
)
# Kept by Retain Device Identity; labels of values recorded elsewhere that name a device/vendor.
_DEVICE_KEYWORDS = (
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "StationName",
    "SoftwareVersions",
)
_DEVICE_LABEL = re.compile(r"^Institution|ScanScope|Serial|Scanner|Station|Manufacturer", re.I)
_DATE_VALUE = re.compile(r"^\d{8}|^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")


@dataclass(frozen=True)
class Finding:
    """Something that should not be in the export: ``file: where: what``."""

    file: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.what}"


@dataclass(frozen=True)
class Known:
    """An identifier to look for: what it was (``label``), its value, and the patient's
    pseudonym (``case``) when it is a date (searched only in that patient's files)."""

    label: str
    value: str
    case: str | None = None

    @property
    def is_date(self) -> bool:
        return bool(_DATE_VALUE.match(self.value.strip()))


def known_from_table(table, secret: bytes | None = None, cases=None) -> list[Known]:
    """The identifiers of the rows of a :class:`~shindan.deid.linkage.LinkageTable` (all, or
    those of ``cases``).

    With the site ``secret``, an original date that equals one of the same patient's dates
    after the shift is left out: the export holds that value legitimately (a patient seen
    on two days exactly one shift apart), so finding it proves nothing.
    """
    from shindan.deid.pseudonyms import Pseudonymiser

    out = []
    for row in table.rows.values():
        if cases is not None and row.pseudonym not in cases:
            continue
        values = [(key, v) for key, vs in row.identifiers.items() for v in vs]
        shifted: set[str] = set()
        if secret is not None:
            pseudo = Pseudonymiser(secret, row.site)
            for _, v in values:
                if re.fullmatch(r"\d{8}(\d{2,}.*)?", v.strip()):
                    try:
                        shifted.add(pseudo.shift_date(v.strip()[:8], row.patient_id))
                    except ValueError:  # not a calendar date
                        continue
        out.append(Known("PatientID", row.patient_id, row.pseudonym))
        out.extend(
            Known(key, v, row.pseudonym)
            for key, v in values
            if not (v.strip()[:8] in shifted and Known(key, v).is_date)
        )
    return out


# ----------------------------------------------------------------------------- needles


def _forms(value: str) -> list[str]:
    """The textual forms of a value: as given, and for DICOM person names the name with
    spaces and each name component (of searchable length)."""
    value = value.strip().strip("\x00")
    forms = [value]
    if "^" in value or "=" in value:
        forms.append(" ".join(p for p in re.split(r"[\^=]", value) if p).strip())
        forms.extend(p.strip() for p in re.split(r"[\^=]", value))
    if re.fullmatch(r"\d{8}", value):  # a DICOM date also written with separators
        y, m, d = value[:4], value[4:6], value[6:]
        forms += [f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}"]
    seen, out = set(), []
    for f in forms:
        if not any(c.isalnum() for c in f):
            continue  # "^^^^", "--": separators only
        if f.isdigit() and len(f) < MIN_DIGITS:
            continue  # "1234": study numbers and codes share short numbers
        long_enough = len(f.encode("utf-8")) >= MIN_LEN and (not f.isascii() or len(f) >= MIN_LEN)
        if f and long_enough and f not in seen:
            seen.add(f)
            out.append(f)
    return out


def _edge(text: str, first: bool) -> str:
    c = text[0] if first else text[-1]
    return (
        r"(?<![A-Za-z0-9])"
        if first and c.isascii() and c.isalnum()
        else (r"(?![A-Za-z0-9])" if not first and c.isascii() and c.isalnum() else "")
    )


@dataclass
class _Needle:
    known: Known
    form: str
    text_pattern: str  # case-insensitive, on decoded text
    raw: list[tuple[bytes, bytes | None]]  # byte forms, with an edge check when ASCII

    @property
    def text(self) -> re.Pattern:
        return _compile(self.text_pattern, re.I)


@functools.lru_cache(maxsize=1 << 16)
def _compile(pattern: str | bytes, flags: int = 0) -> re.Pattern:
    # compiled on first use only: most byte forms are never met, and re's own cache is small
    return re.compile(pattern, flags)


def _needle(known: Known, form: str) -> _Needle:
    body = re.escape(form)
    text = _edge(form, True) + body + _edge(form, False)
    raw: list[tuple[bytes, bytes | None]] = []
    byte_forms = {form.encode("utf-8"), form.upper().encode("utf-8")}
    for codec in ("utf-16-le", "utf-16-be"):
        byte_forms.add(form.encode(codec))
    if not form.isascii():
        for codec in ("shift_jis", "euc_jp", "iso2022_jp"):
            try:
                byte_forms.add(form.encode(codec))
            except UnicodeEncodeError:
                pass
    for b in sorted(byte_forms):
        check = None
        if b[:1].isalnum() or b[-1:].isalnum():
            lead = rb"(?<![A-Za-z0-9])" if b[:1].isalnum() else b""
            tail = rb"(?![A-Za-z0-9])" if b[-1:].isalnum() else b""
            check = lead + re.escape(b) + tail
        raw.append((b, check))
    return _Needle(known, form, text, raw)


def _needles(known: Iterable[Known]) -> list[_Needle]:
    out, seen = [], set()
    for k in known:
        for f in _forms(k.value):
            if (k.label, f) not in seen:
                seen.add((k.label, f))
                out.append(_needle(k, f))
    return out


# ----------------------------------------------------------------------------- scanning


@dataclass
class _Text:
    where: str
    text: str
    free: bool  # free text: dates and identifier patterns are findings here
    keyword: str = ""
    needles: bool = True  # False: the byte search alone looks for known values here


def _pseudonym_pattern(site: str | None) -> tuple[re.Pattern, re.Pattern]:
    """Pseudonyms (text and bytes), blanked before identifiers are searched: a site code may
    equal a name ("KYOTO", "Bench") without the pseudonym leaking anything."""
    head = re.escape(site) if site else r"[A-Za-z0-9_]{1,32}"
    text = rf"(?<![A-Za-z0-9_-]){head}(?:-[A-Z2-7]{{10}})?(?![A-Za-z0-9])"
    if not site:
        text = rf"(?<![A-Za-z0-9_-]){head}-[A-Z2-7]{{10}}(?![A-Za-z0-9])"
    return re.compile(text), re.compile(text.encode())


class _Scan:
    def __init__(
        self,
        rel: str,
        needles: list[_Needle],
        pseudonyms: tuple[re.Pattern, re.Pattern],
        raw_extra: list[_Needle] = (),
    ) -> None:
        self.rel = rel
        self.needles = needles
        self.raw_extra = list(raw_extra)
        self.exempt: set[str] = set()
        self.pseudonyms = pseudonyms
        self.findings: list[Finding] = []
        self.found_values: set[str] = set()

    def device(self, texts: Iterable[str]) -> None:
        """A device value (maker, model, serial number, station) kept under Retain Device
        Identity is not reported when another file recorded it as a scanner or institution
        identifier ("Philips" as InstitutionName, an SVS "ScanScope ID"): not searched here."""
        kept = " | ".join(t.lower() for t in texts if t and t.strip())
        if not kept:
            return
        for n in self.needles + self.raw_extra:
            if _DEVICE_LABEL.search(n.known.label) and n.form.lower() in kept:
                self.exempt.add(n.form)
        self.needles = [n for n in self.needles if n.form not in self.exempt]

    def add(self, where: str, what: str) -> None:
        self.findings.append(Finding(self.rel, where, what))

    def text(self, t: _Text) -> None:
        if not t.text:
            return
        bare = self.pseudonyms[0].sub(" ", t.text)
        for n in self.needles if t.needles else ():
            if n.text.search(bare):
                self.add(t.where, f"{n.known.label} {n.form!r}")
                self.found_values.add(n.form)
        if not t.free:
            return
        for name, pattern in PATTERNS.items():
            m = pattern.search(t.text)
            if m:
                self.add(t.where, f"{name} {m.group(0)!r}")
        if t.keyword not in _DATE_EXEMPT:
            m = DATE_PATTERNS.search(t.text)
            if m:
                self.add(t.where, f"date in text {m.group(0)!r}")

    def raw(self, path: Path) -> None:
        own = [(n, b, c) for n in self.needles for b, c in n.raw]
        if self.raw_extra:
            shared = _shared(self.raw_extra)
            pending, heads = own + shared[0], _heads(own + shared[0], shared)
        else:
            pending, heads = own, _heads(own)
        skip = self.found_values | self.exempt
        pending = [p if p[0].form not in skip else (p[0], b"", None) for p in pending]
        if not any(b for _, b, _ in pending):
            return
        longest = max(len(b) for _, b, _ in pending) + 1
        hit: set[int] = set()
        tail = b""
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                window = tail + chunk
                bare = None
                for i in _candidates(heads, len(pending), window):
                    _, b, check = pending[i]
                    if i in hit or not b or b not in window:
                        continue
                    if bare is None:  # only when a value is there at all
                        bare = self.pseudonyms[1].sub(b" ", window)
                    if b not in bare:
                        continue
                    if check is None or _compile(check).search(bare):
                        hit.add(i)
                tail = window[-longest:]
        done = set()
        for i in sorted(hit):
            n = pending[i][0]
            if n.form not in done:
                done.add(n.form)
                self.add("bytes", f"{n.known.label} {n.form!r}")


_SHARED: dict[int, tuple[list, tuple]] = {}


def _shared(needles: list[_Needle]) -> tuple[list, tuple]:
    """The byte forms of a needle list searched in many files, and their heads, made once."""
    key = id(needles)
    if key not in _SHARED or _SHARED[key][2] is not needles:
        flat = [(n, b, c) for n in needles for b, c in n.raw]
        _SHARED.clear()  # one shared list per check
        _SHARED[key] = (flat, _head_arrays(flat), needles)
    flat, heads, _ = _SHARED[key]
    return flat, heads


def _head_arrays(pending: list) -> tuple:
    import numpy as np

    return np.array(
        [int.from_bytes(b[:4].ljust(4, b"\0"), "little") for _, b, _ in pending], np.uint32
    ), np.array([len(b) < 4 for _, b, _ in pending], bool)


def _heads(pending: list, shared=None):
    """The first 4 bytes of each byte needle as little-endian uint32 (for :func:`_candidates`);
    ``shared``: the heads of the tail of ``pending``, computed once."""
    import numpy as np

    if len(pending) <= 256:
        return None
    if shared is None:
        return _head_arrays(pending)
    n = len(pending) - len(shared[0])
    head = _head_arrays(pending[:n])
    return np.concatenate([head[0], shared[1][0]]), np.concatenate([head[1], shared[1][1]])


def _candidates(heads, count: int, window: bytes) -> Iterable[int]:
    """Indices of the byte needles that may be in ``window``: all of them when few, else
    those whose first 4 bytes occur in it (every 4-byte run of the window, by numpy), so
    thousands of values cost one pass over the bytes rather than one search each."""
    if heads is None or len(window) < 4:
        return range(count)
    import numpy as np

    a = np.frombuffer(window, np.uint8).astype(np.uint32)
    grams = np.sort(a[:-3] | (a[1:-2] << 8) | (a[2:-1] << 16) | (a[3:] << 24))
    values, short = heads
    at = np.minimum(np.searchsorted(grams, values), len(grams) - 1)
    return np.flatnonzero((grams[at] == values) | short).tolist()


def _kind(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return "unreadable"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:2] == b"BM":
        return "bmp"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "other"


def _dicom(path: Path, scan: _Scan) -> None:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:
            scan.add("DICOM", f"cannot be read to check ({str(exc).splitlines()[0][:120]})")
            return
        scan.device(str(ds.get(k, "") or "") for k in _DEVICE_KEYWORDS)
        if (
            "DirectoryRecordSequence" not in ds
            and str(ds.get("PatientIdentityRemoved", "")) != "YES"
        ):
            scan.add("(0012,0062) PatientIdentityRemoved", "not YES: not de-identified")
        try:
            for where, elem in _walk(ds, ""):
                _dicom_element(where, elem, scan)
        except Exception as exc:
            scan.add("DICOM", f"an element cannot be decoded ({str(exc).splitlines()[0][:120]})")


def _walk(ds, prefix: str) -> Iterator:
    for elem in ds:
        where = f"{prefix}({elem.tag.group:04X},{elem.tag.element:04X})"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _walk(item, f"{where}[{i}] > ")
        else:
            yield (
                f"{where} {elem.keyword or ('private' if elem.tag.is_private else '')}".strip(),
                elem,
            )


def _dicom_element(where: str, elem, scan: _Scan) -> None:
    if elem.tag == 0x7FE00010 or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "SQ"):
        return  # pixel and binary data: the byte search covers them
    value = elem.value
    values = (
        list(value)
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
        else [value]
    )
    for v in values:
        if v is None:
            continue
        if isinstance(v, bytes):
            text = v.decode("latin-1")
            free = False
        else:
            text = str(v)
            free = elem.VR in _FREE_TEXT_VRS
        if elem.VR == "PN" and text.strip() and not PSEUDONYM.match(text.strip()):
            scan.add(where, f"person name {text!r}")
        # found without the table too: an export leaves a pseudonym as ID and no birth date
        if elem.keyword == "PatientID" and text.strip() and not PSEUDONYM.match(text.strip()):
            scan.add(where, f"patient ID {text!r} is not a pseudonym")
        if elem.keyword == "PatientBirthDate" and text.strip():
            scan.add(where, f"birth date {text!r}")
        if (
            elem.VR in _TEXT_VRS
            or elem.VR in ("UN",)
            or isinstance(v, bytes)
            or elem.VR in ("DA", "DT", "TM")
        ):
            scan.text(_Text(where, text, free, elem.keyword))
        elif elem.VR in ("IS", "DS", "UI", "AS"):
            scan.text(_Text(where, text, False, elem.keyword))


_DATE_TAGS = {306: "DateTime", 36867: "DateTimeOriginal", 36868: "DateTimeDigitized"}
_ASSOCIATED = re.compile(r"\b(label|macro)\b", re.I)


def _tiff(path: Path, scan: _Scan) -> None:
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tif = tifffile.TiffFile(path)
    except Exception as exc:
        scan.add("TIFF", f"cannot be read to check ({str(exc).splitlines()[0][:120]})")
        return
    with tif:
        # full pages (not tifffile's lighter frames): every tag of every page
        pages = [tif.pages[i].aspage() for i in range(len(tif.pages))]
        device = [pages[0].tags.get(code) for code in (271, 272, 305)] if pages else []
        scan.device(str(t.value) for t in device if t is not None)
        for s in tif.series:
            if s.name and s.name.lower() in ("label", "macro"):
                scan.add(f"series {s.name}", f"{s.name.lower()} image present")
        for i, page in enumerate(pages):
            pages.extend(getattr(page, "pages", None) or [])  # SubIFDs
            for tag in page.tags.values():
                where = f"page {i} tag {tag.code} {tag.name}"
                if tag.code in _DATE_TAGS:
                    scan.add(where, f"date tag {tag.value!r}")
                if tag.code == 65421 and tag.value in (-1, -2):
                    scan.add(where, "NDPI macro/map image present")
                for text in _tag_texts(tag.value):
                    scan.text(_Text(where, text, True, tag.name))
                if tag.code == 270 and isinstance(tag.value, str):
                    first = tag.value.split("|")[0]
                    if _ASSOCIATED.search(first):
                        scan.add(where, "label/macro image present")


def _tag_texts(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        if len(value) > 1 and value[1:2] == b"\x00":
            yield value.decode("utf-16-le", "replace")
        yield value.decode("latin-1")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tag_texts(k)
            yield from _tag_texts(v)
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], (str, bytes)):
        for v in value:
            yield from _tag_texts(v)


_PNG_TEXT = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}


def _png(path: Path, scan: _Scan) -> None:
    data = path.read_bytes()
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        name = kind.decode("latin-1")
        if kind in _PNG_TEXT or (
            kind[:1].islower()
            and kind not in (b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD", b"pHYs", b"tRNS")
        ):
            scan.add(f"chunk {name}", "metadata chunk present")
            text = body
            if kind == b"zTXt":
                key, _, rest = body.partition(b"\x00")
                try:
                    text = key + b" " + zlib.decompress(rest[1:])
                except zlib.error:
                    pass
            scan.text(_Text(f"chunk {name}", _decode(text), True))
        if kind == b"IEND":
            break
        pos += 12 + length


def _jpeg(path: Path, scan: _Scan) -> None:
    data = path.read_bytes()
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        body = data[pos + 4 : pos + 2 + length]
        if (
            marker == 0xFE
            or (0xE1 <= marker <= 0xEF and not (marker == 0xEE and body.startswith(b"Adobe")))
            or (marker == 0xE0 and not body.startswith(b"JFIF"))
        ):
            name = "COM" if marker == 0xFE else f"APP{marker - 0xE0}"
            scan.add(f"segment {name}", f"metadata segment present ({body[:12]!r})")
            scan.text(_Text(f"segment {name}", _decode(body), True))
        pos += 2 + length


def _json(path: Path, scan: _Scan) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        scan.add("JSON", f"cannot be read to check ({str(exc)[:120]})")
        return

    def walk(v, where: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}" if where else str(k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, str) and not where.endswith("sha256"):
            # patterns per string; known values by the byte search (a manifest has a few
            # strings per file, times every patient's values would be quadratic)
            scan.text(_Text(where, v, True, where.rsplit(".", 1)[-1], needles=False))

    walk(data, "")


def _decode(data: bytes) -> str:
    """Bytes of unknown encoding as text: UTF-8 when valid, else Shift-JIS, else Latin-1."""
    for codec in ("utf-8", "shift_jis"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


_SCANNERS = {"dicom": _dicom, "tiff": _tiff, "png": _png, "jpeg": _jpeg, "json": _json}


def _cases_by_file(folder: Path) -> tuple[dict[str, set[str]], str | None]:
    """File (relative path) → pseudonyms, and the site code, from the export's manifest
    (empty and None without one)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        cases = {
            f["path"]: {c for c in str(f.get("case", "")).split(",") if c}
            for f in manifest.get("files", [])
        }
        site = manifest.get("site")
        return cases, site if isinstance(site, str) and site else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}, None


def check_export(
    folder: str | Path, known: Sequence[Known] = (), *, progress: bool = False
) -> list[Finding]:
    """Scan every file of an export for identifiers; an empty list means clean.

    Parameters
    ----------
    folder : str or Path
        The export folder (``shindan deid --out``).
    known : sequence of Known
        The identifiers that must be gone (from the linkage table); without them only
        structure, patterns, dates and file names are checked.
    progress : bool
        Report files on stderr.

    Returns
    -------
    list of Finding
        One per thing found, in file order.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "manifest.json").write_text('{"note": "tel 03-1234-5678"}')
    >>> [str(f) for f in check_export(d)]
    ["manifest.json: note: phone number '03-1234-5678'"]
    """
    from shindan.errors import InputError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file; give the export folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    cases, site = _cases_by_file(folder)
    pseudonyms = _pseudonym_pattern(site)
    # Each file is searched for its own patients' values (from the manifest) in every
    # element and in its bytes; files up to SMALL bytes also for everyone's names and IDs
    # (cheap there, and quadratic in patients on large slides); files the manifest does not
    # list (and exports without one) for everything.
    by_case: dict[str | None, list[Known]] = {}
    for k in known:
        by_case.setdefault(k.case, []).append(k)
    needles = {c: _needles(ks) for c, ks in by_case.items()}
    common = needles.get(None, [])
    everyone = _needles(known)
    everyone_undated = [n for n in everyone if not n.known.is_date]
    findings: list[Finding] = []
    paths = sorted(folder.rglob("*"))
    for i, path in enumerate(paths):
        rel = path.relative_to(folder).as_posix()
        if not EXPORT_NAME.match(path.name):
            name_scan = _Scan(rel, everyone_undated, pseudonyms)
            name_scan.add("name", "not a name shindan deid writes (an input's name?)")
            name_scan.text(_Text("name", path.name, False))
            findings.extend(name_scan.findings)
        if not path.is_file():
            continue
        if progress:
            import sys

            print(f"check {i + 1}/{len(paths)} {rel}", file=sys.stderr)
        if rel in cases:
            own = common + [n for c in sorted(cases[rel]) for n in needles.get(c, [])]
            extra = everyone_undated if path.stat().st_size <= SMALL else []
        else:
            own, extra = everyone, []
        scan = _Scan(rel, own, pseudonyms, raw_extra=extra)
        kind = _kind(path)
        if kind in _SCANNERS:
            _SCANNERS[kind](path, scan)
        elif kind not in ("bmp",):
            scan.add("content", "not a DICOM, TIFF, PNG, JPEG, BMP or JSON file")
            with open(path, "rb") as fh:  # read as text: patterns and dates
                scan.text(_Text("content", _decode(fh.read(1 << 20)), True))
        scan.raw(path)
        findings.extend(scan.findings)
    return findings


def identifiers_of(values: Mapping[str, Iterable[str]], case: str) -> list[Known]:
    """:class:`Known` items for one patient from ``{label: values}``."""
    return [Known(k, v, case) for k, vs in values.items() for v in vs]
