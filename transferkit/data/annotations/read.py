"""`read_objects`: any supported annotation source to (paths, ImageObjects, problems,
class names), the format told from the source itself (see the package docstring)."""

from __future__ import annotations

import os
from pathlib import Path

from transferkit.core.errors import DataError
from transferkit.data.annotations import coco, voc, yolo
from transferkit.data.annotations.model import finish
from transferkit.data.annotations.table import read_table
from transferkit.data.scan import walk

CSV_NAME = "boxes.csv"  # a folder holding it is read as that CSV
YAML_NAMES = ("data.yaml", "data.yml")
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "coco",
            ".yaml": "yolo", ".yml": "yolo"}
ACCEPTED = ("a boxes CSV (path,label,xmin,ymin,xmax,ymax in pixels) or a folder holding "
            f"{CSV_NAME}; a COCO JSON file or a folder holding one (or one in "
            "annotations/); a YOLO data.yaml, a folder holding one, or a folder with "
            "images/ and labels/; a Pascal VOC folder of XML annotations")


def read_objects(source, *, follow_links=False, workers=None):
    """(image paths, [ImageObjects], problems, class names or None) of an annotation
    source; problems are `data.scan.Problem`s naming file and line (or annotation id),
    for the scan report. Images the annotations cannot describe are left out (a
    "skipped" problem); unusable boxes are left out of their image (a "warning").

    source: a path (the format is told from it, `sniff`) or a `YoloSplit` (one split
        of a data.yaml; a data.yaml path alone reads its 'train' split).
    class names: those the source declares (COCO categories in id order, YOLO names),
        else None (CSV, VOC: found from the labels).
    follow_links: use links in a folder source whose target lies outside it (default
        False: reported and skipped).
    workers: threads reading image headers (default os.cpu_count() + 4, at most 32).
    """
    fmt, where, walked = sniff(source, follow_links)
    names = None
    if fmt == "csv":
        listed, problems = read_table(where)
    elif fmt == "coco":
        listed, problems, names = coco.read_coco(where)
    elif fmt == "voc":
        listed, problems = voc.read_voc(where, follow_links, files=walked)
    elif fmt == "yolo_folder":
        listed, problems, names = yolo.read_yolo_folder(where, follow_links)
    else:
        listed, problems, names = yolo.read_yolo_yaml(where, follow_links)
    if not listed and not problems:
        raise DataError(f"{source} lists no image.")
    paths, labels, problems = finish(listed, problems, workers=workers)
    if fmt.startswith("yolo") and names is None:
        names = yolo.index_names(labels)
    return paths, labels, problems, names


def split_sources(source):
    """{"train": ..., "val": ..., "test": ...} sources of the splits a source names
    itself (a YOLO data.yaml with val or test images), else None: pass the dict to
    `load_data` as the source to keep the data's own split."""
    if isinstance(source, yolo.YoloSplit):
        return None
    fmt, where, _ = sniff(source)
    if fmt != "yolo":
        return None
    found = yolo.split_sources(where.yaml)
    return found if len(found) > 1 else None


def sniff(source, follow_links=False):
    """(format, what to read, walked folder or None) of a source: "csv", "coco",
    "voc", "yolo" (a data.yaml split) or "yolo_folder"; DataError naming the accepted
    forms when it is none of them."""
    if isinstance(source, yolo.YoloSplit):
        return "yolo", source, None
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"Detection data should be {ACCEPTED}. Received: "
                        f"{type(source).__name__}")
    path = Path(os.path.expanduser(os.fspath(source)))
    if path.is_dir():
        return _sniff_folder(path, follow_links)
    # Any non-folder by its suffix: the guarded read refuses a FIFO or device by name.
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None or not os.path.lexists(path):
        why = "does not exist" if not os.path.lexists(path) else "has an unknown suffix"
        raise DataError(f"The source {str(source)!r} {why}; detection data should be "
                        f"{ACCEPTED}.")
    return fmt, (yolo.YoloSplit(str(path)) if fmt == "yolo" else path), None


def _sniff_folder(path, follow_links):
    # lexists, not is_file: a FIFO named boxes.csv is refused by the guarded read.
    if _entry(path / CSV_NAME):
        return "csv", path / CSV_NAME, None
    for name in YAML_NAMES:
        if _entry(path / name):
            return "yolo", yolo.YoloSplit(str(path / name)), None
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return "yolo_folder", path, None
    jsons = sorted(p for folder in (path, path / "annotations") if folder.is_dir()
                   for p in folder.glob("*.json") if _entry(p))
    if len(jsons) > 1:
        raise DataError(f"The folder {path} holds several JSON files "
                        f"({', '.join(p.name for p in jsons[:6])}); pass the COCO file "
                        "to read.")
    if jsons:
        return "coco", jsons[0], None
    walked = walk(path, follow_links=follow_links)
    if voc.has_voc(walked[0]):
        return "voc", path, walked
    raise DataError(f"The folder {path} holds no annotations; detection data should be "
                    f"{ACCEPTED}.")


def _entry(path) -> bool:
    """Whether `path` exists and is not a folder (a FIFO counts: it is refused later,
    by name)."""
    return os.path.lexists(path) and not os.path.isdir(path)
