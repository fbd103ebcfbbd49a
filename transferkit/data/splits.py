"""`DataSplits`, what `load_data` returns, and the seeded stratified split."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

# Light, in `data.config`; importable from here as before.
from transferkit.data.config import SPLIT_NAMES, check_split_fractions  # noqa: F401
from transferkit.data.scan import ScanReport


@dataclass(frozen=True)
class DataSplits:
    """What load_data returns. `*_files` are the files the pipeline decodes (a scan may
    swap in normalised copies) with `*_labels` the matching labels as the task reads
    them (encoded rows, or mask files), so `make_dataset(s.train_files, s.train_labels,
    training=False, task=s.task, num_classes=len(s.class_names))` replays a split in
    a fixed order; both are empty/None for in-memory and TFDS sources."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: tuple[str, ...]
    task: object  # the Task whose pipeline encoded the labels (bound to a model's grid)
    num_classes: int  # output units: C, 1 for binary, k for regression
    image_size: tuple[int, int]
    class_weight: dict[int, float] | None = None
    train_files: tuple[str, ...] = ()
    val_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    train_labels: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    scan_report: ScanReport | None = None
    counts: dict[str, int] | None = None  # images per split, when known
    skipped: object = None  # file sources: a pipeline.SkipWatch of skipped images
    # With a fixes file: what it changed ({"relabel": n, "exclude": n, "not_in_data":
    # [paths of rows naming no file of the data]}, `data.fixes.Fixes.applied`).
    fixes: dict | None = None
    # What `load_data` was given: the training split's augmentation (an AugmentConfig,
    # or None) and the seed, so a feature cache can re-read the files the same way.
    augment: object = None
    seed: int = 0

    def example_files(self) -> list[str]:
        """Every file an example of a split is read from: the images, and the label
        files where labels are files (masks), to name the ones that fail."""
        found = [*self.train_files, *self.val_files, *self.test_files]
        for labels in (self.train_labels, self.val_labels, self.test_labels):
            if labels is not None and np.asarray(labels).dtype.kind in "OSU":
                found += [str(p) for p in labels]
        return found


def stratified_split(strata, val_split: float, test_split: float, seed: int):
    """(train, val, test) index arrays: per stratum, shuffle with the seed and cut.

    Same inputs, same split; no index appears twice; every stratum with at least one
    item keeps one in train.
    """
    strata = np.asarray(list(strata), dtype=object)
    rng = np.random.default_rng(seed)
    out = ([], [], [])
    for value in sorted(set(strata.tolist()), key=str):
        members = rng.permutation(np.flatnonzero(strata == value))
        n = len(members)
        n_val = min(int(round(n * val_split)), max(n - 1, 0))
        n_test = min(int(round(n * test_split)), max(n - 1 - n_val, 0))
        out[1].extend(members[:n_val])
        out[2].extend(members[n_val:n_val + n_test])
        out[0].extend(members[n_val + n_test:])
    return tuple(np.sort(np.asarray(o, dtype=np.int64)) for o in out)


def stratified_sample(strata, n: int, seed: int = 0):
    """Up to `n` indices drawn round-robin across strata (each shuffled by `seed`), so
    every class is represented however the items are ordered. Strata are any hashable
    values (class names, label tuples)."""
    groups = {}
    for i, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(i)
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(groups[key])) for key in sorted(groups, key=repr)]
    picked = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(int(queue.pop(0)))
    return np.asarray(sorted(picked), dtype=np.int64)


def cache_for(cache, split: str):
    """The `cache` argument of one split's pipeline (one cache file per split)."""
    if cache is None or cache == "memory":
        return cache
    return f"{os.fspath(cache)}.{split}"
