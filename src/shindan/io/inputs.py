"""Expand command-line inputs (files and folders) into the files a command will read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from shindan.errors import InputError

# Plain images every reader takes.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
# Whole-slide formats OpenSlide (and tifffile for OME-TIFF) open, plus plain images.
SLIDE_SUFFIXES = IMAGE_SUFFIXES | {
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".svslide",
    ".bif",
    ".dcm",
}


def expand_inputs(
    inputs: Sequence[str | Path], suffixes: Iterable[str] = SLIDE_SUFFIXES
) -> list[Path]:
    """Files as given; folders expanded recursively to files with ``suffixes`` (sorted).

    Hidden files are skipped. Raises :class:`InputError` for a missing path, a folder with
    no matching file, or no input at all.

    Examples
    --------
    >>> expand_inputs(["slides/", "extra.png"])  # doctest: +SKIP
    [PosixPath('slides/a.svs'), PosixPath('slides/b.ndpi'), PosixPath('extra.png')]
    """
    allowed = {s.lower() for s in suffixes}
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in allowed
            )
            if not found:
                raise InputError(f"{p}: folder holds no {'/'.join(sorted(allowed))} files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not out:
        raise InputError("no input files given")
    return out
