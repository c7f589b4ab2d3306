"""``shindan annotations convert``: read one format, map class names, write another.

The output is checked before any work and written under a temporary name (see
:mod:`shindan.util.atomic`); a failure leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shindan.errors import AnnotationError, InputError
from shindan.io.annotation_formats import (
    AnnotationFormat,
    Annotations,
    FormatOptions,
    default_vocabulary,
    detect_format,
    get_format,
    load_vocabulary,
    losses,
)
from shindan.io.annotation_formats.vocabulary import Vocabulary
from shindan.util.atomic import atomic_path, check_output_file


@dataclass
class ConvertResult:
    """What a conversion wrote and what the output format could not carry."""

    annotations: Annotations
    source_format: str
    target_format: str
    notes: list[str] = field(default_factory=list)

    def summary(self, out: Path) -> str:
        a = self.annotations
        classes = [c or "(no class)" for c in a.classes()]
        shown = ", ".join(classes[:6]) + (", …" if len(classes) > 6 else "")
        mpp = f"{a.mpp:g} µm/px" if a.mpp is not None else "µm/px unknown"
        return (
            f"{out}: {len(a)} objects ({shown or 'none'}) from {self.source_format} to "
            f"{self.target_format}, {mpp}"
        )


def image_info(image: Path) -> tuple[tuple[int, int], float | None]:
    """(width, height) and µm/px of the annotated image (a DICOM image, a slide or a picture)."""
    from shindan.io.annotation_formats.dicom_common import pixel_spacing_mpp, source_size

    if not image.exists():
        raise InputError(f"{image}: no such file")
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(image, stop_before_pixels=True)
        if "Rows" in ds:
            return source_size(ds), pixel_spacing_mpp(ds)
    except (InvalidDicomError, OSError, ValueError, AttributeError, TypeError):
        pass
    from shindan.io import open_slide

    with open_slide(image) as slide:
        return tuple(int(v) for v in slide.dimensions), slide.mpp  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` → (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(
            f"--size must be WIDTHxHEIGHT in pixels, e.g. 1000x800, got {text!r}"
        ) from None
    if w < 1 or h < 1:
        raise InputError(f"--size must be positive, got {text!r}")
    return w, h


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 * max(a, b)


def convert(
    source: str | Path,
    target: str | Path,
    *,
    source_format: str | None = None,
    target_format: str | None = None,
    vocabulary: str | Path | Vocabulary | None = None,
    strict: bool = False,
    image: str | Path | None = None,
    mpp: float | None = None,
    size: tuple[int, int] | None = None,
    label: str = "",
    force: bool = False,
) -> ConvertResult:
    """Convert an annotation file to another format.

    Parameters
    ----------
    source, target : path
        Input file; output file (never overwritten unless ``force``).
    source_format, target_format : str, optional
        Format names (see ``shindan annotations formats``); default: from the files.
    vocabulary : path or Vocabulary, optional
        Class vocabulary (default: the built-in kidney vocabulary).
    strict : bool
        Refuse class names the vocabulary does not list.
    image : path, optional
        The annotated image: its size and µm/px fill what the file lacks; DICOM outputs
        reference it.
    mpp : float, optional
        µm per level-0 pixel when neither the file nor ``image`` records one.
    size : (width, height), optional
        Level-0 size when neither the file nor ``image`` gives it (masks need it).
    label : str
        Class of objects without one (e.g. an instance mask's).
    force : bool
        Replace an existing ``target``.

    Returns
    -------
    ConvertResult

    Examples
    --------
    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a.json").write_text(json.dumps({"shapes": [{"label": "Glomeruli",
    ...     "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}],
    ...     "imageWidth": 20, "imageHeight": 10}))
    >>> r = convert(d / "a.json", d / "a.geojson", mpp=0.5)
    >>> r.annotations.classes(), r.annotations.mpp, r.target_format
    (['glomerulus'], 0.5, 'geojson')
    """
    src, dst = Path(source), Path(target)
    out_fmt: AnnotationFormat = (
        get_format(target_format) if target_format else detect_format(dst, for_writing=True)
    )
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise InputError(f"{dst}: is the input file; give another output name")
    check_output_file(dst, force=force)
    if not src.exists():
        raise AnnotationError(f"{src}: no such file")
    in_fmt = get_format(source_format) if source_format else detect_format(src)
    if isinstance(vocabulary, Vocabulary):
        vocab = vocabulary.with_strict(strict) if strict else vocabulary
    elif vocabulary is not None:
        vocab = load_vocabulary(vocabulary, strict=True if strict else None)
    else:
        vocab = default_vocabulary(strict=strict)
    if mpp is not None and not mpp > 0:
        raise InputError(f"--mpp must be positive, got {mpp}")
    image_path = Path(image) if image is not None else None
    image_size, image_mpp = image_info(image_path) if image_path is not None else (None, None)
    if "source" in out_fmt.requires:
        from shindan.io.annotation_formats.dicom_common import load_source

        load_source(image_path, dst)  # checked before any work
    options = FormatOptions(vocabulary=vocab, label=label, image=image_path)

    anns = in_fmt.read(src, options)
    objects = [o.replace(label=vocab.canonical(o.label or label)) for o in anns.objects]
    notes: list[str] = []
    # an alias renames a user's class (Stroma -> interstitium): say so, never silently
    # (a change of case, or the format's own name for the class, is no news)
    renamed = {
        (o.label or label, new.label)
        for o, new in zip(anns.objects, objects, strict=True)
        if (o.label or label).casefold() != new.label.casefold()
        and (o.label or label) != vocab.output_name(new.label, in_fmt.name)
    }
    if renamed:
        pairs = ", ".join(f"{old} -> {new}" for old, new in sorted(renamed))
        notes.append(
            f"class names mapped through {vocab.source}: {pairs} "
            "(give --vocabulary FILE to keep other names)"
        )
    known_size = anns.image_size or image_size or size
    if anns.image_size and image_size and tuple(anns.image_size) != tuple(image_size):
        raise AnnotationError(
            f"{image_path}: is {image_size[0]}x{image_size[1]} pixels but {src} is for a "
            f"{anns.image_size[0]}x{anns.image_size[1]} image"
        )
    scale = anns.mpp or image_mpp or mpp
    if mpp is not None and scale is not None and not _close(scale, mpp):
        where = "the file" if anns.mpp else "--image"
        notes.append(f"{where} records {scale:g} µm/px; --mpp {mpp:g} is not used")
    anns = Annotations(objects, known_size, scale)
    if "image_size" in out_fmt.requires and known_size is None:
        raise AnnotationError(
            f"{dst}: {out_fmt.name} needs the image size; give --image (the annotated image) "
            "or --size WxH"
        )
    notes += losses(anns, out_fmt)
    with atomic_path(dst) as tmp:
        try:
            out_fmt.write(anns, tmp, options)
        except AnnotationError as exc:  # name the output, not its temporary file
            raise AnnotationError(str(exc).replace(str(tmp), str(dst))) from None
    return ConvertResult(anns, in_fmt.name, out_fmt.name, notes)
