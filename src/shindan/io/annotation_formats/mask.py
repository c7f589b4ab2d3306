"""Label masks (PNG or TIFF): ``mask`` holds one integer per class (values from the
vocabulary), ``instance-mask`` one integer per object (its instance id).

Reading traces every region, holes included (see :func:`~.geometry.trace`): painting the
polygons back gives the same pixels. Writing paints level-0 pixels (the image size must be
known), so outlines are rasterised and points are left out; an instance mask keeps no class.
µm/px is kept in the file's resolution (TIFF: pixels per centimetre; PNG: pHYs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shindan.errors import AnnotationError
from shindan.io.annotation_formats import AnnotationFormat, FormatOptions, register_format
from shindan.io.annotation_formats.geometry import label_map_to_objects, paint
from shindan.io.annotation_formats.model import Annotations, Point
from shindan.io.annotations import read_label_mask

SUFFIXES = (".png", ".tif", ".tiff")
MAX_PIXELS = 1 << 31  # a level-0 mask larger than this is a slide, not a mask


def _mpp(path: Path) -> float | None:
    """µm/px from a mask file's resolution, when it records one in physical units."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if path.suffix.lower() in (".tif", ".tiff"):
                unit = im.tag_v2.get(296, 2)  # ResolutionUnit: 2 inch, 3 centimetre
                xres = im.tag_v2.get(282)
                if xres and unit in (2, 3) and float(xres) > 0:
                    return (25400.0 if unit == 2 else 10000.0) / float(xres)
            elif "dpi" in im.info and float(im.info["dpi"][0]) > 1:
                return 25400.0 / float(im.info["dpi"][0])
    except (OSError, ValueError, ZeroDivisionError, AttributeError):
        return None
    return None


def _read(path: Path, options: FormatOptions, instances: bool) -> Annotations:
    lab = read_label_mask(path)
    vocab = options.vocabulary
    objects = label_map_to_objects(
        lab,
        instances=instances,
        name_of=(lambda v: options.label) if instances else vocab.name_of_value,
    )
    return Annotations(objects, (lab.shape[1], lab.shape[0]), _mpp(path))


def _shape(annotations: Annotations, path: Path) -> tuple[int, int]:
    if annotations.image_size is None:
        raise AnnotationError(
            f"{path}: a mask needs the image size; give --image (the annotated image) or --size WxH"
        )
    w, h = annotations.image_size
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise AnnotationError(f"{path}: cannot write a {w}x{h} level-0 mask")
    return h, w


def _save(label: np.ndarray, path: Path, mpp: float | None) -> None:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        kw = {}
        if mpp is not None:
            kw = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
        tifffile.imwrite(path, label, compression="zlib", **kw)
        return
    from PIL import Image

    if label.dtype.itemsize > 2:
        raise AnnotationError(f"{path}: more than 65535 labels do not fit a PNG; write .tif")
    kw = {"dpi": (25400.0 / mpp, 25400.0 / mpp)} if mpp is not None else {}
    Image.fromarray(label).save(path, format="PNG", **kw)


def _dtype(top: int) -> type:
    return np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32


def write_class_mask(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    vocab = options.vocabulary
    shape = _shape(annotations, path)
    values = {}
    missing = []
    for name in annotations.classes():
        v = vocab.value_of(name) if name else None
        if v is None and name.isdigit():
            v = int(name)  # a class read from a mask without a vocabulary entry
        if v is None:
            missing.append(name or "(no class)")
        values[name] = v
    if missing:
        raise AnnotationError(
            f"{path}: no mask value for class(es) {', '.join(missing)}; add them to --vocabulary "
            "(or name unlabelled objects with --label)"
        )
    top = max(values.values(), default=0)
    label = paint(annotations, shape, lambda o, i: values[o.label], _dtype(top))
    _save(label, path, annotations.mpp)


def write_instance_mask(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    shape = _shape(annotations, path)
    objs = [o for o in annotations.objects if not isinstance(o.geometry, Point)]
    ids = [o.instance_id for o in objs]
    # keep the objects' own ids when they are distinct positive numbers, else number 1..N
    keep = all(i is not None and i > 0 for i in ids) and len(set(ids)) == len(ids)
    value = (lambda o, i: o.instance_id) if keep else (lambda o, i: i + 1)
    top = max(ids) if keep and ids else len(objs)
    label = paint(annotations.replace(objects=objs), shape, value, _dtype(top))
    _save(label, path, annotations.mpp)


register_format(
    AnnotationFormat(
        "mask",
        "label mask, one integer per class (PNG/TIFF)",
        SUFFIXES,
        frozenset({"holes", "classes", "mpp", "image_size"}),
        lambda p, o: _read(p, o, False),
        write_class_mask,
        lambda path: True,
        frozenset({"image_size"}),
    )
)
register_format(
    AnnotationFormat(
        "instance-mask",
        "label mask, one integer per object (PNG/TIFF)",
        (),  # same files as "mask": chosen with --from/--to instance-mask
        frozenset({"holes", "multipolygons", "instance_ids", "mpp", "image_size"}),
        lambda p, o: _read(p, o, True),
        write_instance_mask,
        lambda path: False,  # never guessed: named with --from
        frozenset({"image_size"}),
    )
)
