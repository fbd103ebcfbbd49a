"""Data sources, splits, class names, class weights: `load_data` -> `DataSplits`.

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
File sources are scanned first (scan=True) and rejected files skipped; splits from
one source are stratified per class and reproducible for a seed. TFDS and Dataset
sources are split by position (not stratified).
"""

from __future__ import annotations

import collections
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from transferkit.data import imageio, pipeline as tfdata
from transferkit.data.augment import AugmentConfig
from transferkit.core.errors import DataError, suggest
from transferkit.data.scan import ScanReport, balanced_weights, walk, with_problems
from transferkit.data.scan import scan as run_scan
from transferkit.data.pipeline import dataset_from_arrays, make_dataset  # noqa: F401 (re-export)

TASKS = ("multiclass", "binary", "multilabel", "regression")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DataSplits:
    """What load_data returns. `*_files` are the files the pipeline decodes (a scan may
    swap in normalised copies) with `*_labels` the matching encoded rows, so
    `make_dataset(s.train_files, s.train_labels, training=False)` replays a split in
    a fixed order; both are empty/None for in-memory and TFDS sources."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: tuple[str, ...]
    task: str
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


def load_data(source, *, image_size, batch_size: int = 32, task: str = "multiclass",
              val_split: float = 0.2, test_split: float = 0.0, seed: int = 0,
              augment: AugmentConfig | bool | None = None,
              shuffle_buffer: int | None = None, cache=None, scan: bool = True,
              class_weights: bool = False, deterministic: bool = False,
              class_names=None, data_dir=None, normalized_dir=None,
              workers: int | None = None, verbose: bool = True) -> DataSplits:
    """Load, scan, split and batch a data source (see the module docstring).

    augment: an AugmentConfig, True for AugmentConfig(), or None (default); applied to
        the training split only. cache: None, "memory" or a file path prefix.
    class_names: fixes the class order (default sorted). scan: run the health scan
        on file sources and skip rejected files (default True). class_weights: fill
        DataSplits.class_weight from the training split (multiclass/binary).
    deterministic: same seed -> same batches (slower parallel map).
    shuffle_buffer: default the whole training split (paths are shuffled before
        decoding), or 1024 decoded images with a cache or a tensor source.
    data_dir: TFDS data folder. normalized_dir, workers: passed to `scan`.
    verbose: print the scan's counts (default True).
    """
    if task not in TASKS:
        raise DataError(f"The `task` argument should be one of {TASKS}. "
                        f"Received: task={task!r}.{suggest(task, TASKS)}")
    for name, value in (("val_split", val_split), ("test_split", test_split)):
        if not 0 <= value < 1:
            raise DataError(f"{name} must be in [0, 1). Received: {name}={value}")
    if val_split + test_split >= 1:
        raise DataError(f"val_split + test_split must be < 1. Received: "
                        f"{val_split} + {test_split}")
    if augment is True:
        augment = AugmentConfig()
    if augment is not None and augment is not False and not isinstance(augment,
                                                                        AugmentConfig):
        raise DataError("The `augment` argument should be an AugmentConfig, True or "
                        f"None. Received: augment={augment!r}")
    augment = augment or None
    size = tfdata.as_size(image_size)
    pipe = dict(image_size=size, batch_size=batch_size, seed=seed,
                shuffle_buffer=shuffle_buffer, deterministic=deterministic)
    from transferkit.data import sources  # imports this module: keep the import here

    if isinstance(source, (str, os.PathLike)) and str(source).startswith("tfds:"):
        return sources.from_tfds(str(source), task=task, data_dir=data_dir,
                                 val_split=val_split, test_split=test_split,
                                 augment=augment, cache=cache,
                                 class_weights=class_weights, pipe=pipe)
    if isinstance(source, tf.data.Dataset):
        return sources.from_dataset(source, task=task, class_names=class_names,
                                    val_split=val_split, test_split=test_split,
                                    augment=augment, cache=cache,
                                    class_weights=class_weights, pipe=pipe)
    if isinstance(source, tuple) and len(source) == 2:
        return sources.from_arrays(*source, task=task, class_names=class_names,
                                   val_split=val_split, test_split=test_split,
                                   augment=augment, cache=cache,
                                   class_weights=class_weights, pipe=pipe)

    # File sources: {split: (paths, raw label strings)}.
    named = source if isinstance(source, dict) else {"train": source}
    unknown = set(named) - set(SPLIT_NAMES)
    if unknown or "train" not in named:
        bad = sorted(unknown)[0] if unknown else ""
        raise DataError(f"The `source` dict should have the key 'train' and optionally "
                        f"'val' and 'test'. Received keys: {sorted(named)}."
                        f"{suggest(bad, SPLIT_NAMES) if bad else ''}")
    listed = {k: list_source(v, scanned=scan) for k, v in named.items()}
    for split, (paths, _, _) in listed.items():
        if not paths:
            raise DataError(f"no image files found in {str(named[split])!r} ({split}); "
                            "expected class subfolders with images, or CSV rows "
                            "`path,label`.")
    files = {k: (paths, labels) for k, (paths, labels, _) in listed.items()}
    report = None
    if scan:
        walk_problems = [p for _, _, found in listed.values() for p in found]
        report = _scan_files(files, walk_problems, task, normalized_dir, workers, verbose)
    found = sorted({c for paths, labels in files.values() for lab in labels
                    for c in _label_parts(lab, task)})
    names = _class_order(found, class_names, task, named["train"])
    idx = stratified_split(_strata(files["train"][1], task), 0.0 if "val" in files else val_split,
                           0.0 if "test" in files else test_split, seed)
    parts = {}
    for split, chosen in zip(SPLIT_NAMES, idx):
        if split != "train" and split in files:
            paths, labels = files[split]
        else:
            paths = [files["train"][0][i] for i in chosen]
            labels = [files["train"][1][i] for i in chosen]
        if paths:
            parts[split] = (paths, encode_labels(labels, task, names))
    built = {s: make_dataset(p, y, training=s == "train", cache=_cache_for(cache, s),
                             augment=augment if s == "train" else None, **pipe)
             for s, (p, y) in parts.items()}
    train_y = parts["train"][1]
    return DataSplits(
        train=built["train"], val=built.get("val"), test=built.get("test"),
        class_names=names, task=task, num_classes=num_outputs(task, names, train_y),
        image_size=size,
        class_weight=class_weight_for(train_y, task) if class_weights else None,
        **{f"{s}_files": tuple(parts[s][0]) for s in parts},
        **{f"{s}_labels": parts[s][1] for s in parts},
        scan_report=report, counts={s: len(p[0]) for s, p in parts.items()})


def list_source(src, *, scanned: bool = True):
    """(paths, raw labels, listing problems) from a class-folder tree or a CSV file;
    without a scan (scanned=False) only files with image extensions are listed."""
    path = Path(src)
    if path.is_dir():
        files, problems = walk(path)
        if not scanned:  # nothing will weed out non-images: trust extensions
            files = [f for f in files if Path(f).suffix.lower() in imageio.IMAGE_EXTENSIONS]
        pairs = [(f, Path(f).relative_to(path).parts) for f in files]
        pairs = [(f, parts[0]) for f, parts in pairs if len(parts) > 1]
        return [f for f, _ in pairs], [c for _, c in pairs], problems
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return (*_read_csv(path), [])
    raise DataError(f"source {str(src)!r} is neither a folder of class subfolders nor "
                    "a CSV file (nor 'tfds:NAME', an (x, y) tuple or a tf.data.Dataset).")


def _read_csv(path: Path):
    with open(path, newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t" if path.suffix == ".tsv"
                                      else ",") if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]  # header row
    bad = [i for i, r in enumerate(rows) if len(r) < 2 or not r[0].strip()]
    if bad:
        raise DataError(f"{path}: row {bad[0] + 1} should be `path,label`; received "
                        f"{rows[bad[0]]!r}")
    paths = [str((path.parent / r[0].strip()).resolve(strict=False)) for r in rows]
    return paths, ["|".join(c.strip() for c in r[1:]).strip("|") for r in rows]


def _label_parts(label: str, task: str) -> list[str]:
    if task == "regression":
        return []
    parts = [p for p in label.split("|") if p]
    if task != "multilabel" and len(parts) != 1:
        raise DataError(f"label {label!r} holds {len(parts)} classes but task={task!r}; "
                        "use task='multilabel' for 'a|b' labels.")
    return parts


def _class_order(found, class_names, task, where) -> tuple[str, ...]:
    if task == "regression":
        return ()
    names = tuple(class_names) if class_names is not None else tuple(found)
    missing = sorted(set(found) - set(names))
    if missing:
        raise DataError(f"class_names={names} lacks classes found in the data: {missing}")
    need = {"multiclass": "at least 2", "binary": "exactly 2", "multilabel": "at least 1"}
    ok = {"multiclass": len(names) >= 2, "binary": len(names) == 2,
          "multilabel": len(names) >= 1}
    if not ok[task]:
        raise DataError(f"{where}: found {len(names)} class(es) {list(names)}; "
                        f"task={task!r} needs {need[task]}. For a folder source, put "
                        "each class's images in its own subfolder.")
    return names


def _scan_files(files, walk_problems, task, normalized_dir, workers,
                verbose) -> ScanReport:
    """Scan all splits at once (duplicates across splits), then keep usable files."""
    order = [(s, p, lab) for s, (ps, labs) in files.items() for p, lab in zip(ps, labs)]
    classes = None if task == "regression" else [lab for *_, lab in order]
    report = run_scan([p for _, p, _ in order], labels=classes,
                      splits=[s for s, *_ in order], workers=workers,
                      normalized_dir=normalized_dir)
    report = with_problems(report, walk_problems)
    if verbose:
        print(report.summary(max_lines=5))
    for split in files:
        kept = [(report.decode_paths[p], lab) for s, p, lab in order
                if s == split and p in report.decode_paths]
        if not kept:
            raise DataError(f"no usable images in the {split!r} source after the scan "
                            f"({report.num_files} files scanned):\n{report.summary()}")
        files[split] = ([p for p, _ in kept], [lab for _, lab in kept])
    return report


def _strata(labels, task: str) -> list[str]:
    """What a split stratifies on: the class; for multilabel rows their rarest label
    (exact label sets are often unique); nothing for regression."""
    if task == "regression":
        return [""] * len(labels)
    if task != "multilabel":
        return list(labels)
    parts = [_label_parts(lab, task) for lab in labels]
    freq = collections.Counter(c for p in parts for c in p)
    return [min(p, key=lambda c: (freq[c], c)) if p else "" for p in parts]


def _cache_for(cache, split: str):
    if cache is None or cache == "memory":
        return cache
    return f"{os.fspath(cache)}.{split}"  # one cache file per split


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


def encode_labels(raw, task: str, class_names) -> np.ndarray:
    """Raw labels (names, "a|b", indices or numbers) -> float32 rows for `task`."""
    index = {name: i for i, name in enumerate(class_names)}
    if task == "regression":
        rows = [[float(v) for v in str(r).split("|")] if isinstance(r, str) else
                np.atleast_1d(r) for r in raw]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    ids = [[index[c] if isinstance(c, str) else int(c) for c in
            (_label_parts(r, task) if isinstance(r, str) else np.atleast_1d(r))]
           for r in raw]
    if task == "binary":
        return np.asarray(ids, dtype=np.float32).reshape(-1, 1)
    out = np.zeros((len(ids), len(class_names)), dtype=np.float32)
    for row, cols in enumerate(ids):
        out[row, cols] = 1.0
    return out


def num_outputs(task: str, class_names, labels) -> int:
    """Output units the model head needs."""
    if task == "binary":
        return 1
    if task == "regression":
        return int(np.shape(labels)[1])
    return len(class_names)


def class_weight_for(labels: np.ndarray, task: str) -> dict[int, float]:
    """Keras `class_weight` from encoded training labels, sklearn's "balanced" rule."""
    if task not in ("multiclass", "binary"):
        raise DataError(f"class_weights=True needs task 'multiclass' or 'binary' (Keras "
                        f"applies class_weight to single-label targets). Received: "
                        f"task={task!r}")
    ids = labels[:, 0].astype(int) if task == "binary" else labels.argmax(axis=1)
    counts = np.bincount(ids, minlength=2 if task == "binary" else labels.shape[1])
    weights = balanced_weights({str(i): int(n) for i, n in enumerate(counts)})
    # Classes absent from train get weight 1.0: Keras needs every index present.
    return {i: float(weights.get(str(i), 1.0)) for i in range(len(counts))}
