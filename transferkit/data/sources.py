"""In-memory and TFDS sources for `load_data`: numpy arrays, tf.data, "tfds:NAME".

Sources are task-agnostic: the task reads the labels (`Task.array_labels`,
`Task.read_tensors`; class labels here, masks in `data.masks`/`data.mask_tensors`), and
every source is batched by the one builder, `pipeline.build`.

`task` is a `tasks.Task`; it encodes the labels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transferkit.data import pipeline
from transferkit.data.splits import SPLIT_NAMES, DataSplits, cache_for, stratified_split
from transferkit.core.errors import DataError, suggest


def from_arrays(x, y, *, task, class_names, val_split, test_split, augment, cache,
                class_weights, pipe) -> DataSplits:
    """(x, y) numpy arrays: stratified split by index, then dataset_from_arrays. The
    task reads y (`Task.array_labels`): class indices, rows, targets or masks."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise DataError(f"(x, y) source: x has {len(x)} images but y has {len(y)} labels.")
    names, strata, labels = task.array_labels(x, y, class_names)
    idx = stratified_split(strata, val_split, test_split, pipe["seed"])
    built = {}
    for split, chosen in zip(SPLIT_NAMES, idx):
        if len(chosen):
            built[split] = pipeline.dataset_from_arrays(
                x[chosen], labels[chosen], training=split == "train",
                augment=augment if split == "train" else None,
                cache=cache_for(cache, split), task=task, num_classes=len(names), **pipe)
    train_y = labels[idx[0]]
    return _splits(built, names, task, task.output_units(len(names) or labels.shape[1]),
                   pipe, train_y if class_weights else None,
                   {s: len(i) for s, i in zip(SPLIT_NAMES, idx) if len(i)})


def array_classes(task, y, class_names):
    """(class names, strata, encoded labels) of class labels or targets y: class
    indices, one-hot or multi-hot rows, or regression targets."""
    if task.single_label and y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)  # one-hot given: back to indices
    if not task.has_classes:
        return (), np.zeros(len(y)), task.encode(y, ())
    if not task.single_label:
        if y.ndim != 2:
            raise DataError(f"task={task.name!r} needs y as multi-hot [N, C]; received "
                            f"shape {y.shape}")
        names = _names(class_names, y.shape[1])
        return names, [r.tobytes() for r in (y > 0)], (y > 0).astype(np.float32)
    ids = y.reshape(-1).astype(int)
    names = _names(class_names, max(task.min_classes, int(ids.max()) + 1))
    return names, ids, task.encode(ids, names)


def from_tensors(source, *, task, data_dir, class_names, val_split, test_split, augment,
                 cache, class_weights, pipe) -> DataSplits:
    """A tf.data.Dataset of unbatched (image, label) pairs, split by a seeded coin per
    position, or "tfds:NAME[:SPLIT]"; the task reads the labels (`Task.read_tensors`)."""
    parts, names, sizes, basis = task.read_tensors(
        source, data_dir=data_dir, val_split=val_split, test_split=test_split,
        seed=pipe["seed"], class_names=class_names, class_weights=class_weights)
    return _tensor_splits(parts, names, task, augment, cache, class_weights, pipe, sizes,
                          basis, where=source if isinstance(source, str) else
                          "tf.data source")


def class_tensors(task, source, *, data_dir, val_split, test_split, seed, class_names,
                  class_weights):
    """What `Task.read_tensors` returns for class labels or targets: the dataset's
    (image, label) pairs split by position, or a TFDS dataset's supervised keys."""
    if isinstance(source, str):
        name, _, keys = parse_tfds(source)
        if keys:
            raise DataError(f"{source}: feature keys (a third ':' field) pick a "
                            "segmentation dataset's image and mask; a classification "
                            "source reads the dataset's supervised_keys: use 'tfds:NAME' "
                            "or 'tfds:NAME:SPLIT'.")
        info, parts = tfds_parts(source, data_dir=data_dir, val_split=val_split,
                                 test_split=test_split, as_supervised=True)
        label = info.features[info.supervised_keys[1]]
        names = tuple(label.names) if hasattr(label, "names") else ()
    else:
        ds = source
        if class_names is None and task.single_label:
            labels = np.concatenate([np.reshape(b, (-1,)) for b in
                                     ds.map(lambda _, y: y).batch(4096).as_numpy_iterator()])
            n = max(task.min_classes, int(labels.max()) + 1)
            class_names = [str(i) for i in range(n)]
        if class_names is None and task.has_classes:
            class_names = [str(i) for i in range(ds.element_spec[1].shape[-1])]
        names = class_names or ()
        parts = position_parts(ds, val_split, test_split, seed)
    names = tuple(str(n) for n in names)
    basis = None
    if class_weights:  # from the raw training labels, before mixing
        basis = np.stack(list(parts["train"].map(
            lambda _, y: task.decode_label(y, None, len(names))).as_numpy_iterator()))
    return parts, names, None, basis


def position_parts(ds: tf.data.Dataset, val_split, test_split, seed):
    """{"train"/"val"/"test": dataset}: each element goes to a split by a coin seeded
    with (seed, position), so the same seed gives the same split."""
    def part(lo, hi):
        def keep(i, _):
            u = tf.random.stateless_uniform([], tf.stack([tf.cast(seed, tf.int64), i]))
            return (u >= lo) & (u < hi)
        return ds.enumerate().filter(keep).map(lambda _, xy: xy)

    cut = val_split + test_split
    parts = {"train": part(cut, 1.0)}
    if val_split:
        parts["val"] = part(0.0, val_split)
    if test_split:
        parts["test"] = part(val_split, cut)
    return parts


def parse_tfds(spec: str):
    """"tfds:NAME[:SPLIT[:KEYS]]" -> (NAME, SPLIT or "", KEYS or "")."""
    _, _, rest = spec.partition(":")
    name, _, split = rest.partition(":")
    head, sep, keys = split.rpartition(":")  # SPLIT may be sliced: "train[:50%]"
    if sep and "," in keys and not set("[]") & set(keys):
        split = head
    else:
        keys = ""
    if not name or (keys and keys.count(",") != 1):
        raise DataError(f"TFDS source should be 'tfds:NAME', 'tfds:NAME:SPLIT' or, for "
                        f"segmentation, 'tfds:NAME:SPLIT:IMAGE,MASK' (SPLIT may be "
                        f"empty). Received: {spec!r}")
    return name, split, keys


def tfds_parts(spec: str, *, data_dir, val_split, test_split, as_supervised):
    """(DatasetInfo, {"train"/"val"/"test": dataset}) of a "tfds:NAME[:SPLIT]" source.

    Without SPLIT a requested val/test is the dataset's own validation/test split when
    it has one, else carved by position from train (as with SPLIT)."""
    import tensorflow_datasets as tfds  # heavy import, only when asked for

    name, base, _ = parse_tfds(spec)
    try:
        info = tfds.builder(name, data_dir=data_dir).info
    except tfds.core.registered.DatasetNotFoundError as exc:
        raise DataError(f"{spec}: TFDS has no dataset {name!r}.\n{exc}") from None
    head = base or "train"
    if head.split("[")[0] not in info.splits:
        raise DataError(f"{spec}: no split {head!r}; available: {sorted(info.splits)}."
                        f"{suggest(head, list(info.splits))}")
    if as_supervised and not info.supervised_keys:
        raise DataError(f"{spec}: the dataset has no (image, label) supervised_keys.")
    own = {"val": "validation", "test": "test"}
    wanted = {"train": head}
    carve = {"val": val_split, "test": test_split}
    if not base:  # asked-for val/test come from the dataset's own splits if it has them
        for key, split in own.items():
            if split in info.splits and carve[key]:
                wanted[key], carve[key] = split, 0.0
    if "[" in head and (carve["val"] or carve["test"]):
        raise DataError(f"{spec}: a sliced split cannot be carved further; pass "
                        "val_split=0 and test_split=0, or an unsliced SPLIT.")
    total = info.splits[head].num_examples
    n_val, n_test = round(total * carve["val"]), round(total * carve["test"])
    if n_val:
        wanted["val"] = f"{head}[:{n_val}]"
    if n_test:
        wanted["test"] = f"{head}[{n_val}:{n_val + n_test}]"
    if n_val or n_test:
        wanted["train"] = f"{head}[{n_val + n_test}:]"
    keys = list(wanted)
    loaded = tfds.load(name, split=[wanted[k] for k in keys], as_supervised=as_supervised,
                       data_dir=data_dir, shuffle_files=False)
    return info, dict(zip(keys, loaded))


def _tensor_splits(parts, names, task, augment, cache, class_weights, pipe, sizes, basis,
                   where):
    size = pipe["image_size"]
    built = {s: pipeline.build(ds, lambda image, y: (pipeline.to_rgb_float(image, size), y),
                               n=None, training=s == "train",
                               augment=augment if s == "train" else None,
                               cache=cache_for(cache, s), batch_size=pipe["batch_size"],
                               seed=pipe["seed"], shuffle_buffer=pipe["shuffle_buffer"],
                               deterministic=pipe["deterministic"], drop_remainder=False,
                               cheap_elements=False, task=task, num_classes=len(names))
             for s, ds in parts.items() if sizes is None or sizes.get(s)}
    if "train" not in built:
        raise DataError(f"{where}: no training examples (val_split/test_split take them "
                        "all).")
    units = built["train"].element_spec[1].shape[-1] or 1
    train_y = basis if class_weights else None
    return _splits(built, names, task, int(units), pipe, train_y,
                   None if sizes is None else {s: n for s, n in sizes.items() if n})


def _splits(built, names, task, units, pipe, train_y, counts):
    return DataSplits(
        train=built["train"], val=built.get("val"), test=built.get("test"),
        class_names=tuple(names), task=task, num_classes=units,
        image_size=pipe["image_size"],
        class_weight=None if train_y is None else task.class_weight(train_y, len(names)),
        counts=counts)


def _names(class_names, n: int) -> tuple[str, ...]:
    names = tuple(class_names) if class_names is not None else tuple(map(str, range(n)))
    if len(names) != n:
        raise DataError(f"class_names has {len(names)} entries for {n} classes: {names}")
    return names
