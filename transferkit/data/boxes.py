"""Boxes: localization's one object per image, read by detection's readers.

The localization task's data hooks (`tasks.localization`) use these; the annotation
readers, their checks (`data.annotations`: CSV, Pascal VOC with defusedxml, COCO,
YOLO), the sources and the pipeline are the ones every task uses.

Sources (what `load_data` takes for task="localization"): every annotation source
`data.annotations.read_objects` reads, e.g. "boxes.csv" (rows
`path,label,xmin,ymin,xmax,ymax`, the box in pixels: a box over the whole of a 64x48
image is 0,0,64,48) or a VOC folder; or (x, y) numpy arrays, y rows (class index,
xmin, ymin, xmax, ymax) with the box normalised to [0, 1].
One object per image: an image with several (or none usable) is a problem, reported
by where it was listed and the image left out; boxes are checked as for detection
(empty, inverted or wholly outside: left out; partly outside: clipped, a warning).
Boxes are in the pixels of the upright image (EXIF rotation applied, as viewers and the
pipeline show it), stored normalised by the image's own width and height: the pipeline resizes
every image to the model input without keeping its aspect ratio, so the normalised box
is the same in the image and in the model input, whatever the image's size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from transferkit.core.errors import DataError
from transferkit.data.annotations import read_objects
from transferkit.data.listing import ListedFileRejected, read_listed_image
from transferkit.data.scan import SKIPPED, Problem


@dataclass(frozen=True)
class BoxLabel:
    """One image's raw label: its class, its box normalised to [0, 1] (xmin, ymin,
    xmax, ymax) and where it was read ("boxes.csv line 3")."""

    label: str
    box: tuple
    where: str = ""


def image_size(path) -> tuple[int, int] | None:
    """(width, height) of an image file as the pipeline decodes it, upright (EXIF
    rotation applied, as the scan's normalised copy is); None if the listing guard
    (`data.listing`: regular file, size and pixel limits, decodes) rejects it."""
    try:
        return read_listed_image(path).upright_size
    except ListedFileRejected:
        return None


def list_boxes(src, follow_links=False):
    """(image paths, BoxLabels, listing problems) of an annotation source; see
    `read_boxes`."""
    return read_boxes(src, follow_links)[:3]


def read_boxes(src, follow_links=False):
    """(image paths, BoxLabels, listing problems, class names or None) of any source
    `data.annotations.read_objects` reads (boxes CSV, Pascal VOC, COCO, YOLO), its
    checks and problems included; an image with no usable object or several is left
    out, a "skipped" problem naming where it was listed. Class names: those the source
    declares (COCO, YOLO), else None."""
    if not isinstance(src, (str, os.PathLike)):
        raise DataError(f"task='localization' reads an annotation file or folder (a "
                        f"boxes CSV, Pascal VOC, COCO or YOLO); received "
                        f"{type(src).__name__}")
    paths, labels, problems, names = read_objects(src, follow_links=follow_links)
    problems = list(problems)
    kept, boxes = [], []
    for path, item in zip(paths, labels):
        if len(item.objects) == 1:
            obj = item.objects[0]
            kept.append(path)
            boxes.append(BoxLabel(obj.label, tuple(float(v) for v in obj.box), obj.where))
            continue
        found = (f"{len(item.objects)} objects ("
                 + "; ".join(o.where for o in item.objects) + ")") if item.objects \
            else "no usable object"
        problems.append(Problem(path, "several_objects" if item.objects else "no_object",
                                f"{item.where}: {found}, but task='localization' "
                                "expects one object per image (several per image: "
                                "--task detection)", SKIPPED))
    return kept, boxes, problems, names


def encode_boxes(raw, class_names) -> np.ndarray:
    """Raw labels -> float32 object rows [N, 1, 5]: (class index, xmin, ymin, xmax,
    ymax), the box normalised (the one-object case of `data.annotations.pad_objects`).
    raw: BoxLabels, or numeric rows (class index, xmin, ymin, xmax, ymax)."""
    index = {name: i for i, name in enumerate(class_names)}
    out = np.zeros((len(raw), 1, 5), dtype=np.float32)
    for row, item in enumerate(raw):
        if isinstance(item, BoxLabel):
            if item.label not in index:
                raise DataError(f"{item.where}: class {item.label!r} is not one of "
                                f"{list(class_names)}.")
            cls, box = index[item.label], item.box
        else:
            values = np.asarray(item, dtype=np.float64).ravel()
            if values.size != 5:
                raise DataError("task='localization' needs labels (class index, xmin, "
                                "ymin, xmax, ymax), the box normalised to [0, 1]; "
                                f"received {values.tolist()}")
            cls, box = int(values[0]), values[1:]
            if not 0 <= cls < len(class_names):
                raise DataError(f"class index {cls} is outside 0..{len(class_names) - 1}.")
            if not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
                raise DataError(f"box {box.tolist()} (row {row}) is not a normalised "
                                "(xmin, ymin, xmax, ymax) with 0 <= min < max <= 1.")
        out[row, 0, 0] = cls
        out[row, 0, 1:] = box
    return out
