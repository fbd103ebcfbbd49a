"""Segmentation sources: images with per-pixel class masks, checked, split and batched.

Sources (what `load_data` takes when the task is dense, e.g. task="segmentation"):
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

import csv
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from transferkit.core.errors import DataError
from transferkit.core.inputs import parse_size
from transferkit.data import imageio
from transferkit.data.augment import augment_pair, mix_batch, mixup_refusal
from transferkit.data.pipeline import AUTOTUNE, decode_image, to_rgb_float, with_seeds
from transferkit.data.scan import SKIPPED, WARNING, Problem, with_problems
from transferkit.data.scan import scan as run_scan
from transferkit.data.splits import SPLIT_NAMES, DataSplits, stratified_split

CLASSES_FILE = "classes.txt"


def read_mask(path) -> np.ndarray:
    """A mask file as uint8 [H, W] of class indices (palette PNGs: their indices)."""
    try:
        with Image.open(path) as img:
            if img.mode in ("P", "L", "1"):
                return np.asarray(img.convert("L") if img.mode == "1" else img,
                                  dtype=np.uint8)
            array = np.asarray(img)
    except (OSError, ValueError) as error:
        raise DataError(f"Cannot read mask {path}: {error}") from None
    if array.ndim == 3 and (array[..., :3] == array[..., :1]).all():
        return array[..., 0].astype(np.uint8)  # grey stored as RGB
    raise DataError(f"Mask {path} is a {Image.open(path).mode} colour image; masks should "
                    "be 8-bit class-index PNGs (mode L or P).")


def list_pairs(src):
    """(image paths, mask paths, class names or None, listing problems) of a folder
    with images/ and masks/ (and classes.txt), or a CSV of image,mask rows."""
    path = Path(src)
    if path.is_dir():
        return _list_folder(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return (*_read_csv(path), None, [])
    raise DataError(f"segmentation source {str(src)!r} is neither a folder with images/ "
                    "and masks/ subfolders nor a CSV of `image,mask` rows (nor an "
                    "(x, masks) tuple of arrays).")


def _list_folder(root):
    images_dir, masks_dir = root / "images", root / "masks"
    missing = [str(d) for d in (images_dir, masks_dir) if not d.is_dir()]
    if missing:
        raise DataError(f"segmentation folder {root} needs subfolders images/ and masks/;"
                        f" missing: {missing}")
    images = _files(images_dir)
    masks = {Path(m).stem: m for m in _files(masks_dir)}
    paired, problems = [], []
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
        names = [n.strip() for n in (root / CLASSES_FILE).read_text().splitlines()
                 if n.strip()]
    return [i for i, _ in paired], [m for _, m in paired], names, problems


def _files(folder):
    return sorted(str(p) for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in imageio.IMAGE_EXTENSIONS)


def _read_csv(path):
    with open(path, newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t" if path.suffix == ".tsv"
                                      else ",") if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows) if len(r) < 2 or not r[0].strip()
           or not r[1].strip()]
    if bad:
        raise DataError(f"{path}: row {bad[0] + 1} should be `image,mask`; received "
                        f"{rows[bad[0]]!r}")
    resolve = lambda p: str((path.parent / p.strip()).resolve(strict=False))  # noqa: E731
    return [resolve(r[0]) for r in rows], [resolve(r[1]) for r in rows]


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
            with Image.open(image) as img:
                size = img.size[::-1]
        except OSError:
            continue  # the image scan reports unreadable images
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
               normalized_dir=None):
    """(ScanReport, kept images, kept masks, class indices found): the image scan plus
    the mask checks; pairs with a rejected image or mask are left out."""
    report = run_scan(images, workers=workers, normalized_dir=normalized_dir)
    mask_problems, found = check_masks(images, masks, num_classes)
    report = with_problems(report, list(listing_problems) + mask_problems)
    bad = {p.path for p in mask_problems}
    kept = [(report.decode_paths[i], m) for i, m in zip(images, masks)
            if i in report.decode_paths and i not in bad]
    return report, [i for i, _ in kept], [m for _, m in kept], found


def pair_dataset(images, masks, units, *, image_size, batch_size=32, training=False,
                 augment=None, seed=None, shuffle_buffer=None, deterministic=False):
    """Batches of (float32 [B, H, W, 3] 0-255, float32 one-hot masks [B, H, W, units])
    from image and mask files (units=1: the 0/1 mask itself)."""
    size = parse_size(image_size)

    def prepare(image, mask):
        m = tf.numpy_function(lambda p: read_mask(p.decode())[..., None], [mask], tf.uint8)
        m.set_shape([None, None, 1])
        return decode_image(image, size), tf.image.resize(m, size, method="nearest")

    with tf.device("/CPU:0"):
        ds = tf.data.Dataset.from_tensor_slices(([os.fspath(p) for p in images],
                                                 [os.fspath(m) for m in masks]))
        return build_pairs(ds, prepare, len(images), units, batch_size, training, augment, seed,
                      shuffle_buffer, deterministic)


def array_dataset(x, masks, units, *, image_size=None, batch_size=32, training=False,
                  augment=None, seed=None, shuffle_buffer=None, deterministic=False):
    """Like `pair_dataset`, from arrays x [N, H, W(, C)] and masks [N, H, W]."""
    x, masks = np.asarray(x), np.asarray(masks)
    size = parse_size(image_size or tuple(x.shape[1:3]))
    with tf.device("/CPU:0"):
        xs = tf.constant(x)
        ms = tf.constant(masks.reshape(masks.shape[:3] + (1,)).astype(np.uint8))

        def prepare(i):
            mask = tf.image.resize(tf.gather(ms, i), size, method="nearest")
            return to_rgb_float(tf.gather(xs, i), size), mask

        return build_pairs(tf.data.Dataset.range(len(x)), prepare, len(x), units, batch_size,
                      training, augment, seed, shuffle_buffer, deterministic)


def build_pairs(ds, prepare, n, units, batch_size, training, augment, seed,
                shuffle_buffer, deterministic):
    """Batches of (image, one-hot mask) from `ds` of cheap elements (paths, indices,
    or pairs) that `prepare` turns into (float32 image, uint8 mask [H, W, 1]) at the
    model's size; the training split is shuffled (buffer shuffle_buffer or n),
    augmented with its mask and cutmixed (mixup: DataError)."""
    ordered = deterministic or not training
    if training and augment is not None and augment.mixup_alpha > 0:
        raise DataError(mixup_refusal(augment))
    if training:  # shuffle the cheap elements (paths, indices) before decoding
        ds = ds.shuffle(shuffle_buffer or n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    if training and augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.stack([r, tf.constant(2, tf.int64)]))
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: augment_pair(xy[0], xy[1], s, augment),
            num_parallel_calls=AUTOTUNE, deterministic=ordered)
    ds = ds.map(lambda image, mask: (image, encode_mask(mask, units)),
                num_parallel_calls=AUTOTUNE, deterministic=ordered).batch(batch_size)
    if training and augment is not None and augment.mixes:  # cutmix: box into the mask
        ds = with_seeds(ds, seed, 1).map(lambda xy, s: mix_batch(xy[0], xy[1], s, augment),
                                         num_parallel_calls=AUTOTUNE, deterministic=ordered)
    options = tf.data.Options()
    options.deterministic = ordered
    return ds.with_options(options).prefetch(AUTOTUNE)


def encode_mask(mask, units):
    """A uint8 mask [H, W, 1] as the task's float32 labels [H, W, units]."""
    if units == 1:
        return tf.cast(mask, tf.float32)
    return tf.one_hot(tf.cast(mask[..., 0], tf.int32), units, dtype=tf.float32)


def from_masks(source, *, task, class_names, val_split, test_split, augment, cache,
               class_weights, scan, normalized_dir, workers, verbose, pipe) -> DataSplits:
    """A folder, CSV or (x, masks) segmentation source, split at random by `seed`.

    class_weights: weigh classes by their pixel counts in the training masks
    (`Task.class_weight`), for rare classes."""
    if isinstance(source, tuple) and len(source) == 2:
        return _from_arrays(*source, task=task, class_names=class_names,
                            val_split=val_split, test_split=test_split, augment=augment,
                            class_weights=class_weights, pipe=pipe)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"task={task.name!r} reads a folder with images/ and masks/, a "
                        f"CSV of image,mask rows, (x, masks) arrays, a tf.data.Dataset of "
                        f"(image, mask) pairs or 'tfds:NAME'. Received: "
                        f"{type(source).__name__}")
    images, masks, listed_names, problems = list_pairs(source)
    if not images:
        raise DataError(f"{source}: no image with a mask found.")
    names = class_names if class_names is not None else listed_names
    limit = None if names is None else max(len(names), 2)
    report = None
    if scan:
        report, images, masks, found = scan_pairs(images, masks, problems, limit,
                                                  workers, normalized_dir)
        if verbose:
            print(report.summary(max_lines=5))
        if not images:
            raise DataError(f"{source}: no usable image/mask pair after the scan:\n"
                            f"{report.summary()}")
    else:
        found = {int(v) for m in masks for v in np.unique(read_mask(m))}
    names = task.class_names(found, names, where=str(source))
    idx = stratified_split(task.stratum(images), val_split, test_split, pipe["seed"])
    units = task.output_units(len(names))
    built, parts = {}, {}
    for split, chosen in zip(SPLIT_NAMES, idx):
        if len(chosen):
            parts[split] = ([images[i] for i in chosen], [masks[i] for i in chosen])
            built[split] = pair_dataset(*parts[split], units, training=split == "train",
                                        augment=augment if split == "train" else None,
                                        **pipe)
    weights = None
    if class_weights:
        counts = sum(np.bincount(read_mask(m).ravel(), minlength=max(len(names), 2))
                     for m in parts["train"][1])
        weights = task.class_weight(dict(enumerate(counts.tolist())))
    return DataSplits(
        train=built["train"], val=built.get("val"), test=built.get("test"),
        class_names=tuple(names), task=task.name, num_classes=len(names),
        image_size=pipe["image_size"], class_weight=weights,
        **{f"{s}_files": tuple(p[0]) for s, p in parts.items()},
        **{f"{s}_labels": np.asarray(p[1], dtype=object) for s, p in parts.items()},
        scan_report=report, counts={s: len(p[0]) for s, p in parts.items()})


def _from_arrays(x, masks, *, task, class_names, val_split, test_split, augment,
                 class_weights, pipe):
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
    idx = stratified_split(task.stratum(masks), val_split, test_split, pipe["seed"])
    units = task.output_units(len(names))
    built = {s: array_dataset(x[i], masks[i], units, training=s == "train",
                              augment=augment if s == "train" else None, **pipe)
             for s, i in zip(SPLIT_NAMES, idx) if len(i)}
    weights = None
    if class_weights:
        counts = np.bincount(masks[idx[0]].ravel(), minlength=limit)
        weights = task.class_weight(dict(enumerate(counts.tolist())))
    return DataSplits(
        train=built["train"], val=built.get("val"), test=built.get("test"),
        class_names=tuple(names), task=task.name, num_classes=len(names),
        image_size=pipe["image_size"], class_weight=weights,
        counts={s: len(i) for s, i in zip(SPLIT_NAMES, idx) if len(i)})
