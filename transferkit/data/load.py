"""`load_data`: any source in, a frozen `DataSplits` of batched tf.data datasets out.

    splits = load_data("data/pets", image_size=224, val_split=0.2, seed=0)
    model.fit(splits.train, validation_data=splits.val,
              class_weight=splits.class_weight)

Sources:
  "dir/"                       folder of class subfolders (files at any depth)
  "labels.csv"                 rows `path,label`; "a|b" for several labels; paths
                               relative to the CSV's folder; an optional header row
  {"train": src, "val": src, "test": src}
                               separate folders or CSVs; a missing "val"/"test" is
                               carved from "train" with val_split/test_split
  "tfds:NAME" / "tfds:NAME:SPLIT"
                               through tfds.load (data_dir=...); without SPLIT a
                               requested val/test is the dataset's own validation/
                               test split when it has one, else carved from train
  (x, y)                       numpy arrays; y class indices, one-/multi-hot or targets
  tf.data.Dataset              of unbatched (image, label)
With task="segmentation" the source pairs images with masks instead:
a folder with images/ and masks/, a CSV of image,mask rows, (x, masks) arrays (see
`data.masks`), a tf.data.Dataset of (image, mask) pairs, or "tfds:NAME[:SPLIT]" with
an image and a mask feature, found or named: "tfds:NAME:SPLIT:IMAGE,MASK" (see
`data.mask_tensors`).
With task="localization" each image has one class and one box: a CSV of
`path,label,xmin,ymin,xmax,ymax` rows (pixels of each image), a folder holding
boxes.csv, a Pascal VOC folder, or (x, y) arrays with y rows (class index, xmin, ymin,
xmax, ymax) normalised (see `data.boxes`).
File sources are scanned first (scan=True) and rejected files skipped; splits from
one source are stratified per class and reproducible for a seed. TFDS and Dataset
sources are split by position (not stratified). Labels are encoded by the task
(`tasks.Task.encode`): one-hot, [B, 1], multi-hot or [B, k] targets.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from transferkit.core.errors import DataError
from transferkit.core.inputs import parse_size
from transferkit.core.task_registry import DEFAULT_TASK, get_task
from transferkit.data import files, sources
from transferkit.data.config import (DEFAULT_BATCH_SIZE, AugmentConfig, DataConfig,
                                     check_split_fractions)
from transferkit.data.fixes import read_fixes
from transferkit.data.splits import DataSplits


def load_data(source, *, image_size, batch_size: int = DEFAULT_BATCH_SIZE,
              task: str = DEFAULT_TASK, val_split: float = DataConfig.val_split,
              test_split: float = DataConfig.test_split, seed: int = 0,
              augment: AugmentConfig | bool | None = None,
              shuffle_buffer: int | None = None, cache=None, scan: bool = DataConfig.scan,
              class_weights: bool = DataConfig.class_weights, deterministic: bool = False,
              class_names=None, data_dir=None, normalized_dir=None,
              workers: int | None = None, follow_links: bool = DataConfig.follow_links,
              fixes=None, verbose: bool = True) -> DataSplits:
    """Load, scan, split and batch a data source (see the module docstring).

    image_size: an int, (height, width) or an `InputSpec`. The defaults of batch_size,
    task, val_split, test_split, scan, class_weights and follow_links are a recipe's
    (`DataConfig`, `DEFAULT_BATCH_SIZE`, `DEFAULT_TASK`: 32, multiclass, 0.2, 0.0, True,
    False, False).
    augment: an AugmentConfig, True for AugmentConfig(), or None (default); applied to
        the training split only. cache: None, "memory" or a file path prefix.
    class_names: fixes the class order (default sorted). scan: run the health scan
        on file sources and skip rejected files (default True). class_weights: fill
        DataSplits.class_weight from the training split (multiclass/binary).
    deterministic: same seed -> same batches (slower parallel map).
    shuffle_buffer: default the whole training split (paths are shuffled before
        decoding), or 1024 decoded images with a cache or a tensor source.
    data_dir: TFDS data folder. normalized_dir, workers: passed to `scan`.
    follow_links: use links in a source folder whose target lies outside it
        (default False: they are reported and skipped).
    fixes: a fixes file (path or `data.fixes.Fixes`, see `transferkit doctor`): its
        relabels and exclusions are applied to a file source's listing (default None).
    verbose: print the scan's counts (default True).
    """
    task = get_task(task)
    check_split_fractions(val_split, test_split)
    if augment is True:
        augment = AugmentConfig()
    if augment is not None and augment is not False and not isinstance(augment,
                                                                        AugmentConfig):
        raise DataError("The `augment` argument should be an AugmentConfig, True or "
                        f"None. Received: augment={augment!r}")
    size = getattr(image_size, "size", None) or parse_size(image_size)
    pipe = dict(image_size=size, batch_size=batch_size, seed=seed,
                shuffle_buffer=shuffle_buffer, deterministic=deterministic)
    common = dict(task=task, val_split=val_split, test_split=test_split,
                  augment=augment or None, cache=cache, class_weights=class_weights,
                  pipe=pipe)
    is_tfds = isinstance(source, (str, os.PathLike)) and str(source).startswith("tfds:")
    # Sources are task-agnostic: the task reads their labels (classes, or masks).
    if fixes is not None and (is_tfds or not isinstance(source, (str, os.PathLike, dict))):
        raise DataError("The `fixes` argument applies to folder and CSV sources only: "
                        "their files have paths to fix. Received: a "
                        f"{'TFDS' if is_tfds else type(source).__name__} source.")
    if isinstance(fixes, (str, os.PathLike)):
        fixes = read_fixes(fixes)
    if is_tfds or isinstance(source, tf.data.Dataset):
        splits = sources.from_tensors(str(source) if is_tfds else source,
                                      data_dir=data_dir, class_names=class_names, **common)
    elif isinstance(source, tuple) and len(source) == 2:
        splits = sources.from_arrays(*source, class_names=class_names, **common)
    else:
        splits = files.from_files(source, class_names=class_names, scan=scan,
                                  normalized_dir=normalized_dir, workers=workers,
                                  follow_links=follow_links, fixes=fixes, verbose=verbose,
                                  **common)
    return dataclasses.replace(splits, augment=augment or None, seed=seed)
