"""A boxes CSV: one row per object, `path,label,xmin,ymin,xmax,ymax`.

Boxes are in pixels of the upright image (x right, y down, edges: a box over the whole
of a 64x48 image is 0,0,64,48). Paths are relative to the CSV's folder. A first row
whose first cell is path/file/filename/image is a header. A row with the path alone
(or empty label and box cells: `a.jpg,,,,,`) lists an image without objects. Tab
separated for a .tsv file.
"""

from __future__ import annotations

import csv
import io
import os

from transferkit.core.errors import DataError
from transferkit.data.annotations import guarded
from transferkit.data.annotations.model import Listed, number

HEADER_NAMES = ("path", "file", "filename", "image")
ROW = "path,label,xmin,ymin,xmax,ymax"


def read_table(path) -> tuple[list[Listed], list]:
    """(listings, problems) of a boxes CSV; DataError if it cannot be read as CSV."""
    text = guarded.read_text(path, f"boxes CSV ({ROW})")
    folder = os.path.dirname(os.path.abspath(path))
    delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    listed, first = {}, True
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataError(f"{path} line {reader.line_num}: not a CSV row ({error}); "
                            f"rows should be `{ROW}`.") from None
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:
            cells.pop()  # `a.jpg,,,,,`: an image without objects
        if not cells:
            continue
        where = f"{path} line {reader.line_num}"
        if first and cells[0].lower() in HEADER_NAMES:
            first = False
            continue
        first = False
        if not cells[0]:
            raise DataError(f"{where}: the row has no image path; rows should be `{ROW}`. "
                            f"Received: {row!r}")
        image = os.path.normpath(os.path.join(folder, cells[0]))
        item = listed.setdefault(image, Listed(image, where))
        if len(cells) == 1 or item.broken:
            continue
        item.broken = _object(cells, where, item.boxes)
    return list(listed.values()), []


def _object(cells, where, boxes):
    """Append the row's (label, box, where) to `boxes`; None, or why the row (and so
    its image) cannot be used."""
    if len(cells) != 6:
        return (f"{where}: a row should be `{ROW}` (or the path alone for an image "
                f"without objects); received {len(cells)} cells {cells!r}")
    if not cells[1]:
        return f"{where}: the object has no class label; received {cells!r}"
    try:
        box = tuple(number(v) for v in cells[2:])
    except ValueError as error:
        return f"{where}: the box should be four numbers (pixels); {error}"
    boxes.append((cells[1], box, where))
    return None
