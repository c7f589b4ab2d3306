"""DICOM Microscopy Bulk Simple Annotations (highdicom), 2D total-pixel-matrix coordinates.

One annotation group per class and graphic type (POLYGON, POINT); the group's property type
is the class's code from the vocabulary (a local 99SHINDAN code when it lists none) and its
label the class name. Writing needs the DICOM source image (``--image``). DICOM annotations
cannot hold holes, instance ids or multipolygons (each piece is its own polygon); µm/px and the
image size are the source image's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shindan.errors import AnnotationError
from shindan.io.annotation_formats import AnnotationFormat, FormatOptions, register_format
from shindan.io.annotation_formats.dicom_common import (
    category,
    check_size,
    coded,
    equipment,
    load_source,
    read_dicom,
    sop_class,
)
from shindan.io.annotation_formats.model import (
    AnnotatedObject,
    Annotations,
    Point,
    Polygon,
    polygons_of,
)

NAME = "dicom-ann"
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.91.1"  # Microscopy Bulk Simple Annotations Storage


def _ellipse(pts: np.ndarray) -> np.ndarray:
    # DICOM ELLIPSE: the end points of the major axis, then of the minor axis
    c = pts.mean(0)
    a, b = (pts[1] - pts[0]) / 2, (pts[3] - pts[2]) / 2
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)[:, None]
    return c + np.cos(t) * a + np.sin(t) * b


def read(path: Path, options: FormatOptions) -> Annotations:
    import highdicom as hd

    ds = read_dicom(path)
    if str(ds.get("SOPClassUID", "")) != SOP_CLASS:
        raise AnnotationError(f"{path}: not a DICOM Microscopy Bulk Simple Annotations file")
    try:
        ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(ds)
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: broken DICOM annotations ({exc})") from None
    if ann.annotation_coordinate_type.value != "2D":
        raise AnnotationError(f"{path}: 3D (slide coordinate) annotations are not supported")
    objects = []
    for g in ann.get_annotation_groups():
        t = g.annotated_property_type
        label = options.vocabulary.name_of_code(t.value, t.scheme_designator, t.meaning, g.label)
        kind = g.graphic_type.value
        for pts in g.get_graphic_data("2D"):
            pts = np.asarray(pts, np.float64)[:, :2]
            if kind == "POINT":
                objects.append(AnnotatedObject(Point(pts[0]), label))
            elif kind in ("POLYGON", "RECTANGLE"):
                objects.append(AnnotatedObject(Polygon(pts), label))
            elif kind == "ELLIPSE" and len(pts) == 4:
                objects.append(AnnotatedObject(Polygon(_ellipse(pts)), label))
    return Annotations(objects)


def write(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    import highdicom as hd

    src = load_source(options.image, path)
    check_size(annotations, src, options.image)
    vocab = options.vocabulary
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    for o in annotations.objects:
        if isinstance(o.geometry, Point):
            groups.setdefault((o.label, "POINT"), []).append(o.geometry.xy.reshape(1, 2))
        else:
            for p in polygons_of(o.geometry):
                groups.setdefault((o.label, "POLYGON"), []).append(p.exterior)
    if not groups:
        raise AnnotationError(f"{path}: nothing to write (no objects)")
    items = []
    for n, ((label, kind), data) in enumerate(groups.items(), start=1):
        name = vocab.output_name(label, NAME) or "object"
        items.append(
            hd.ann.AnnotationGroup(
                number=n,
                uid=hd.UID(),
                label=name[:64],
                annotated_property_category=category(),
                annotated_property_type=coded(vocab.code_of(label)),
                graphic_type=kind,
                graphic_data=[np.asarray(d, np.float64) for d in data],
                algorithm_type="MANUAL",
            )
        )
    try:
        ann = hd.ann.MicroscopyBulkSimpleAnnotations(
            source_images=[src],
            annotation_coordinate_type="2D",
            annotation_groups=items,
            series_instance_uid=hd.UID(),
            series_number=1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            content_label="ANNOTATIONS",
            **equipment(),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise AnnotationError(
            f"{options.image}: highdicom refuses it as a source ({exc})"
        ) from None
    ann.save_as(path)


FORMAT = register_format(
    AnnotationFormat(
        NAME,
        "DICOM Microscopy Bulk Simple Annotations (needs --image SOURCE.dcm to write)",
        (".dcm",),
        frozenset({"points", "classes", "vertices"}),
        read,
        write,
        lambda path: sop_class(path) == SOP_CLASS,
        frozenset({"source"}),
    )
)
