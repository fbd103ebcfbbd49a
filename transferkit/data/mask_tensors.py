"""Segmentation sources held as tensors: a tf.data.Dataset of (image, mask) pairs and
"tfds:NAME[:SPLIT[:IMAGE,MASK]]" datasets with a mask feature.

    load_data(tf.data.Dataset.from_tensor_slices((images, masks)), image_size=128,
              task="segmentation")
    load_data("tfds:oxford_iiit_pet", image_size=128, task="segmentation")
    load_data("tfds:NAME::photo,label_map", ...)   # name the features yourself

Masks are class indices [H, W] or [H, W, 1]. One pass over the data checks every pair
before training, as the folder scan does: a mask must have its image's height and
width and hold values 0..classes-1 (DataError naming the element otherwise); the same
pass finds the classes and, with class_weights=True, counts the training pixels.
Splits are by position (`sources.position_parts`, `sources.tfds_parts`); batches come
from the one builder (`data.sources.from_tensors`, `data.pipeline.build`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transferkit.core.errors import DataError
from transferkit.data import sources

_BINS = 256  # class indices counted per pass; larger values are refused by the max


def mask_pairs(task, source, *, data_dir, val_split, test_split, seed, class_names,
               class_weights):
    """What `Task.read_tensors` returns for masks: ({split: dataset of (image, mask)},
    class names, pairs per split, {class: training pixels} or None), every pair
    checked first. source: an unbatched tf.data.Dataset of (image, mask) pairs, split
    by a seeded coin per position, or "tfds:NAME[:SPLIT[:IMAGE,MASK]]" (the image and
    mask features, named or found)."""
    if isinstance(source, str):
        where = source
        _, _, keys = sources.parse_tfds(source)
        info, loaded = sources.tfds_parts(source, data_dir=data_dir, val_split=val_split,
                                          test_split=test_split, as_supervised=False)
        image_key, mask_key = feature_keys(info.features, keys, source)
        parts = {s: ds.map(lambda d: (d[image_key], d[mask_key]))
                 for s, ds in loaded.items()}
    else:
        where, spec = "tf.data source", source.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise DataError(f"{where}: task={task.name!r} needs a dataset of unbatched "
                            f"(image, mask) pairs. Received elements: {spec}")
        ranks = (spec[0].shape.rank, spec[1].shape.rank)
        if ranks[0] not in (2, 3) or ranks[1] not in (2, 3):
            raise DataError(f"{where}: elements should be an image [H, W(, C)] and a mask "
                            f"[H, W(, 1)]; received shapes {spec[0].shape} and "
                            f"{spec[1].shape} (unbatch a batched dataset first).")
        parts = sources.position_parts(source, val_split, test_split, seed)
    counts, sizes = {}, {}
    for split, ds in parts.items():
        counts[split], sizes[split] = _check(ds, where)
    found = {int(c) for c in np.flatnonzero(sum(counts.values()))}
    names = task.class_names(found, class_names, where=where)
    pixels = None
    if class_weights:
        pixels = dict(enumerate(counts["train"][:max(len(names), 2)].tolist()))
    return parts, names, sizes, pixels


def feature_keys(features, keys, where):
    """(image key, mask key) of a TFDS FeaturesDict: `keys` "IMAGE,MASK" if given, else
    the one 3-channel and the one 1-channel image feature."""
    import tensorflow_datasets as tfds  # heavy import, only when asked for

    listing = {k: f"{type(f).__name__}{tuple(f.shape)}" for k, f in features.items()}
    if keys:
        chosen = tuple(k.strip() for k in keys.split(","))
        unknown = [k for k in chosen if k not in features]
        if unknown:
            raise DataError(f"{where}: no feature {unknown[0]!r}; features: {listing}")
        return chosen
    images = {c: [k for k, f in features.items() if isinstance(f, tfds.features.Image)
                  and tuple(f.shape)[-1:] == (c,)] for c in (3, 1)}
    if len(images[3]) != 1 or len(images[1]) != 1:
        raise DataError(f"{where}: cannot tell the image (one 3-channel Image feature) "
                        f"from the mask (one 1-channel Image feature); features: "
                        f"{listing}. Name them: 'tfds:NAME:SPLIT:IMAGE,MASK' (SPLIT may "
                        "be empty).")
    return images[3][0], images[1][0]


def _check(ds, where):
    """(pixel count per class [_BINS], pairs) of one split; DataError on a pair whose
    mask is not its image's size or holds a negative or too large value."""
    def stats(i, pair):
        image, mask = pair
        ids = tf.cast(tf.reshape(mask, [-1]), tf.int64)
        return (i, tf.shape(image, tf.int64)[:2], tf.shape(mask, tf.int64)[:2],
                tf.reduce_min(ids), tf.reduce_max(ids),
                tf.math.bincount(ids, minlength=_BINS, maxlength=_BINS, dtype=tf.int64))

    total, n = np.zeros(_BINS, np.int64), 0
    for i, image_hw, mask_hw, low, high, bins in ds.enumerate().map(stats).batch(
            256).as_numpy_iterator():
        bad = np.flatnonzero((image_hw != mask_hw).any(axis=1))
        if len(bad):
            k = bad[0]
            raise DataError(f"{where}: pair {i[k]}: the mask is {mask_hw[k][1]}x"
                            f"{mask_hw[k][0]} but the image is {image_hw[k][1]}x"
                            f"{image_hw[k][0]}; each mask must have its image's size.")
        if low.min() < 0 or high.max() >= _BINS:
            k = int(np.argmin(low)) if low.min() < 0 else int(np.argmax(high))
            value = low[k] if low.min() < 0 else high[k]
            raise DataError(f"{where}: pair {i[k]}: mask value {value} is not a class "
                            f"index (0..{_BINS - 1}).")
        total += bins.sum(axis=0)
        n += len(i)
    return total, n
