"""Masks: how segmentation reads, checks, decodes and encodes per-pixel labels.

The segmentation task's data hooks (`tasks.segmentation`) use these; the sources and
the pipeline are the ones every task uses (`data.files`, `data.sources`,
`data.pipeline.build`), so masks get the scan, skip counting, links and cache too.

Sources (what `load_data` takes for task="segmentation"):
  "dir/"         `dir/images/` and `dir/masks/`, matched by file name without extension
                 (cat.jpg <-> cat.png); optional `dir/classes.txt`, one class name a line
  "pairs.csv"    rows `image,mask`, paths relative to the CSV's folder; optional header
  (x, masks)     numpy arrays [N, H, W(, C)] and [N, H, W] of class indices
  tf.data.Dataset of (image, mask) pairs, "tfds:NAME[:SPLIT[:IMAGE,MASK]]"
                 (in `data.mask_tensors`)
Masks are PNGs of class indices: 8-bit grey ("L") or palette ("P") images, whose
palette *indices* are the classes (Pillow reads them; TF's decoder would expand the
palette to colours). Images are decoded by the training decoder; masks are resized
with nearest neighbour, so they keep class indices, and augmented with their image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from transferkit.core.errors import DataError
from transferkit.data import imageio
from transferkit.data.listing import (ListedFileRejected, csv_rows, is_header,
                                      read_listed_image, read_listing_text)
from transferkit.data.scan import SKIPPED, WARNING, Problem, link_problem, with_problems
from transferkit.data.scan import scan as run_scan

CLASSES_FILE = "classes.txt"


def read_mask(path) -> np.ndarray:
    """A mask file as uint8 [H, W] of class indices (palette PNGs: their indices).
    Opened through the listing guard (`data.listing`): a FIFO, an oversized or
    undecodable file is a DataError naming it, never a hang."""
    try:
        listed = read_listed_image(path, min_side=1)
    except ListedFileRejected as rejected:
        raise DataError(f"Cannot read mask {path}: {rejected.problem.reason}") from None
    try:
        with Image.open(io.BytesIO(listed.data)) as img:
            mode = img.mode
            if mode in ("P", "L", "1"):
                return np.asarray(img.convert("L") if mode == "1" else img, dtype=np.uint8)
            array = np.asarray(img)
    except (OSError, ValueError) as error:
        raise DataError(f"Cannot read mask {path}: {error}") from None
    if array.ndim == 3 and (array[..., :3] == array[..., :1]).all():
        return array[..., 0].astype(np.uint8)  # grey stored as RGB
    raise DataError(f"Mask {path} is a {mode} colour image; masks should "
                    "be 8-bit class-index PNGs (mode L or P).")


def list_pairs(src, follow_links=False):
    """(image paths, mask paths, class names or None, listing problems) of a folder
    with images/ and masks/ (and classes.txt), or a CSV of image,mask rows.
    follow_links: use links whose target lies outside the folder (default False: they
    are reported and skipped)."""
    if not isinstance(src, (str, os.PathLike)):
        raise DataError(f"task='segmentation' reads a folder with images/ and masks/, a "
                        f"CSV of image,mask rows, (x, masks) arrays, a tf.data.Dataset of "
                        f"(image, mask) pairs or 'tfds:NAME'. Received: "
                        f"{type(src).__name__}")
    path = Path(src)
    if path.is_dir():
        listed = _list_folder(path, follow_links)
    elif path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        listed = (*_read_csv(path), None, [])
    else:
        raise DataError(f"segmentation source {str(src)!r} is neither a folder with "
                        "images/ and masks/ subfolders nor a CSV of `image,mask` rows "
                        "(nor an (x, masks) tuple of arrays).")
    if not listed[0]:
        raise DataError(f"{src}: no image with a mask found.")
    return listed


def _list_folder(root, follow_links):
    images_dir, masks_dir = root / "images", root / "masks"
    missing = [str(d) for d in (images_dir, masks_dir) if not d.is_dir()]
    if missing:
        raise DataError(f"segmentation folder {root} needs subfolders images/ and masks/;"
                        f" missing: {missing}")
    problems = []
    images = _files(images_dir, root, follow_links, problems)
    masks = {Path(m).stem: m for m in _files(masks_dir, root, follow_links, problems)}
    paired = []
    for image in images:
        mask = masks.pop(Path(image).stem, None)
        if mask is None:
            problems.append(Problem(image, "missing_mask", f"no mask named "
                                    f"{Path(image).stem}.* in {masks_dir}", SKIPPED))
        else:
            paired.append((image, mask))
    problems += [Problem(m, "extra_mask", f"no image named {stem}.* in {images_dir}",
                         WARNING) for stem, m in sorted(masks.items())]
    names = None
    if (root / CLASSES_FILE).is_file():
        names = [n.strip() for n in read_listing_text(root / CLASSES_FILE, "classes file")
                 .splitlines() if n.strip()]
    return [i for i, _ in paired], [m for _, m in paired], names, problems


def _files(folder, root, follow_links, problems):
    """Files with image extensions directly in `folder` (special files too: the scan
    and the mask check report and skip them); links leaving `root` go to `problems`."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        problem = link_problem(str(path), root, follow_links)
        if problem is not None:
            problems.append(problem)
        elif not path.is_dir() and path.suffix.lower() in imageio.IMAGE_EXTENSIONS:
            found.append(str(path))
    return found


def _read_csv(path):
    rows = csv_rows(path, "mask CSV")
    if rows and is_header(rows[0][1]):
        rows = rows[1:]
    for line, row in rows:
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}, line {line}: a row should be `image,mask`; "
                            f"received {row!r}")

    def resolve(name):
        try:
            return str((path.parent / name.strip()).resolve(strict=False))
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: the path {name.strip()!r} cannot be used: "
                            f"{error}") from None

    return [resolve(r[0]) for _, r in rows], [resolve(r[1]) for _, r in rows]


def check_masks(images, masks, num_classes=None):
    """(problems, class indices found): each mask must be readable, the size of its
    image, and (given `num_classes`) hold only values 0..num_classes-1."""
    problems, found = [], set()
    for image, mask in zip(images, masks):
        try:
            array = read_mask(mask)
        except DataError as error:
            problems.append(Problem(image, "bad_mask", str(error), SKIPPED))
            continue
        try:
            width, height = read_listed_image(image).inspection.size
        except ListedFileRejected:
            continue  # the image scan reports unusable images
        size = (height, width)
        if tuple(array.shape) != tuple(size):
            problems.append(Problem(image, "mask_size", f"mask {mask} is "
                                    f"{array.shape[1]}x{array.shape[0]} but the image is "
                                    f"{size[1]}x{size[0]}", SKIPPED))
            continue
        values = np.unique(array)
        if num_classes is not None and values.max() >= num_classes:
            problems.append(Problem(image, "mask_values", f"mask {mask} holds values "
                                    f"{values[values >= num_classes].tolist()} outside the "
                                    f"class range 0..{num_classes - 1}", SKIPPED))
            continue
        found.update(int(v) for v in values)
    return problems, found


def scan_pairs(images, masks, listing_problems=(), num_classes=None, workers=None,
               normalized_dir=None, splits=None):
    """(ScanReport, {image: file to decode} of the usable pairs, class indices found):
    the image scan (`splits`: find duplicates across splits) plus the mask checks;
    pairs with a rejected image or mask are left out."""
    report = run_scan(images, splits=splits, workers=workers, normalized_dir=normalized_dir)
    mask_problems, found = check_masks(images, masks, num_classes)
    report = with_problems(report, list(listing_problems) + mask_problems)
    bad = {p.path for p in mask_problems}
    kept = {i: report.decode_paths[i] for i in images
            if i in report.decode_paths and i not in bad}
    return report, kept, found


def classes_in(masks):
    """The class indices the mask files hold (every mask read)."""
    return {int(v) for m in masks for v in np.unique(read_mask(m))}


def pixel_counts(masks, num_classes=2):
    """{class index: pixels} over mask files or an integer array of masks, for at least
    `num_classes` classes."""
    if np.asarray(masks).dtype.kind in "OSU":
        counts = sum(np.bincount(read_mask(m).ravel(), minlength=num_classes)
                     for m in masks)
    else:
        counts = np.bincount(np.asarray(masks, dtype=np.int64).ravel(),
                             minlength=num_classes)
    return dict(enumerate(np.asarray(counts).tolist()))


def array_masks(task, x, masks, class_names):
    """(class names, strata, uint8 masks [N, H, W]) of an (x, masks) arrays source:
    each mask the height and width of its image, values class indices."""
    x, masks = np.asarray(x), np.asarray(masks)
    if len(x) != len(masks) or x.shape[1:3] != masks.shape[1:3]:
        raise DataError(f"(x, masks) source: x has shape {x.shape} but masks {masks.shape};"
                        " each image needs a mask of its height and width.")
    if masks.ndim == 4 and masks.shape[-1] > 1:
        masks = masks.argmax(axis=-1)  # one-hot given: back to indices
    masks = masks.reshape(masks.shape[:3])
    found = {int(v) for v in np.unique(masks)}
    names = task.class_names(found, class_names, where="(x, masks)")
    limit = max(len(names), 2)
    if max(found) >= limit or min(found) < 0:
        raise DataError(f"(x, masks) source: mask values {sorted(found)} fall outside the "
                        f"class range 0..{limit - 1}.")
    return names, task.stratum(masks), masks.astype(np.uint8)


def decode_mask(label, image_size):
    """A raw mask in the pipeline (a mask file path, or a tensor [H, W(, 1)] of class
    indices) as uint8 [h, w, 1] at `image_size`, by nearest neighbour (values stay
    class indices). A file that fails to read fails the element (skipped and counted
    like an image that fails to decode)."""
    if label.dtype == tf.string:
        mask = tf.numpy_function(lambda p: read_mask(p.decode())[..., None], [label],
                                 tf.uint8)
        mask.set_shape([None, None, 1])
    else:
        mask = tf.cast(label if label.shape.rank == 3 else label[..., None], tf.uint8)
    return tf.image.resize(mask, image_size, method="nearest")


def encode_mask(mask, units):
    """A uint8 mask [H, W, 1] as the task's float32 labels [H, W, units]."""
    if units == 1:
        return tf.cast(mask, tf.float32)
    return tf.one_hot(tf.cast(mask[..., 0], tf.int32), units, dtype=tf.float32)
