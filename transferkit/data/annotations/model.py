"""The multi-object label of one image, and the checks every annotation format shares.

Readers (`table`, `voc`, `coco`, `yolo`) turn a file into `Listed` records: one image,
where it was listed, and its boxes as the file gives them (pixels, or normalised for
YOLO). `finish` checks and normalises them all the same way:
  - a listing that cannot be read (a malformed row, a missing field, a box without a
    class) leaves its image out ("skipped"): a missing object would teach background;
  - a readable box that cannot be used is left out and its image kept ("warning"):
    empty (zero width or height), inverted (xmax < xmin or ymax < ymin), wholly
    outside the image, or of a class not among the given class names;
  - a box partly outside the image is clipped to it (a warning beyond SLACK_PX pixels,
    or SLACK of the side for normalised boxes: annotation tools round, and VOC's
    1-based corners land a pixel outside);
  - pixel boxes are normalised by the upright image's own width and height, read
    through `guarded.image_size` (a guarded read: a FIFO is reported, not opened).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from transferkit.data.annotations import guarded
from transferkit.data.scan import SKIPPED, WARNING, Problem

SLACK_PX = 1.0  # pixel boxes this far past an edge are clipped without a warning
SLACK = 0.002  # the same for normalised boxes, as a fraction of the side


@dataclass(frozen=True)
class Obj:
    """One object: its class name, its box normalised xyxy in [0, 1] of the upright
    image, and where it was read ("boxes.csv line 3", "a.xml object 2")."""

    label: str
    box: tuple[float, float, float, float]
    where: str = ""


@dataclass(frozen=True)
class ImageObjects:
    """One image's raw label: its objects (empty: a background image) and where the
    image was listed."""

    objects: tuple[Obj, ...]
    where: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes of its objects, each once, sorted (for the scan's per-class
        image counts: `"|".join(item.classes)`)."""
        return tuple(sorted({o.label for o in self.objects}))


@dataclass
class Listed:
    """One image as an annotation file lists it, before its boxes are checked.

    boxes: [(label, (xmin, ymin, xmax, ymax), where)] in pixels of the upright image,
        or normalised when `normalised`. declared: the (width, height) the file states
        (VOC, COCO), compared with the image's. broken: why the listing cannot be used.
    """

    path: str
    where: str
    boxes: list = field(default_factory=list)
    normalised: bool = False
    declared: tuple | None = None
    broken: str | None = None


def number(value) -> float:
    """A finite float from a number or numeric text; ValueError otherwise (bools,
    NaN and infinities included: none is a coordinate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{value!r} is not a finite number")
    return out


def finish(listed, problems=(), *, class_names=None, workers=None):
    """(paths, [ImageObjects], problems): every listing checked, pixel boxes
    normalised by their image's upright size. The first listing of a path counts; a
    later one is a warning. class_names: objects of other classes are left out."""
    problems = list(problems)
    first = {}
    for item in listed:
        if "\x00" in item.path:
            problems.append(Problem(item.path.replace("\x00", "\\0"), "bad_annotation",
                                    f"{item.where}: the path holds a NUL character",
                                    SKIPPED))
        elif item.path in first:
            problems.append(Problem(item.path, "listed_twice", f"{item.where}: also "
                                    f"listed at {first[item.path].where}; this listing "
                                    "is ignored", WARNING))
        else:
            first[item.path] = item
    usable = []
    for item in first.values():
        if item.broken:
            problems.append(Problem(item.path, "bad_annotation", item.broken, SKIPPED))
        else:
            usable.append(item)
    sizes = _sizes([i.path for i in usable if i.boxes and not i.normalised], workers)
    known = None if class_names is None else set(class_names)
    paths, labels = [], []
    for item in usable:
        size = (1.0, 1.0)
        if item.boxes and not item.normalised:
            size, problem = sizes[item.path]
            if problem is not None:
                problems.append(problem)
                continue
            if item.declared is not None and tuple(item.declared) != tuple(size):
                problems.append(Problem(item.path, "size_mismatch", f"{item.where}: the "
                                        f"annotation says {item.declared[0]}x"
                                        f"{item.declared[1]}, the upright image is "
                                        f"{size[0]}x{size[1]}; boxes are read in the "
                                        "image's pixels", WARNING))
        objects = []
        for label, box, where in item.boxes:
            obj = check_box(item.path, label, box, where, size, item.normalised,
                            problems)
            if obj is not None and known is not None and obj.label not in known:
                problems.append(unknown_class(item.path, obj, class_names))
                obj = None
            if obj is not None:
                objects.append(obj)
        paths.append(item.path)
        labels.append(ImageObjects(tuple(objects), item.where))
    return paths, labels, problems


def _sizes(paths, workers):
    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=workers or min(32, (os.cpu_count() or 1) + 4)) \
            as pool:
        return dict(zip(paths, pool.map(guarded.image_size, paths)))


def check_box(path, label, box, where, size, normalised, problems):
    """The Obj of one box checked against its image's (width, height) and normalised,
    or None with the reason appended to `problems`."""
    width, height = size
    x0, y0, x1, y1 = box
    shown = [round(v, 4 if normalised else 2) for v in box]
    left_out = "; object left out"
    if x1 < x0 or y1 < y0:
        problems.append(Problem(path, "bad_box", f"{where}: inverted box {shown} (needs "
                                f"xmax >= xmin and ymax >= ymin){left_out}", WARNING))
        return None
    if x1 == x0 or y1 == y0:
        problems.append(Problem(path, "bad_box", f"{where}: empty box {shown} (zero "
                                f"width or height){left_out}", WARNING))
        return None
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height))
    image = "image" if normalised else f"{width}x{height} image"
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        problems.append(Problem(path, "bad_box", f"{where}: box {shown} lies outside the "
                                f"{image}{left_out}", WARNING))
        return None
    slack = SLACK if normalised else SLACK_PX
    if max(-x0, -y0, x1 - width, y1 - height) > slack:
        problems.append(Problem(path, "box_clipped", f"{where}: box {shown} extends "
                                f"outside the {image}; clipped to "
                                f"{[round(v, 4 if normalised else 2) for v in clipped]}",
                                WARNING))
    norm = (clipped[0] / width, clipped[1] / height, clipped[2] / width,
            clipped[3] / height)
    return Obj(label, tuple(float(v) for v in norm), where)


def unknown_class(path, obj, class_names) -> Problem:
    """The warning of an object whose class is not among `class_names`."""
    return Problem(path, "unknown_class", f"{obj.where}: class {obj.label!r} is not one "
                   f"of {list(class_names)}; object left out", WARNING)


def drop_unknown(paths, labels, class_names):
    """(labels, problems): objects of classes not in `class_names` left out (a
    warning each), e.g. when the class names are given rather than found."""
    known, problems, out = set(class_names), [], []
    for path, item in zip(paths, labels):
        kept = []
        for obj in item.objects:
            if obj.label in known:
                kept.append(obj)
            else:
                problems.append(unknown_class(path, obj, class_names))
        out.append(ImageObjects(tuple(kept), item.where))
    return out, problems
