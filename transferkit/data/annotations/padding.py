"""Objects as fixed-size arrays: what the pipeline carries per image."""

from __future__ import annotations

import numpy as np

from transferkit.core.errors import DataError
from transferkit.data.scan import WARNING, Problem

# At most this many objects per image are trained on: COCO's and MediaPipe's customary
# limit of detections per image (COCO's most crowded image has 93 objects).
MAX_BOXES = 100
PAD_CLASS = -1


def choose_max_boxes(labels, paths=None, cap: int = MAX_BOXES):
    """(max_boxes, problems): the most objects any image has, at least 1 and at most
    `cap` (default MAX_BOXES); an image with more gets a warning (its largest `cap`
    objects are kept by `pad_objects`). paths: the images, to name them."""
    if cap < 1:
        raise DataError(f"The `cap` argument should be >= 1. Received: cap={cap}")
    counts = [len(item.objects) for item in labels]
    problems = []
    for i, (item, n) in enumerate(zip(labels, counts)):
        if n > cap:
            name = paths[i] if paths is not None else item.where
            problems.append(Problem(name, "too_many_boxes", f"{item.where}: {n} objects; "
                                    f"the largest {cap} are trained on (MAX_BOXES)",
                                    WARNING))
    return max(1, min(cap, max(counts, default=0))), problems


def pad_objects(labels, class_names, max_boxes=None) -> np.ndarray:
    """float32 [N, max_boxes, 5] rows (class id, xmin, ymin, xmax, ymax) of
    ImageObjects `labels`, boxes normalised; unused rows have class id -1 (PAD_CLASS)
    and a zero box. max_boxes: default `choose_max_boxes(labels)`; an image with more
    objects keeps its largest ones (in their listed order). DataError on a class not
    in `class_names`."""
    if max_boxes is None:
        max_boxes = choose_max_boxes(labels)[0]
    if int(max_boxes) < 1:
        raise DataError(f"The `max_boxes` argument should be >= 1. Received: "
                        f"max_boxes={max_boxes}")
    index = {name: i for i, name in enumerate(class_names)}
    out = np.zeros((len(labels), int(max_boxes), 5), np.float32)
    out[:, :, 0] = PAD_CLASS
    for row, item in enumerate(labels):
        objects = list(item.objects)
        if len(objects) > max_boxes:
            area = [(o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) for o in objects]
            keep = sorted(sorted(range(len(objects)), key=lambda i: -area[i])[:max_boxes])
            objects = [objects[i] for i in keep]
        for k, obj in enumerate(objects):
            if obj.label not in index:
                raise DataError(f"{obj.where}: class {obj.label!r} is not one of "
                                f"{list(class_names)}.")
            out[row, k, 0] = index[obj.label]
            out[row, k, 1:] = obj.box
    return out


def check_rows(y, num_classes=None) -> np.ndarray:
    """y as float32 rows [N, M, 5] (class id, xmin, ymin, xmax, ymax), the layout
    `pad_objects` makes, checked: unused rows have class -1; a used row has an integer
    class id below `num_classes` (if given) and a normalised box with 0 <= min < max
    <= 1. DataError naming the image and row otherwise. A single [M, 5] image's rows,
    or [N, 5] one object per image, are not guessed at: the shape must be [N, M, 5]."""
    try:
        rows = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("Detection labels should be numeric rows [N, M, 5] (class id, "
                        "xmin, ymin, xmax, ymax). Received: a ragged or non-numeric "
                        "array") from None
    if rows.ndim != 3 or rows.shape[2] != 5 or rows.shape[1] < 1:
        raise DataError("Detection labels should be rows [N, M, 5] (class id, xmin, ymin, "
                        "xmax, ymax; class -1 for unused rows), boxes normalised to "
                        f"[0, 1]. Received shape {rows.shape}")
    if not np.isfinite(rows).all():
        n, m = np.argwhere(~np.isfinite(rows).all(axis=2))[0]
        raise DataError(f"Detection labels: image {n} row {m} is not finite: "
                        f"{rows[n, m].tolist()}")
    cls, box = rows[..., 0], rows[..., 1:]
    used = cls != PAD_CLASS
    bad = used & ((cls < 0) | (cls != np.round(cls))
                  | (False if num_classes is None else cls >= num_classes))
    ordered = ((box[..., 0] >= 0) & (box[..., 0] < box[..., 2]) & (box[..., 2] <= 1)
               & (box[..., 1] >= 0) & (box[..., 1] < box[..., 3]) & (box[..., 3] <= 1))
    for what, wrong in (("class id", bad), ("box", used & ~ordered)):
        if wrong.any():
            n, m = np.argwhere(wrong)[0]
            allowed = ("an integer 0.." + (str(num_classes - 1) if num_classes else "C-1")
                       + ", or -1 for an unused row") if what == "class id" else \
                "normalised (xmin, ymin, xmax, ymax) with 0 <= min < max <= 1"
            raise DataError(f"Detection labels: image {n} row {m} has a bad {what} "
                            f"{rows[n, m].tolist()}; expected {allowed}.")
    return rows.astype(np.float32)
