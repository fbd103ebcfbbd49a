"""Extraction for both caches: one pass of the frozen backbone per image and view.

`split_features` computes (or finds in a `FeatureStore`) the features at the head's
input that phase 1 trains on; with `boundary=cut` the same pass also stores the
activations at phase 2's freeze boundary (see `training.boundary`), one extractor with
two outputs, so no extra backbone pass. `split_boundary` finds or computes those
activations on their own. File splits are re-read in file order, without augmentation
(views=0), or once clean and K times augmented (views=K: K + 1 passes, the clean one
first), and keyed (see `keys`); in-memory and TFDS
splits are passed over as given and never stored. A file that fails to decode during a
pass is named, left out (as the live pipeline skips it) and the pass runs again.
"""

import dataclasses
import warnings

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError, DataError
from transferkit.data.config import DEFAULT_BATCH_SIZE
from transferkit.data.files import undecodable
from transferkit.data.pipeline import make_dataset
from transferkit.models.parts import resolve
from transferkit.training.boundary import boundary_extractor
from transferkit.training.cache.config import Features, FeatureSource
from transferkit.training.cache.keys import (boundary_fingerprint, model_fingerprint,
                                             split_key)
from transferkit.training.cache.store import FeatureStore

# What the file pipeline raises for a file it cannot read or decode.
DECODE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError,
                 tf.errors.NotFoundError, tf.errors.UnknownError)


def extract_features(extractor, dataset, verbose=1, sink=None):
    """(features [N, D], labels [N, C]) from one pass of `extractor` over a dataset of
    (image, label) batches, with Keras' progress bar. The model runs wherever TF places
    it (the GPU when there is one); labels are kept from the same pass, so shuffled or
    mixed batches stay aligned.

    sink: for a two-output extractor (features, boundary activations), called with each
    batch of the second output, so large activations are written out as they come; for
    a one-output extractor, with its output, and features is then None.
    """
    steps = int(dataset.cardinality())
    bar = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbose,
                              unit_name="batch")
    xs, ys, full = [], [], None
    for images, labels in dataset:
        n = len(images)
        full = full or n
        if n < full:  # pad the last batch: a new batch shape would trace the model again
            images = tf.concat([images, tf.zeros([full - n, *images.shape[1:]],
                                                 images.dtype)], axis=0)
        out = extractor.predict_on_batch(images)
        if sink is not None:
            out, activations = out if isinstance(out, (list, tuple)) else (None, out)
            sink(np.asarray(activations[:n]))
        if out is not None:
            xs.append(np.asarray(out[:n], dtype=np.float32))
        # Labels keep their shape ([N, C] rows; a dense task's [N, rows, C + 4]).
        labels = np.asarray(labels, dtype=np.float32)
        ys.append(labels.reshape(n, -1) if labels.ndim < 2 else labels)
        bar.add(1)
    if not ys:
        raise DataError("extract_features: the dataset is empty.")
    return np.concatenate(xs) if xs else None, np.concatenate(ys)


def split_features(model, data, *, parts=None, views=0, augment=None, seed=0,
                   batch_size=DEFAULT_BATCH_SIZE, store=None, verbose=1, boundary=None,
                   mirror_val=False):
    """(train, val) `Features` of `data` (a DataSplits or FeatureSource) at the input of
    `model`'s head (see `models.parts`); val is None without a val split.

    File splits are re-read in file order without augmentation (views=0), or once
    clean and K times with `augment` on (views=K: x [K + 1, N, D], the clean view
    first), and cached in `store` (default: memory only) under a
    key of model and data. In-memory and TFDS splits have no file identity: their
    datasets are passed over max(1, views) times as given and never cached.

    boundary: a `boundary.Cut`; the same passes also store the activations at the cut
    in `store` (file splits only), where `split_boundary` finds them in phase 2.
    mirror_val: also store the val files' horizontal mirrors (`split_mirror`).
    """
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    if views < 0 or (views and augment is None and source.train_files):
        raise ConfigError("The `views` argument should be 0, or >= 1 with an `augment` "
                          f"config. Received: views={views}, augment={augment!r}")
    store = store if store is not None else FeatureStore()
    extractor, model_fp = resolve(model, parts).feature_extractor(), None
    out, boundary_fp = [], None
    for split in ("train", "val"):
        files, _ = source.files(split)
        passes = _passes(split, views, files)
        if not files:
            dataset = getattr(source, split)
            out.append(None if dataset is None else _compute(extractor, [dataset] * passes,
                                                             verbose))
            continue
        aug = augment if split == "train" and views else None
        model_fp = model_fp or model_fingerprint(model, parts)
        if boundary is not None and boundary_fp is None:
            boundary_fp = boundary_fingerprint(model, boundary, parts)
        fps = (model_fp, boundary_fp)
        try:
            found = _file_features(model, parts, extractor, source, split, aug, views,
                                   passes, batch_size, seed, store, verbose, boundary, fps)
        except DECODE_ERRORS as error:
            # A file changed since the scan (or listed by --no-scan) fails to decode:
            # name it, leave it out (the live pipeline skips it too), extract again.
            source = _without_undecodable(source, split, error)
            found = _file_features(model, parts, extractor, source, split, aug, views,
                                   passes, batch_size, seed, store, verbose, boundary, fps)
        out.append(found)
    if mirror_val:
        split_mirror(model, source, parts=parts, batch_size=batch_size, store=store,
                     verbose=verbose)
    return tuple(out)


def has_features(model, data, store, split="train", *, parts=None):
    """Whether `store` holds the clean (views=0) features of `data`'s file `split` under
    `model`, the entry `split_features(model, data, store=store)` would read."""
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    if not source.files(split)[0]:
        return False
    return store.get(split_key(model_fingerprint(model, parts), source, split)) is not None


def _without_undecodable(source, split, error):
    """`source` without the files of `split` that fail to read or decode; raises
    `error` when every file decodes (the failure is something else)."""
    files, labels = source.files(split)
    bad = undecodable(files)
    if not bad:
        raise error
    if source.skipped is not None:
        source.skipped.named.update(bad)
    else:
        warnings.warn(f"{len(bad)} file(s) failed to decode and were left out of the "
                      f"feature cache: {sorted(bad)}", stacklevel=3)
    keep = [i for i, f in enumerate(files) if f not in bad]
    if not keep:
        raise DataError(f"No file of the {split} split decodes: {sorted(bad)[:5]}")
    return dataclasses.replace(source, **{f"{split}_files": tuple(files[i] for i in keep),
                                          f"{split}_labels": np.asarray(labels)[keep]})


def _file_features(model, parts, extractor, source, split, aug, views, passes,
                   batch_size, seed, store, verbose, boundary, fps):
    """Features of one file split (from `store`, or extracted and stored)."""
    model_fp, boundary_fp = fps
    key = split_key(model_fp, source, split, aug, views, seed)
    found = store.get(key)
    boundary_key = None if boundary is None else split_key(boundary_fp, source, split, aug,
                                                            views, seed)
    needs_boundary = boundary_key is not None and store.get_mapped(boundary_key) is None
    if found is None or needs_boundary:
        datasets = _file_passes(source, split, aug, passes, batch_size, seed)
        if needs_boundary:  # one extractor, two outputs: no extra backbone pass
            two = boundary_extractor(model, boundary, parts)
            shape = (passes, len(source.files(split)[0]), *boundary.shape)
            with store.mapped_writer(boundary_key, shape) as (xb, yb):
                found = _compute(two, datasets, verbose, xb)
                yb[...] = found.y
        else:
            found = _compute(extractor, datasets, verbose)
        store.put(key, found)
    return found


def _passes(split, views, files):
    """Passes over a split: training files once clean plus `views` augmented times;
    in-memory and TFDS training data (augmented, if at all, by its own pipeline)
    max(1, views) times as given; validation once."""
    if split != "train":
        return 1
    return views + 1 if views and files else max(1, views)


def _mirrored(images, labels):
    return tf.reverse(images, axis=[2]), labels


def split_mirror(model, data, cut=None, *, parts=None, batch_size=DEFAULT_BATCH_SIZE,
                 store=None, verbose=1):
    """The val files' horizontal mirrors, one pass (x [1, N, ...]): at `cut` (float16,
    memory-mapped, as `split_boundary` stores) or, without one, at the head's input (as
    `split_features`), found in or added to `store` under the val split's key with
    mirror=True. What the flip-TTA decision at the end of a run reads back; None
    without val files (in-memory and TFDS splits are not stored)."""
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    if not source.val_files:
        return None
    store = store if store is not None else FeatureStore()
    try:
        return _file_mirror(model, parts, source, cut, batch_size, store, verbose)
    except DECODE_ERRORS as error:  # as in split_features: name, leave out, again
        source = _without_undecodable(source, "val", error)
        return _file_mirror(model, parts, source, cut, batch_size, store, verbose)


MIRROR_PASS = ("caching backbone features: the val images' mirrors, one pass (for the "
               "flip-TTA decision)")


def _file_mirror(model, parts, source, cut, batch_size, store, verbose):
    passes = _mirror_passes(source, batch_size)
    if cut is None:
        key = split_key(model_fingerprint(model, parts), source, "val", mirror=True)
        found = store.get(key)
        if found is None:
            found = _compute(resolve(model, parts).feature_extractor(), passes, verbose,
                             what=MIRROR_PASS)
            store.put(key, found)
        return found
    key = split_key(boundary_fingerprint(model, cut, parts), source, "val", mirror=True)
    found = store.get_mapped(key)
    if found is None:
        bottom = boundary_extractor(model, cut, parts, features=False)
        with store.mapped_writer(key, (1, len(source.val_files), *cut.shape)) as (x, y):
            y[...] = _compute(bottom, passes, verbose, x, what=MIRROR_PASS).y
        found = store.get_mapped(key)
    return found


def _mirror_passes(source, batch_size):
    return [dataset.map(_mirrored) for dataset in _file_passes(source, "val", None, 1,
                                                                 batch_size, 0)]


def _file_passes(source, split, aug, passes, batch_size, seed):
    """The datasets of a file split's passes, in file order: with `aug`, the first
    clean and the others augmented."""
    files, labels = source.files(split)
    # The clean view is kept beside the augmented ones: validation and prediction see
    # clean images, and a head trained on augmented views alone learns a shifted
    # distribution (Lite0, generated textures: 0.83 with 2 augmented views, 0.92 with
    # the clean view + 1 augmented, 0.95 unaugmented; see benchmarks/end_to_end.py).
    # skip_errors=False: a file that fails must stop the pass (then it is named and
    # left out), or the features would not line up with the files that key them.
    return [make_dataset(files, labels, image_size=source.image_size, batch_size=batch_size,
                         training=aug is not None and v > 0, augment=aug if v else None,
                         seed=seed * 1009 + v, deterministic=True, skip_errors=False,
                         task=source.task, num_classes=source.num_classes)
            for v in range(passes)]


def _compute(extractor, datasets, verbose, boundary_out=None, what=None):
    """Features [views, N, D] of each dataset; with `boundary_out` (an array
    [views, N, ...]), the extractor's activations (its second output, or its only one:
    then x is None) are written into it as they come. what: the line naming each pass
    (default: its number over the split's images)."""
    pairs = []
    for v, dataset in enumerate(datasets):
        if verbose:  # names what the progress line below it counts
            print(what or f"caching backbone features: pass {v + 1} of {len(datasets)} "
                  "over the split's images")
        sink = None
        if boundary_out is not None:
            offset = [0]

            def sink(batch, v=v, offset=offset):
                boundary_out[v, offset[0]:offset[0] + len(batch)] = batch
                offset[0] += len(batch)
        pairs.append(extract_features(extractor, dataset, verbose, sink=sink))
    xs = [x for x, _ in pairs]
    return Features(None if xs[0] is None else np.stack(xs), np.stack([y for _, y in pairs]))


def split_boundary(model, data, cut, *, parts=None, views=0, augment=None, seed=0,
                   batch_size=DEFAULT_BATCH_SIZE, store=None, verbose=1, mirror_val=False):
    """(train, val) `Features` of the activations at `cut`: x [passes, N, *cut.shape] in
    float16 (memory-mapped when `store` has a directory), as `split_features` reads
    images (views, augmentation, file order); val is None without a val split. File
    splits are looked up in `store` first (phase 1 may have stored them). mirror_val:
    also store the val files' mirrors at the cut (`split_mirror`)."""
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    store = store if store is not None else FeatureStore()
    two, model_fp, out = boundary_extractor(model, cut, parts), None, []
    for split in ("train", "val"):
        files, _ = source.files(split)
        passes = _passes(split, views, files)
        aug = augment if split == "train" and views else None
        if not files:
            dataset = getattr(source, split)
            if dataset is None:
                out.append(None)
                continue
            parts_x = []
            features = _compute(two, [dataset] * passes, verbose, _Collector(parts_x))
            x = np.stack([np.concatenate(p) for p in parts_x]).astype(np.float16)
            out.append(Features(x, features.y))
            continue
        model_fp = model_fp or boundary_fingerprint(model, cut, parts)
        args = (two, model_fp, split, aug, views, passes, batch_size, seed, store, verbose,
                cut)
        try:
            found = _file_boundary(source, *args)
        except DECODE_ERRORS as error:  # as in split_features: name, leave out, again
            source = _without_undecodable(source, split, error)
            found = _file_boundary(source, *args)
        out.append(found)
    if mirror_val:
        split_mirror(model, source, cut, parts=parts, batch_size=batch_size, store=store,
                     verbose=verbose)
    return tuple(out)


def _file_boundary(source, two, model_fp, split, aug, views, passes, batch_size, seed,
                   store, verbose, cut):
    """Boundary activations of one file split (from `store`, or extracted and stored)."""
    key = split_key(model_fp, source, split, aug, views, seed)
    found = store.get_mapped(key)
    if found is None:
        n = len(source.files(split)[0])
        with store.mapped_writer(key, (passes, n, *cut.shape)) as (x, y):
            y[...] = _compute(two, _file_passes(source, split, aug, passes, batch_size,
                                                seed), verbose, x).y
        found = store.get_mapped(key)
    return found


class _Collector:
    """A stand-in for a [views, N, ...] array when N is not known in advance: collects
    the batches written to each view."""

    def __init__(self, parts):
        self.parts = parts

    def __setitem__(self, index, batch):
        view = index[0]
        while len(self.parts) <= view:
            self.parts.append([])
        self.parts[view].append(np.asarray(batch, dtype=np.float16))
