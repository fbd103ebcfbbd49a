"""Boxes: how localization reads, checks and encodes one object's class and box.

The localization task's data hooks (`tasks.localization`) use these; the sources and
the pipeline are the ones every task uses (`data.files`, `data.pipeline.build`).

Sources (what `load_data` takes for task="localization"):
  "boxes.csv"   rows `path,label,xmin,ymin,xmax,ymax`, the box in pixels of the image
                (x right, y down, edges: a box over the whole of a 64x48 image is
                0,0,64,48); paths relative to the CSV's folder; optional header row
  "dir/"        a folder holding boxes.csv: that CSV
  "voc/"        a Pascal VOC folder: `*.xml` annotations (any depth, usually
                `Annotations/`) naming their image (`JPEGImages/`, `images/` or next
                to the XML); VOC's 1-based pixel corners are converted to edges
  (x, y)        numpy arrays: y rows (class index, xmin, ymin, xmax, ymax) with the
                box normalised to [0, 1]
One object per image: a second row (or <object>) for an image is a problem, reported
by path and line and the image left out; so are empty or inverted boxes and boxes
wholly outside the image. A box partly outside is clipped to the image (a warning).
Boxes are in the pixels of the upright image (EXIF rotation applied, as viewers and the
pipeline show it), stored normalised by the image's own width and height: the pipeline resizes
every image to the model input without keeping its aspect ratio, so the normalised box
is the same in the image and in the model input, whatever the image's size.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
# Expat >= 2.4.1 (Python's own) refuses billion-laughs and quadratic-blowup entities,
# and ElementTree never fetches external entities: safe for untrusted XML.
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferkit.core.errors import DataError
from transferkit.data.listing import (ListedFileRejected, csv_rows, is_header,
                                      read_listed_image, read_listing_bytes)
from transferkit.data.scan import SKIPPED, WARNING, Problem, walk

HEADER = ("path", "label", "xmin", "ymin", "xmax", "ymax")
CSV_NAME = "boxes.csv"  # a folder holding it is read as that CSV


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
    """(image paths, BoxLabels, listing problems) of a boxes CSV or a VOC folder."""
    if not isinstance(src, (str, os.PathLike)):
        raise DataError(f"task='localization' reads a CSV of path,label,xmin,ymin,xmax,"
                        f"ymax rows or a Pascal VOC folder; received {type(src).__name__}")
    path = Path(src)
    if path.is_dir() and (path / CSV_NAME).is_file():
        path = path / CSV_NAME
    if path.is_dir():
        rows, problems = _voc_rows(path, follow_links)
    elif path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows, problems = _csv_rows(path), []
    else:
        raise DataError(f"source {str(src)!r} is neither a boxes CSV (path,label,xmin,"
                        "ymin,xmax,ymax) nor a Pascal VOC folder of XML annotations.")
    return check_rows(rows, problems)


def _csv_rows(path: Path):
    """[(image path, label, (xmin, ymin, xmax, ymax) pixels, where)] of a boxes CSV."""
    out = []
    for line, row in csv_rows(path, "boxes CSV"):
        where = f"{path} line {line}"
        if is_header(row):
            continue
        try:
            if len(row) != 6 or not row[0].strip():
                raise ValueError
            box = tuple(float(v) for v in row[2:6])
            if not all(math.isfinite(v) for v in box):
                raise ValueError
            image = str((path.parent / row[0].strip()).resolve(strict=False))
        except (ValueError, OSError):
            raise DataError(f"{where}: a row should be `path,label,xmin,ymin,xmax,"
                            f"ymax` with the box in pixels (finite numbers); received "
                            f"{row!r}") from None
        out.append((image, row[1].strip(), box, where))
    return out


def _voc_rows(root: Path, follow_links):
    """Rows of every VOC XML under `root`; an XML with several objects gives one row
    per object (each a problem later: one object per image)."""
    files, problems = walk(root, follow_links=follow_links)
    rows = []
    for xml in sorted(f for f in files if f.lower().endswith(".xml")):
        try:
            # Read by the listing guard: a FIFO named .xml is refused, never waited on.
            tree = ET.fromstring(read_listing_bytes(xml, "VOC annotation"))
        except DataError as error:
            problems.append(Problem(xml, "bad_annotation", str(error), SKIPPED))
            continue
        except (ET.ParseError, ValueError, LookupError) as error:  # an unknown encoding
            problems.append(Problem(xml, "bad_annotation", f"not valid XML: {error}",
                                    SKIPPED))
            continue
        name = (tree.findtext("filename") or "").strip()
        image = _voc_image(root, Path(xml), name)
        objects = tree.findall("object")
        if not objects or image is None:
            why = (f"names image {name!r}, not found" if image is None
                   else "has no <object>")
            problems.append(Problem(xml, "bad_annotation", why, SKIPPED))
            continue
        for i, obj in enumerate(objects):
            where = f"{xml} object {i + 1}"
            try:
                bb = obj.find("bndbox")
                x0, y0, x1, y1 = (float(bb.findtext(k)) for k in HEADER[2:])
                if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                    raise ValueError
            except (AttributeError, TypeError, ValueError):
                problems.append(Problem(xml, "bad_annotation",
                                        f"object {i + 1} has no numeric <bndbox>", SKIPPED))
                continue
            # VOC corners are 1-based pixel indices, inclusive: as edges, x0 - 1 .. x1.
            rows.append((image, (obj.findtext("name") or "").strip(),
                         (x0 - 1, y0 - 1, x1, y1), where))
    return rows, problems


def _voc_image(root: Path, xml: Path, name: str):
    if not name or "\0" in name:
        return None
    for folder in (root / "JPEGImages", root / "images", xml.parent,
                   xml.parent.parent / "JPEGImages", root):
        try:
            # exists, not is_file: a FIFO found here is named by the scan, not missed.
            if (folder / name).exists() and not (folder / name).is_dir():
                return str((folder / name).resolve())
        except (OSError, ValueError):  # a name too long, or one no file system takes
            return None
    return None


def check_rows(rows, problems=()):
    """(paths, BoxLabels, problems): each row's box checked against its image's own
    size (read from the header) and normalised; one object per image."""
    problems = list(problems)
    by_path = {}
    for row in rows:
        by_path.setdefault(row[0], []).append(row)
    single = [p for p, found in by_path.items() if len(found) == 1]
    # Each image read and decoded once by the listing guard, in threads as the scan
    # does (Pillow releases the GIL while decoding).
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4)) as pool:
        sizes = dict(zip(single, pool.map(image_size, single)))
    paths, labels = [], []
    for path, found in by_path.items():
        if len(found) > 1:
            problems.append(Problem(path, "several_objects", f"{len(found)} objects ("
                                    + "; ".join(w for *_, w in found) + "), but "
                                    "task='localization' expects one object per image "
                                    "(multi-object detection: KerasHub's detectors)",
                                    SKIPPED))
            continue
        _, label, box, where = found[0]
        size = sizes[path]
        if size is None:  # the scan names the unreadable file itself
            paths.append(path)
            labels.append(BoxLabel(label, (0.0, 0.0, 1.0, 1.0), where))
            continue
        checked = _checked_box(path, label, box, size, where, problems)
        if checked is not None:
            paths.append(path)
            labels.append(checked)
    return paths, labels, problems


def _checked_box(path, label, box, size, where, problems):
    width, height = size
    x0, y0, x1, y1 = box
    if not label:
        problems.append(Problem(path, "bad_box", f"{where}: no class label", SKIPPED))
        return None
    if not (x1 > x0 and y1 > y0):
        problems.append(Problem(path, "bad_box", f"{where}: empty or inverted box "
                                f"{list(box)} (needs xmax > xmin and ymax > ymin)",
                                SKIPPED))
        return None
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height))
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        problems.append(Problem(path, "bad_box", f"{where}: box {list(box)} lies outside "
                                f"the {width}x{height} image", SKIPPED))
        return None
    if clipped != tuple(box):
        problems.append(Problem(path, "box_clipped", f"{where}: box {list(box)} extends "
                                f"outside the {width}x{height} image; clipped to "
                                f"{[round(v, 1) for v in clipped]}", WARNING))
    norm = (clipped[0] / width, clipped[1] / height, clipped[2] / width,
            clipped[3] / height)
    return BoxLabel(label, tuple(float(v) for v in norm), where)


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
