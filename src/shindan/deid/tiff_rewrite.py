"""Rewrite a TIFF file directory by directory, copying image data bytes unchanged.

The de-identification of slides and TIFF images needs a new file that keeps the compressed
strips/tiles (so pixels are identical, nothing is re-encoded) while dropping whole images
(label, macro) and tags (dates, names, serial numbers). Writers such as tifffile re-create
tags from decoded metadata and cannot carry vendor tags (NDPI's MCU starts, say) faithfully,
so this module works at the level of the TIFF structure itself: parse each IFD into raw
entries, let the caller decide what to keep or replace, and write a fresh, compact file in
which only the kept directories and their data blocks exist (no unlinked leftovers).

Classic TIFF and BigTIFF, both byte orders, SubIFDs (recursively) are supported.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO

# Bytes per value of each TIFF field type.
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
TYPE_SIZES.update({16: 8, 17: 8, 18: 8})
_INT_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}

# (offsets tag, byte counts tag): the image data blocks of a directory.
DATA_TAGS = ((273, 279), (324, 325), (513, 514))
SUBIFDS = 330
MAX_ENTRIES = 4096  # more tags than any real writer uses: a hostile or corrupt file
MAX_IFDS = 100_000


class TiffStructureError(ValueError):
    """The file is not a TIFF this module can parse (truncated, looping, out of range)."""


@dataclass
class Entry:
    """One IFD entry: its field type, value count and the raw value bytes (file byte order)."""

    tag: int
    type: int
    count: int
    raw: bytes


@dataclass
class Ifd:
    """One image file directory: its entries by tag, and its SubIFDs."""

    entries: dict[int, Entry]
    sub: list[Ifd] = field(default_factory=list)


class TiffReader:
    """Parse the IFD chain of an open TIFF file (values read eagerly, image data not)."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size = fh, size
        head = self._read(0, 8)
        if head[:2] == b"II":
            self.bo = "<"
        elif head[:2] == b"MM":
            self.bo = ">"
        else:
            raise TiffStructureError("not a TIFF file")
        version = struct.unpack(self.bo + "H", head[2:4])[0]
        if version == 42:
            self.big = False
            self.first = struct.unpack(self.bo + "I", head[4:8])[0]
        elif version == 43:
            self.big = True
            rest = self._read(8, 8)
            self.first = struct.unpack(self.bo + "Q", rest)[0]
        else:
            raise TiffStructureError(f"TIFF version {version} unknown")
        self._seen: set[int] = set()

    def _read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise TiffStructureError(f"offset {offset} + {n} bytes beyond the end of the file")
        self.fh.seek(offset)
        data = self.fh.read(n)
        if len(data) != n:
            raise TiffStructureError("truncated file")
        return data

    def values(self, entry: Entry) -> tuple:
        """Decode the values of an entry (integers, floats, pairs for rationals, a str)."""
        bo, t, n = self.bo, entry.type, entry.count
        if t == 2:
            return (entry.raw.split(b"\x00", 1)[0].decode("latin-1"),)
        if t in _INT_FORMATS:
            return struct.unpack(f"{bo}{n}{_INT_FORMATS[t]}", entry.raw)
        if t in (11, 12):
            return struct.unpack(f"{bo}{n}{'f' if t == 11 else 'd'}", entry.raw)
        if t in (5, 10):
            flat = struct.unpack(f"{bo}{2 * n}{'I' if t == 5 else 'i'}", entry.raw)
            return tuple(zip(flat[::2], flat[1::2], strict=True))
        return (entry.raw,)

    def chain(self) -> list[Ifd]:
        """The main IFD chain, in file order."""
        out, offset = [], self.first
        while offset:
            if len(out) >= MAX_IFDS:
                raise TiffStructureError("too many directories")
            ifd, offset = self._ifd(offset, depth=0)
            out.append(ifd)
        if not out:
            raise TiffStructureError("no image directory")
        return out

    def _ifd(self, offset: int, depth: int) -> tuple[Ifd, int]:
        if offset in self._seen:
            raise TiffStructureError(f"directory at {offset} is referenced twice (a loop)")
        if depth > 4:
            raise TiffStructureError("SubIFDs nested too deep")
        self._seen.add(offset)
        count_size, entry_size, ptr = (8, 20, 8) if self.big else (2, 12, 4)
        n = struct.unpack(self.bo + ("Q" if self.big else "H"), self._read(offset, count_size))[0]
        if n == 0 or n > MAX_ENTRIES:
            raise TiffStructureError(f"directory at {offset} has {n} entries")
        body = self._read(offset + count_size, n * entry_size + ptr)
        entries: dict[int, Entry] = {}
        for i in range(n):
            e = body[i * entry_size : (i + 1) * entry_size]
            if self.big:
                tag, typ, cnt = struct.unpack(self.bo + "HHQ", e[:12])
                inline = e[12:20]
            else:
                tag, typ, cnt = struct.unpack(self.bo + "HHI", e[:8])
                inline = e[8:12]
            if typ not in TYPE_SIZES:
                continue  # unknown field type: the value cannot be carried (and is dropped)
            nbytes = TYPE_SIZES[typ] * cnt
            if nbytes > self.size:
                raise TiffStructureError(f"tag {tag}: {cnt} values do not fit in the file")
            if nbytes <= len(inline):
                raw = inline[:nbytes]
            else:
                at = struct.unpack(self.bo + ("Q" if self.big else "I"), inline)[0]
                raw = self._read(at, nbytes)
            entries[tag] = Entry(tag, typ, cnt, raw)
        nxt = struct.unpack(self.bo + ("Q" if self.big else "I"), body[-ptr:])[0]
        ifd = Ifd(entries)
        if SUBIFDS in entries:
            ifd.sub = [self._ifd(o, depth + 1)[0] for o in self.values(entries[SUBIFDS]) if o]
        return ifd, nxt

    def blocks(self, ifd: Ifd) -> dict[int, list[tuple[int, int]]]:
        """The image data blocks of a directory, ``{offsets tag: [(offset, nbytes), ...]}``."""
        out = {}
        for off_tag, cnt_tag in DATA_TAGS:
            if off_tag in ifd.entries:
                if cnt_tag not in ifd.entries:
                    raise TiffStructureError(f"tag {off_tag} without its byte counts")
                offs = self.values(ifd.entries[off_tag])
                cnts = self.values(ifd.entries[cnt_tag])
                if len(offs) != len(cnts):
                    raise TiffStructureError(f"tag {off_tag}: offsets and byte counts differ")
                for o, c in zip(offs, cnts, strict=True):
                    if o + c > self.size:
                        raise TiffStructureError("image data beyond the end of the file")
                out[off_tag] = list(zip(offs, cnts, strict=True))
        return out


class TiffWriter:
    """Write directories to a new TIFF: data blocks first, then each IFD with its values."""

    def __init__(self, fh: BinaryIO, bo: str, big: bool, ndpi: bool = False) -> None:
        self.fh, self.bo, self.big, self.ndpi = fh, bo, big, ndpi and not big
        self._copied: dict[tuple[int, int], int] = {}
        fh.write(b"II" if bo == "<" else b"MM")
        if big:
            fh.write(struct.pack(bo + "HHHQ", 43, 8, 0, 0))
            self._first_ptr = 8
        else:
            fh.write(struct.pack(bo + "HI", 42, 0))
            self._first_ptr = 4
            if self.ndpi:
                # NDPI: 64-bit IFD offsets (high 32 bits after the classic ones), as
                # tifffile reads any classic little-endian .ndpi; zero below 4 GiB.
                fh.write(b"\x00" * 4)

    def _align(self) -> None:
        if self.fh.tell() % 2:
            self.fh.write(b"\x00")

    def _check(self, offset: int) -> int:
        if not self.big and offset >= 2**32:
            raise TiffStructureError("output over 4 GiB does not fit a classic TIFF")
        return offset

    def copy_block(self, src: BinaryIO, offset: int, nbytes: int) -> int:
        """Copy one strip/tile's bytes from ``src``; the same block is written once."""
        key = (offset, nbytes)
        if key in self._copied:
            return self._copied[key]
        self._align()
        at = self._check(self.fh.tell())
        src.seek(offset)
        left = nbytes
        while left:
            chunk = src.read(min(left, 1 << 22))
            if not chunk:
                raise TiffStructureError("truncated image data")
            self.fh.write(chunk)
            left -= len(chunk)
        self._copied[key] = at
        return at

    def offsets_entry(self, tag: int, offsets: list[int]) -> Entry:
        typ, fmt = (16, "Q") if self.big else (4, "I")
        return Entry(tag, typ, len(offsets), struct.pack(f"{self.bo}{len(offsets)}{fmt}", *offsets))

    def write_ifd(self, entries: dict[int, Entry]) -> tuple[int, int]:
        """Write one IFD; return its offset and the position of its next-IFD pointer."""
        inline = 8 if self.big else 4
        # Out-of-line values first, each word-aligned.
        placed: dict[int, bytes] = {}
        for tag in sorted(entries):
            e = entries[tag]
            if len(e.raw) > inline:
                self._align()
                at = self._check(self.fh.tell())
                self.fh.write(e.raw)
                placed[tag] = struct.pack(self.bo + ("Q" if self.big else "I"), at)
            else:
                placed[tag] = e.raw.ljust(inline, b"\x00")
        self._align()
        at = self._check(self.fh.tell())
        n = len(entries)
        self.fh.write(struct.pack(self.bo + ("Q" if self.big else "H"), n))
        for tag in sorted(entries):
            e = entries[tag]
            head = "HHQ" if self.big else "HHI"
            self.fh.write(struct.pack(self.bo + head, tag, e.type, e.count) + placed[tag])
        ptr = self.fh.tell()
        self.fh.write(b"\x00" * inline)
        if self.ndpi:
            # The next-IFD offset's high bits, then one high-bits word per entry.
            self.fh.write(b"\x00" * (4 + 4 * n))
        return at, ptr

    def link(self, pointer_at: int | None, target: int) -> None:
        """Point the header (``None``) or an IFD's next pointer at ``target``."""
        end = self.fh.tell()
        self.fh.seek(self._first_ptr if pointer_at is None else pointer_at)
        self.fh.write(struct.pack(self.bo + ("Q" if self.big else "I"), target))
        self.fh.seek(end)


def ascii_entry(tag: int, text: str) -> Entry:
    """An ASCII entry (NUL-terminated, UTF-8 as OME-XML writers use)."""
    raw = text.encode("utf-8") + b"\x00"
    return Entry(tag, 2, len(raw), raw)
