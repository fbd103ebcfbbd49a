"""Pascal VOC folders: one XML per image, parsed with defusedxml.

Every `*.xml` under the folder (any depth, usually `Annotations/`) names its image in
<filename>; the image is found by that name under the folder, preferring the XML's own
folder, then a `JPEGImages/` or `images/` beside it or at the top. Each <object> has a
<name> and a <bndbox> of 1-based, inclusive pixel corners, read as edges
(xmin - 1, ymin - 1, xmax, ymax). An XML without <object> lists an image without
objects. Entities, external references and other XML tricks are refused
(`defusedxml`); so is an XML file larger than XML_MAX_BYTES.
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from transferkit.data import imageio
from transferkit.data.annotations.model import Listed, number
from transferkit.data.scan import SKIPPED, Problem, _os_problem, read_regular_file, walk

XML_MAX_BYTES = 16 * 2**20
CORNERS = ("xmin", "ymin", "xmax", "ymax")


def has_voc(files) -> bool:
    """Whether a folder's files (`scan.walk`) hold an XML annotation."""
    return any(f.lower().endswith(".xml") for f in files)


def read_voc(root, follow_links=False, files=None):
    """(listings, problems) of every VOC XML under `root`. files: `walk(root)`'s
    (files, problems), if already walked."""
    root = Path(root)
    files, problems = files if files is not None else walk(root, follow_links=follow_links)
    problems = list(problems)
    images = {}
    for f in files:
        if Path(f).suffix.lower() in imageio.IMAGE_EXTENSIONS:
            images.setdefault(os.path.basename(f), []).append(f)
    listed = []
    for xml in sorted(f for f in files if f.lower().endswith(".xml")):
        item = _read_xml(xml, root, images, problems)
        if item is not None:
            listed.append(item)
    return listed, problems


def _read_xml(xml, root, images, problems):
    try:
        tree = SafeET.fromstring(read_regular_file(xml, XML_MAX_BYTES))
    except OSError as exc:
        problems.append(_os_problem(xml, exc))
        return None
    # LookupError: an XML declaring an encoding Python does not know (found by
    # tests/data/test_readers_hypothesis.py).
    except (ParseError, defusedxml.DefusedXmlException, ValueError, LookupError) as exc:
        problems.append(Problem(xml, "bad_annotation", f"{xml}: not a usable XML file "
                                f"({type(exc).__name__}: {exc})", SKIPPED))
        return None
    if tree.tag != "annotation":
        problems.append(Problem(xml, "bad_annotation", f"{xml}: not a Pascal VOC "
                                f"annotation (root element <{tree.tag}>, expected "
                                "<annotation>)", SKIPPED))
        return None
    name = (tree.findtext("filename") or "").strip()
    image = _find_image(name, Path(xml), root, images)
    if image is None:
        why = (f"<filename> {name!r} is not an image under {root}" if name
               else "no <filename>")
        problems.append(Problem(xml, "missing_image", f"{xml}: {why}", SKIPPED))
        return None
    item = Listed(image, xml, declared=_declared(tree))
    for i, obj in enumerate(tree.findall("object")):
        where = f"{xml} object {i + 1}"
        label = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not label:
            item.broken = f"{where}: the object has no <name>"
        elif box is None:
            item.broken = f"{where}: the object has no <bndbox>"
        else:
            try:
                x0, y0, x1, y1 = (number((box.findtext(k) or "").strip() or None)
                                  for k in CORNERS)
            except ValueError as error:
                item.broken = (f"{where}: <bndbox> needs numeric <xmin>, <ymin>, <xmax>, "
                               f"<ymax>; {error}")
            else:
                # VOC corners are 1-based pixel indices, inclusive: as edges, x0 - 1 .. x1.
                item.boxes.append((label, (x0 - 1, y0 - 1, x1, y1), where))
        if item.broken:
            break
    return item


def _find_image(name, xml, root, images):
    if not name:
        return None
    found = images.get(os.path.basename(name), [])
    if not found and not Path(name).suffix:  # some exports drop the extension
        found = [p for key, ps in images.items() if Path(key).stem == name for p in ps]
    for folder in (xml.parent, xml.parent.parent / "JPEGImages",
                   xml.parent.parent / "images", root / "JPEGImages", root / "images"):
        for path in found:
            if Path(path).parent == folder:
                return path
    return found[0] if len(found) == 1 else None


def _declared(tree):
    """(width, height) of <size>, or None when missing or not whole numbers."""
    try:
        size = tuple(int(number(tree.findtext(f"size/{k}") or None))
                     for k in ("width", "height"))
    except (ValueError, OverflowError):
        return None
    return size if min(size) > 0 else None
