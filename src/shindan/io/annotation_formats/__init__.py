"""Annotation formats behind one interface: ``read(path) -> Annotations`` and
``write(annotations, path)``, chosen by name or from the file.

Every format module registers one :class:`AnnotationFormat` (its name, file suffixes, what
it can carry, a content test, a reader and a writer). :func:`read_annotations` and
:func:`write_annotations` pick the format; :func:`losses` says what a format cannot carry of
given annotations. See :mod:`shindan.io.annotation_formats.model` for the model.

Examples
--------
>>> sorted(f.name for f in list_formats())[:3]
['asap', 'coco', 'dicom-ann']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shindan.errors import AnnotationError
from shindan.io.annotation_formats.model import (
    AnnotatedObject,
    Annotations,
    MultiPolygon,
    Point,
    Polygon,
)
from shindan.io.annotation_formats.vocabulary import (
    Vocabulary,
    default_vocabulary,
    load_vocabulary,
)

__all__ = [
    "AnnotatedObject",
    "AnnotationFormat",
    "Annotations",
    "FormatOptions",
    "MultiPolygon",
    "Point",
    "Polygon",
    "Vocabulary",
    "default_vocabulary",
    "detect_format",
    "get_format",
    "list_formats",
    "load_vocabulary",
    "losses",
    "read_annotations",
    "register_format",
    "write_annotations",
]

# What a format can carry (the rest is lost on writing, see :func:`losses`).
CARRIES = ("holes", "points", "multipolygons", "instance_ids", "classes", "properties")
# "vertices": coordinates kept as written (masks rasterise); "mpp", "image_size": recorded.
CARRIES_META = ("vertices", "mpp", "image_size")


@dataclass(frozen=True)
class FormatOptions:
    """What some formats need besides the file.

    Attributes
    ----------
    vocabulary : Vocabulary
        Mask values, colours, DICOM codes and per-format names of the classes.
    label : str
        Class of objects the file names no class for (instance masks; '' keeps them unnamed).
    image : Path or None
        The annotated image; DICOM outputs reference it (it must then be DICOM).
    """

    vocabulary: Vocabulary = field(default_factory=default_vocabulary)
    label: str = ""
    image: Path | None = None


Reader = Callable[[Path, FormatOptions], Annotations]
Writer = Callable[[Annotations, Path, FormatOptions], None]


@dataclass(frozen=True)
class AnnotationFormat:
    """One registered format."""

    name: str
    description: str
    suffixes: tuple[str, ...]
    carries: frozenset[str]
    reader: Reader
    writer: Writer
    sniff: Callable[[Path], bool] = lambda path: False
    # what writing needs besides the annotations: "image_size" (masks paint level 0),
    # "source" (DICOM objects reference a DICOM image, given with --image)
    requires: frozenset[str] = frozenset()

    def read(self, path: str | Path, options: FormatOptions | None = None) -> Annotations:
        """Annotations of a file in this format."""
        p = Path(path)
        if not p.exists():
            raise AnnotationError(f"{p}: no such file")
        if p.is_dir():
            raise AnnotationError(f"{p}: is a folder, not an annotation file")
        return self.reader(p, options or FormatOptions())

    def write(
        self, annotations: Annotations, path: str | Path, options: FormatOptions | None = None
    ) -> None:
        """Write ``annotations`` to ``path`` (as given: callers make it atomic)."""
        self.writer(annotations, Path(path), options or FormatOptions())


_REGISTRY: dict[str, AnnotationFormat] = {}


def register_format(fmt: AnnotationFormat) -> AnnotationFormat:
    """Add a format to the registry (a format module calls this once, on import)."""
    _REGISTRY[fmt.name] = fmt
    return fmt


def list_formats() -> list[AnnotationFormat]:
    """Every registered format, in registration order."""
    return list(_REGISTRY.values())


def get_format(name: str) -> AnnotationFormat:
    """The format called ``name`` (:class:`AnnotationError` naming the known ones if none)."""
    fmt = _REGISTRY.get(name.strip().lower())
    if fmt is None:
        raise AnnotationError(f"unknown annotation format {name!r}; known: {', '.join(_REGISTRY)}")
    return fmt


def detect_format(path: str | Path, *, for_writing: bool = False) -> AnnotationFormat:
    """The format of ``path`` from its suffix and, for reading, its content.

    Suffixes several formats share (``.json``, ``.xml``, ``.dcm``) are told apart by content
    when reading; for writing they need the format named (``--to``).
    """
    p = Path(path)
    suffix = "".join(p.suffixes[-2:]).lower() if len(p.suffixes) > 1 else p.suffix.lower()
    matches = [f for f in _REGISTRY.values() if suffix in f.suffixes]
    if not matches:
        matches = [f for f in _REGISTRY.values() if p.suffix.lower() in f.suffixes]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = sorted({s for f in _REGISTRY.values() for s in f.suffixes})
        raise AnnotationError(f"{p}: unknown annotation suffix (known: {', '.join(known)})")
    names = ", ".join(f.name for f in matches)
    if for_writing:
        raise AnnotationError(f"{p}: {p.suffix} may be {names}; name the format with --to")
    if not p.exists():
        raise AnnotationError(f"{p}: no such file")
    for f in matches:
        if f.sniff(p):
            return f
    raise AnnotationError(f"{p}: not recognised as {names}; name the format with --from")


def read_annotations(
    path: str | Path, fmt: str | None = None, options: FormatOptions | None = None
) -> Annotations:
    """Read an annotation file (format from ``fmt`` or from the file)."""
    p = Path(path)
    if not p.exists():
        raise AnnotationError(f"{p}: no such file")
    f = get_format(fmt) if fmt else detect_format(p)
    return f.read(p, options)


def write_annotations(
    annotations: Annotations,
    path: str | Path,
    fmt: str | None = None,
    options: FormatOptions | None = None,
) -> None:
    """Write annotations (format from ``fmt`` or from the suffix) to ``path`` as given."""
    f = get_format(fmt) if fmt else detect_format(path, for_writing=True)
    f.write(annotations, path, options)


def losses(annotations: Annotations, fmt: AnnotationFormat | str) -> list[str]:
    """What writing ``annotations`` as ``fmt`` loses, one sentence each (empty: nothing).

    Examples
    --------
    >>> sq = Polygon([[0, 0], [9, 0], [9, 9], [0, 9]], holes=[[[2, 2], [4, 2], [4, 4]]])
    >>> losses(Annotations([AnnotatedObject(sq, "tubule")]), "asap")
    ['asap cannot carry holes: 1 object(s) lose them']
    """
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    out = []
    for what in CARRIES:
        n = annotations.count(what)
        if n and what not in f.carries:
            verb = {
                "points": "are left out",
                "multipolygons": "become separate polygons",
                "classes": "lose their class",
            }.get(what, "lose them")
            out.append(f"{f.name} cannot carry {what.replace('_', ' ')}: {n} object(s) {verb}")
    if "vertices" not in f.carries and len(annotations):
        out.append(f"{f.name} rasterises outlines on the pixel grid (vertices are not kept)")
    if annotations.mpp is not None and "mpp" not in f.carries:
        out.append(f"{f.name} does not record µm/px ({annotations.mpp:g} is not written)")
    return out


def sniff_json(path: Path, test: Callable[[object], bool]) -> bool:
    """Whether a JSON file's parsed content passes ``test`` (False when it is not JSON)."""
    try:
        return bool(test(json.loads(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def _register_builtin() -> None:
    # one module per format, each registering itself on import; this order is the listing order
    import importlib

    for name in (
        "geojson",
        "imagescope",
        "asap",
        "labelme",
        "coco",
        "mask",
        "dicom_ann",
        "dicom_seg",
    ):
        importlib.import_module(f"shindan.io.annotation_formats.{name}")


_register_builtin()
