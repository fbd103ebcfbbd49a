"""`read_objects`: any supported annotation source to (paths, ImageObjects, problems,
class names), the format told from the source itself (see the package docstring)."""

from __future__ import annotations

import os
from pathlib import Path

from transferkit.core.errors import DataError
from transferkit.data.annotations.model import finish
from transferkit.data.annotations.table import read_table

CSV_NAME = "boxes.csv"  # a folder holding it is read as that CSV
CSV_SUFFIXES = (".csv", ".tsv", ".txt")


def read_objects(source, *, follow_links=False, workers=None):
    """(image paths, [ImageObjects], problems, class names or None) of an annotation
    source; problems are `data.scan.Problem`s naming file and line (or annotation id),
    for the scan report. Images the annotations cannot describe are left out (a
    "skipped" problem); unusable boxes are left out of their image (a "warning").
    class names: those the source declares (COCO categories, YOLO names), else None.
    follow_links: use links in a folder source whose target lies outside it.
    workers: threads reading image headers (default os.cpu_count() + 4, at most 32).
    """
    fmt, path = sniff(source)
    if fmt == "csv":
        listed, problems = read_table(path)
        names = None
    paths, labels, problems = finish(listed, problems, class_names=names, workers=workers)
    return paths, labels, problems, names


def sniff(source):
    """(format, path) of a source: "csv" for now (VOC, COCO and YOLO follow)."""
    if not isinstance(source, (str, os.PathLike)):
        raise DataError("Detection data should be a boxes CSV (path,label,xmin,ymin,xmax,"
                        f"ymax) or a folder holding {CSV_NAME}. Received: "
                        f"{type(source).__name__}")
    path = Path(os.path.expanduser(os.fspath(source)))
    if path.is_dir() and (path / CSV_NAME).is_file():
        return "csv", path / CSV_NAME
    # Any non-folder by its suffix: the guarded read refuses a FIFO or device by name.
    if path.exists() and not path.is_dir() and path.suffix.lower() in CSV_SUFFIXES:
        return "csv", path
    raise DataError(f"The source {str(source)!r} is not a boxes CSV (path,label,xmin,"
                    f"ymin,xmax,ymax) nor a folder holding {CSV_NAME}.")
