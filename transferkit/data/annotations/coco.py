"""COCO object detection JSON (the "instances" files annotation tools export).

    {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}, ...],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 3,
                      "bbox": [x, y, w, h], "iscrowd": 0}, ...],
     "categories": [{"id": 3, "name": "cat"}, ...]}

bbox is in pixels of the upright image (left, top, width, height). file_name is found
relative to the JSON's folder, its `images/`, its parent folder, or (for COCO's own
`annotations/instances_val2017.json`) the parent's `val2017/`. The class names are the
categories' names in id order. Crowd annotations (iscrowd=1: one box around many
objects) are left out; an image with nothing else is left out with them. An image
without annotations is an image without objects. Malformed structure (not JSON, a
missing list, a category without an integer id or a name) is a DataError; a malformed
image entry or annotation is a problem naming its index or id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transferkit.core.errors import DataError
from transferkit.data.annotations import guarded
from transferkit.data.annotations.model import Listed, number
from transferkit.data.scan import SKIPPED, WARNING, Problem


def read_coco(path):
    """(listings, problems, class names) of a COCO JSON file."""
    path = Path(path)
    text = guarded.read_text(path, "COCO annotation JSON")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: [[[[... nesting
        raise DataError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO file is a JSON object with 'images', "
                        f"'annotations' and 'categories'; received a "
                        f"{type(data).__name__}.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: a COCO file needs a list '{key}'; received "
                            f"{type(data.get(key)).__name__}.")
    categories = _categories(path, data["categories"])
    problems = []
    listed, by_id = _images(path, data["images"], problems)
    crowds = {}
    for i, ann in enumerate(data["annotations"]):
        _annotation(path, i, ann, by_id, categories, crowds, problems)
    for image_id, count in crowds.items():
        item = by_id[image_id]
        if not item.boxes and not item.broken:
            item.broken = (f"{item.where}: only crowd annotations ({count}, iscrowd=1), "
                           "which do not tell its objects apart")
    return listed, problems, tuple(categories[k] for k in sorted(categories))


def _is_id(value):
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _categories(path, entries):
    """{id: name}; DataError on a malformed or repeated entry."""
    out = {}
    for i, cat in enumerate(entries):
        ok = (isinstance(cat, dict) and isinstance(cat.get("id"), int)
              and not isinstance(cat.get("id"), bool) and isinstance(cat.get("name"), str)
              and cat["name"].strip())
        if not ok:
            raise DataError(f"{path}: categories[{i}] should be an object with an integer "
                            f"'id' and a non-empty 'name'; received {_short(cat)}")
        if cat["id"] in out:
            raise DataError(f"{path}: categories[{i}] repeats category id {cat['id']}.")
        out[cat["id"]] = cat["name"].strip()
    names = list(out.values())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: several categories are named {repeated[0]!r}; class "
                        "names must be unique.")
    return out


def _images(path, entries, problems):
    listed, by_id = [], {}
    for i, entry in enumerate(entries):
        where = f"{path} images[{i}]"
        if not (isinstance(entry, dict) and _is_id(entry.get("id"))
                and isinstance(entry.get("file_name"), str) and entry["file_name"].strip()):
            problems.append(Problem(str(path), "bad_annotation", f"{where}: an image needs "
                                    f"an 'id' and a 'file_name'; received {_short(entry)}",
                                    SKIPPED))
            continue
        where = f"{path} image id {entry['id']}"
        if entry["id"] in by_id:
            problems.append(Problem(str(path), "bad_annotation", f"{where}: the id is "
                                    "repeated; this entry is ignored", WARNING))
            continue
        image = _find(path, entry["file_name"].strip())
        if image is None:
            problems.append(Problem(str(path), "missing_image", f"{where}: file_name "
                                    f"{entry['file_name']!r} not found beside {path}",
                                    SKIPPED))
            by_id[entry["id"]] = None
            continue
        item = Listed(image, where, declared=_declared(entry))
        listed.append(item)
        by_id[entry["id"]] = item
    return listed, by_id


def _find(path, name):
    """The image `name` relative to the usual COCO folders, or None."""
    here, up = path.parent, path.parent.parent
    folders = [here, here / "images", up, up / "images"]
    stem = path.stem.split("_", 1)
    if len(stem) == 2:  # instances_val2017.json -> val2017/
        folders.append(up / stem[1])
    for folder in folders:
        candidate = os.path.normpath(os.path.join(folder, name))
        if "\x00" not in candidate and os.path.lexists(candidate):
            return candidate
    return None


def _declared(entry):
    size = (entry.get("width"), entry.get("height"))
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    return size if ok else None


def _annotation(path, i, ann, by_id, categories, crowds, problems):
    """Add annotation `i` to its image's listing, or a problem saying why not."""
    if not isinstance(ann, dict):
        problems.append(Problem(str(path), "bad_annotation", f"{path} annotations[{i}]: "
                                f"not an object; received {_short(ann)}", WARNING))
        return
    where = (f"{path} annotation id {ann['id']}" if _is_id(ann.get("id"))
             else f"{path} annotations[{i}]")
    image_id = ann.get("image_id")
    if not _is_id(image_id) or image_id not in by_id:
        problems.append(Problem(str(path), "bad_annotation", f"{where}: image_id "
                                f"{_short(image_id)} is not among the images; annotation "
                                "ignored", WARNING))
        return
    item = by_id[image_id]
    if item is None or item.broken:  # its image is missing, or already left out
        return
    if ann.get("iscrowd", 0) not in (0, 1, False, True):
        item.broken = f"{where}: iscrowd should be 0 or 1; received {_short(ann['iscrowd'])}"
        return
    if ann.get("iscrowd", 0):
        crowds[image_id] = crowds.get(image_id, 0) + 1
        return
    bbox = ann.get("bbox")
    try:
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"received {_short(bbox)}")
        x, y, w, h = (number(v) for v in bbox)
    except ValueError as error:
        item.broken = f"{where}: bbox should be [x, y, width, height] in pixels; {error}"
        return
    category = ann.get("category_id")
    if not _is_id(category) or category not in categories:
        problems.append(Problem(item.path, "unknown_class", f"{where}: category_id "
                                f"{_short(category)} is not among the categories "
                                f"{sorted(categories)}; object left out", WARNING))
        return
    item.boxes.append((categories[category], (x, y, x + w, y + h), where))


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
