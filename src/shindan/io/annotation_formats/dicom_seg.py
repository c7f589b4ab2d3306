"""DICOM Segmentation (highdicom, BINARY): one segment per class on the source image's grid.

Writing paints the classes on the DICOM source image's (total) pixel matrix and needs that
image (``--image``); segments carry the class codes and names of the vocabulary. Reading
traces each segment (overlapping segments are read one by one). A segmentation cannot hold
points, instance ids or exact vertices; µm/px and the image size come from its pixel measures.
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
    pixel_spacing_mpp,
    read_dicom,
    sop_class,
    source_size,
)
from shindan.io.annotation_formats.geometry import label_map_to_objects, paint
from shindan.io.annotation_formats.model import Annotations

NAME = "dicom-seg"
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage


def read(path: Path, options: FormatOptions) -> Annotations:
    import highdicom as hd

    ds = read_dicom(path)
    if str(ds.get("SOPClassUID", "")) != SOP_CLASS:
        raise AnnotationError(f"{path}: not a DICOM Segmentation file")
    try:
        seg = hd.seg.Segmentation.from_dataset(ds)
        if "TotalPixelMatrixRows" in seg:
            stack = seg.get_total_pixel_matrix()
        else:
            refs = [
                i.ReferencedSOPInstanceUID
                for s in seg.ReferencedSeriesSequence
                for i in s.ReferencedInstanceSequence
            ]
            if len(refs) != 1:
                raise AnnotationError(
                    f"{path}: segments {len(refs)} source images; only single-image "
                    "segmentations are supported"
                )
            stack = seg.get_pixels_by_source_instance(refs)[0]
    except AnnotationError:
        raise
    except (ValueError, AttributeError, KeyError, TypeError, IndexError) as exc:
        raise AnnotationError(f"{path}: broken DICOM segmentation ({exc})") from None
    stack = np.asarray(stack)
    if stack.ndim == 2:
        stack = stack[..., None]
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    names = {}
    for d in seg.SegmentSequence:
        t = d.SegmentedPropertyTypeCodeSequence[0]
        names[int(d.SegmentNumber)] = options.vocabulary.name_of_code(
            t.CodeValue, t.CodingSchemeDesignator, t.CodeMeaning, str(d.SegmentLabel)
        )
    objects = []
    for k, n in enumerate(numbers[: stack.shape[-1]]):
        objects += label_map_to_objects(
            (stack[..., k] > 0).astype(np.uint8), instances=False, name_of=lambda v, n=n: names[n]
        )
    rows, cols = stack.shape[:2]
    return Annotations(objects, (cols, rows), pixel_spacing_mpp(ds))


def write(annotations: Annotations, path: Path, options: FormatOptions) -> None:
    import highdicom as hd

    src = load_source(options.image, path)
    check_size(annotations, src, options.image)
    vocab = options.vocabulary
    # one segment per class that has an area (points have none)
    polygonal = list(dict.fromkeys(o.label for o in annotations.objects if o.kind != "point"))
    if not polygonal:
        raise AnnotationError(f"{path}: nothing to write (no polygons; points have no area)")
    number = {c: i for i, c in enumerate(polygonal, start=1)}
    w, h = source_size(src)
    label = paint(
        annotations.replace(objects=[o for o in annotations.objects if o.kind != "point"]),
        (h, w),
        lambda o, i: number[o.label],
        np.uint8 if len(number) < 256 else np.uint16,
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=(vocab.output_name(c, NAME) or "object")[:64],
            segmented_property_category=category(),
            segmented_property_type=coded(vocab.code_of(c)),
            algorithm_type="MANUAL",
        )
        for c, n in number.items()
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=[src],
            pixel_array=label,
            segmentation_type="BINARY",
            segment_descriptions=segments,
            series_instance_uid=hd.UID(),
            series_number=1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            tile_pixel_array="TotalPixelMatrixRows" in src,
            omit_empty_frames=False,
            **equipment(),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise AnnotationError(
            f"{options.image}: highdicom refuses it as a source ({exc})"
        ) from None
    seg.save_as(path)


FORMAT = register_format(
    AnnotationFormat(
        NAME,
        "DICOM Segmentation, one segment per class (needs --image SOURCE.dcm to write)",
        (".dcm",),
        frozenset({"holes", "classes", "mpp", "image_size"}),
        read,
        write,
        lambda path: sop_class(path) == SOP_CLASS,
        frozenset({"source"}),
    )
)
