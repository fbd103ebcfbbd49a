"""YOLO labels: one `.txt` per image, a row `class cx cy w h` per object (normalised to
[0, 1] of the upright image; a longer row `class x1 y1 x2 y2 ...` is a polygon, read
as its bounding box), and a `data.yaml`:

    path: .                 # optional: the root the other paths are relative to
    train: images/train     # a folder of images, a .txt list of images, or a list
    val: images/val         # optional, like test
    names: [cat, dog]       # or {0: cat, 1: dog}; optional nc must match

Ultralytics' conventions: an image `.../images/x/a.jpg` has its labels in
`.../labels/x/a.txt`; a path in the yaml starting with `../` that does not exist is
tried without it (Roboflow's exports). An image without a label file is an image
without objects (a warning). A folder with `images/` and `labels/` (and optionally
`classes.txt`, one name a line) reads without a yaml. Without names, classes are
named by their index ("0", "1", ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from transferkit.core.errors import DataError
from transferkit.data import imageio
from transferkit.data.annotations import guarded
from transferkit.data.annotations.model import Listed, number
from transferkit.data.scan import SKIPPED, WARNING, Problem, read_regular_file, walk

YAML_MAX_BYTES = 2**20
LABEL_MAX_BYTES = 16 * 2**20
SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.txt"
MAX_INDEX = 9999  # the largest class index read without names (they are made 0..k)


@dataclass(frozen=True)
class YoloSplit:
    """One split ("train", "val" or "test") of a YOLO data.yaml: a source
    `read_objects` takes, as `split_sources` gives them."""

    yaml: str
    split: str = "train"

    def __str__(self):
        return f"{self.yaml} ({self.split})"


def split_sources(yaml_path):
    """{"train": YoloSplit, "val": ..., "test": ...} for the splits a data.yaml names."""
    config = _read_yaml(Path(yaml_path))
    return {s: YoloSplit(str(yaml_path), s) for s in SPLITS if config.get(s)}


def read_yolo_yaml(source: YoloSplit, follow_links=False):
    """(listings, problems, class names) of one split of a data.yaml."""
    path = Path(source.yaml)
    config = _read_yaml(path)
    names = _names(path, config)
    if source.split not in SPLITS or not config.get(source.split):
        named = [s for s in SPLITS if config.get(s)]
        raise DataError(f"{path} names no '{source.split}' images; it names "
                        f"{named or 'none'}.")
    root = _root(path, config)
    entries = config[source.split]
    entries = entries if isinstance(entries, list) else [entries]
    images, problems = [], []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise DataError(f"{path}: '{source.split}' should be a path or a list of "
                            f"paths; received {entry!r}")
        found, walked = _images_of(_resolve(root, entry.strip()), path, source.split,
                                   follow_links)
        images += found
        problems += walked
    listed, more = _labels(images, names)
    return listed, problems + more, names


def read_yolo_folder(root, follow_links=False):
    """(listings, problems, class names) of a folder with images/ and labels/."""
    root = Path(root)
    names = None
    if os.path.lexists(root / CLASSES_FILE):
        text = guarded.read_text(root / CLASSES_FILE, "class list (one name a line)")
        names = tuple(n.strip() for n in text.splitlines() if n.strip()) or None
    images, problems = _images_of(root / "images", root, "images", follow_links)
    listed, more = _labels(images, names)
    return listed, problems + more, names


def _read_yaml(path):
    text = guarded.read_text(path, "YOLO data.yaml", YAML_MAX_BYTES)
    try:
        config = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as error:
        raise DataError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: a YOLO data.yaml is a mapping with 'train' (and "
                        f"'val', 'names'); received a {type(config).__name__}.")
    return config


def _names(path, config):
    """The class names of a data.yaml (a list, or a dict 0..n-1), or None."""
    raw, nc = config.get("names"), config.get("nc")
    if raw is None:
        names = None
    elif isinstance(raw, list):
        names = raw
    elif isinstance(raw, dict):
        keys = list(raw)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) \
                or set(keys) != set(range(len(keys))):
            raise DataError(f"{path}: 'names' as a mapping needs the keys 0..{len(keys) - 1}"
                            f"; received keys {keys[:10]!r}")
        names = [raw[i] for i in range(len(keys))]
    else:
        raise DataError(f"{path}: 'names' should be a list or a mapping of index to "
                        f"name; received {type(raw).__name__}")
    if names is not None:
        bad = [n for n in names if isinstance(n, bool) or not isinstance(n, (str, int, float))
               or not str(n).strip()]
        if bad:
            raise DataError(f"{path}: class names should be text; received {bad[0]!r}")
        names = tuple(str(n).strip() for n in names)
        if len(set(names)) != len(names):
            raise DataError(f"{path}: 'names' repeats a name: {list(names)}")
    if nc is not None:
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise DataError(f"{path}: 'nc' should be a positive integer; received {nc!r}")
        if names is not None and nc != len(names):
            raise DataError(f"{path}: nc={nc} but 'names' lists {len(names)} classes.")
        if names is None:
            names = tuple(str(i) for i in range(nc))
    return names


def _root(path, config):
    base = config.get("path")
    if base is None or base == "":
        return path.parent
    if not isinstance(base, str):
        raise DataError(f"{path}: 'path' should be a folder; received {base!r}")
    return path.parent / base  # a relative root is relative to the yaml


def _resolve(root, entry):
    out = Path(os.path.normpath(root / entry))
    if not os.path.lexists(out) and entry.startswith("../"):
        out = Path(os.path.normpath(root / entry[3:]))  # Roboflow's "../train/images"
    return out


def _images_of(where, yaml_path, key, follow_links):
    """(image paths, problems) of a folder, a .txt list of images, or one image."""
    if "\x00" in str(where) or not os.path.lexists(where):
        raise DataError(f"{yaml_path}: the '{key}' images {str(where)!r} do not exist.")
    if where.is_dir():
        files, problems = walk(where, follow_links=follow_links)
        return sorted(f for f in files
                      if Path(f).suffix.lower() in imageio.IMAGE_EXTENSIONS), problems
    if where.suffix.lower() == ".txt":
        text = guarded.read_text(where, "list of images (one path a line)")
        lines = [s.strip() for s in text.splitlines() if s.strip()]
        return [os.path.normpath(os.path.join(where.parent, s)) for s in lines], []
    return [str(where)], []


def label_path(image: str) -> str:
    """The label file of an image: the last `images` folder of its path becomes
    `labels` (beside the image when there is none), the suffix `.txt`."""
    head, sep, tail = image.rpartition(f"{os.sep}images{os.sep}")
    base = f"{head}{os.sep}labels{os.sep}{tail}" if sep else image
    return os.path.splitext(base)[0] + ".txt"


def _labels(images, names):
    """(listings, problems) of the images' label files; without names, classes are
    their indices as text and the names are found."""
    listed, problems = [], []
    for image in images:
        listed.append(_read_label(image, names, problems))
    return listed, problems


def _read_label(image, names, problems):
    path = label_path(image)
    item = Listed(image, path, normalised=True)
    try:
        data = read_regular_file(path, LABEL_MAX_BYTES)
    except FileNotFoundError:
        problems.append(Problem(image, "no_label_file", f"no label file {path}; read as "
                                "an image without objects", WARNING))
        return item
    except (OSError, ValueError) as exc:
        item.broken = f"{path}: cannot read the label file ({getattr(exc, 'strerror', None) or exc})"
        return item
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        item.broken = f"{path}: not a text label file"
        return item
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {n}"
        try:
            if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
                raise ValueError(f"received {len(fields)} fields")
            values = [number(v) for v in fields]
        except ValueError as error:
            item.broken = (f"{where}: a row should be `class cx cy w h` (normalised) or "
                           f"`class x1 y1 x2 y2 ...` (a polygon); {error}")
            return item
        cls = values[0]
        if cls < 0 or not cls.is_integer():
            item.broken = f"{where}: the class should be an index 0, 1, ...; received {fields[0]!r}"
            return item
        if names is None and cls > MAX_INDEX:
            item.broken = (f"{where}: class index {fields[0]} is larger than "
                           f"{MAX_INDEX}; name the classes in data.yaml or classes.txt")
            return item
        cls = int(cls)
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        else:
            xs, ys = values[1::2], values[2::2]
            box = (min(xs), min(ys), max(xs), max(ys))
        if names is not None and cls >= len(names):
            problems.append(Problem(image, "unknown_class", f"{where}: class index {cls} "
                                    f"is not among the {len(names)} names "
                                    f"{list(names)[:20]}; object left out", WARNING))
            continue
        item.boxes.append((names[cls] if names is not None else str(cls), box, where))
    return item


def index_names(labels) -> tuple[str, ...]:
    """Class names "0".."k" for labels read without names (k: the largest index)."""
    found = [int(o.label) for item in labels for o in item.objects]
    return tuple(str(i) for i in range(max(found, default=-1) + 1))
