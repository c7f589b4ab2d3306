"""Expand command-line inputs (files and folders) into the files a command will read."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
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


# Vector annotation files; label masks are the image suffixes of MASK_SUFFIXES.
VECTOR_SUFFIXES = (".geojson", ".json", ".xml")
# An annotation file's stem is its image's stem, optionally followed by one of these.
ANNOTATION_STEM_SUFFIXES = ("_mask", "_labels", "_annotations")


def _base_stem(stem: str) -> str | None:
    """``stem`` without its ``_mask``/``_labels``/``_annotations`` ending (None if none)."""
    for s in ANNOTATION_STEM_SUFFIXES:
        if stem.endswith(s) and len(stem) > len(s):
            return stem[: -len(s)]
    return None


def pair_annotations(
    inputs: Sequence[str | Path],
    annotations: Sequence[str | Path],
    *,
    suffixes: Iterable[str] = SLIDE_SUFFIXES,
    log: Callable[[str], None] | None = None,
) -> list[tuple[Path, Path]]:
    """(image, annotation file) pairs of training inputs, matched by file stem.

    ``inputs`` are expanded with :func:`expand_inputs` (folders recursively, files with
    ``suffixes``); ``annotations`` are files or folders (not recursive). An annotation file
    matches an image whose stem is its own stem, optionally without ``_mask``, ``_labels`` or
    ``_annotations``. Rules:

    * a file is never its own annotation (a folder can be both inputs and annotations);
    * an input named like a label mask of another input (``X_mask.png`` next to ``X.jpg``)
      is that input's annotation, not an image to train on;
    * of several matching files, polygons (GeoJSON, JSON, XML) win over label masks, then
      the exact stem over a suffixed one, then the first in the order given;
    * images without any annotation are reported once through ``log`` (default: stderr).

    Raises :class:`InputError` for a missing annotation path or when no image has an
    annotation.

    Examples
    --------
    >>> pair_annotations(["data/"], ["data/"])  # doctest: +SKIP
    [(PosixPath('data/a.png'), PosixPath('data/a.geojson')),
     (PosixPath('data/b.png'), PosixPath('data/b_mask.png'))]
    """
    from shindan.io.annotations import MASK_SUFFIXES

    say = log or (lambda s: print(s, file=sys.stderr))
    files = expand_inputs(inputs, suffixes)
    stems = {f.stem for f in files}
    # a mask-named input next to its image is that image's annotation, not a training image
    images = [
        f for f in files if not (f.suffix.lower() in MASK_SUFFIXES and _base_stem(f.stem) in stems)
    ]
    allowed = {*VECTOR_SUFFIXES, *MASK_SUFFIXES}
    candidates: list[Path] = []
    for a in map(Path, annotations):
        if a.is_dir():
            candidates += sorted(
                f
                for f in a.iterdir()
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in allowed
            )
        elif a.is_file():
            candidates.append(a)
        else:
            raise InputError(f"{a}: no such file or folder")
    by_stem: dict[str, list[tuple[tuple[int, int, int], Path]]] = {}
    for order, f in enumerate(candidates):
        vector = f.suffix.lower() in VECTOR_SUFFIXES
        base = _base_stem(f.stem)
        by_stem.setdefault(f.stem, []).append(((not vector, 0, order), f))
        if base:
            by_stem.setdefault(base, []).append(((not vector, 1, order), f))
    pairs, missing = [], []
    for img in images:
        own = img.resolve()
        found = [(rank, f) for rank, f in by_stem.get(img.stem, []) if f.resolve() != own]
        if found:
            pairs.append((img, min(found, key=lambda rf: rf[0])[1]))
        else:
            missing.append(img.name)
    if not pairs:
        raise InputError(
            "no image has an annotation file with the same name stem (optionally + "
            f"{', '.join(ANNOTATION_STEM_SUFFIXES)})"
        )
    if missing:
        say(f"no annotation for {len(missing)} image(s), skipped: {', '.join(missing[:5])}")
    return pairs


def unique_names(names: Sequence[str]) -> list[str]:
    """Output names for inputs: each name as given, numbered ``_2``, ``_3`` … when several
    inputs share it, never colliding with another input's own name.

    Examples
    --------
    >>> unique_names(["slide", "slide", "slide_2"])
    ['slide', 'slide_3', 'slide_2']
    """
    taken = set(names)
    seen: set[str] = set()
    out = []
    for name in names:
        if name in seen:
            k = 2
            while f"{name}_{k}" in taken:
                k += 1
            name = f"{name}_{k}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out
