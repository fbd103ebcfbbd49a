"""Reading cached features back: batches for phase 1 (`feature_dataset`) and phase 2
(`mapped_dataset`, from memory-mapped boundary activations), and `merge`, which puts a
head trained on features back on its backbone.

Each training epoch shows every image once, in a fresh order, in one of its stored
views drawn at random; validation reads every row once, in order.
"""

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError
from transferkit.data.config import DEFAULT_BATCH_SIZE


def feature_dataset(features, batch_size=DEFAULT_BATCH_SIZE, *, training=False, seed=0):
    """Batches of (feature, label); training: reshuffled each epoch, every image once
    per epoch in one of its views drawn at random."""
    views, n = features.x.shape[:2]
    # Rows keep their shape: a vector per image, or a dense task's spatial maps and
    # per-location targets.
    x = tf.constant(features.x.reshape(views * n, *features.x.shape[2:]))
    y = tf.constant(features.y.reshape(views * n, *features.y.shape[2:]))
    ids = _epoch_ids(views, n, training, seed)
    batches = ids.batch(batch_size).map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
    return batches.prefetch(tf.data.AUTOTUNE)


def mapped_dataset(features, batch_size=DEFAULT_BATCH_SIZE, *, training=False, seed=0):
    """Batches of (activations as float32, label) from (memory-mapped) `Features`, read
    batch by batch; training: shuffled and one view per image per epoch, as
    `feature_dataset`."""
    views, n = features.x.shape[:2]
    shape = features.x.shape[2:]
    x = features.x.reshape(views * n, *shape)  # a view of the map, not a copy
    y = tf.constant(features.y.reshape(views * n, *features.y.shape[2:]))
    ids = _epoch_ids(views, n, training, seed)

    def read(i):
        order = np.argsort(i)  # memory maps read fastest in file order
        out = np.empty((len(i), *shape), np.float32)
        out[order] = x[i[order]]
        return out

    # Plain graph code: autograph has nothing to convert and misreads these closures.
    @tf.autograph.experimental.do_not_convert
    def load(i):
        batch = tf.numpy_function(read, [i], tf.float32, stateful=False)
        batch.set_shape((None, *shape))
        return batch, tf.gather(y, i)

    return ids.batch(batch_size).map(load).prefetch(tf.data.AUTOTUNE)


def _epoch_ids(views, n, training, seed):
    """Row ids into [views * n] stored rows for one epoch: in order, or (training) every
    image once in a fresh order, each in one of its views drawn at random."""
    ids = tf.data.Dataset.range(n)
    if training:
        ids = ids.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if views > 1:
            picks = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ids = tf.data.Dataset.zip((ids, picks)).map(_pick_view(views, n))
    return ids


def _pick_view(views, n):
    @tf.autograph.experimental.do_not_convert
    def pick(i, r):
        return (r % views) * n + i

    return pick


def merge(model, head):
    """One `keras.Model` predicting backbone-then-`head` on raw images.

    The head `fine_tune` trains on features is the very `keras.Model` nested in the
    full model, so training it trains the full model: `merge` only has work to do when
    it is handed a separate head or a bare feature extractor.

    model: a transferkit model (its "head" takes `head`'s weights; the same object is
        returned, ready for phase 2) or a feature extractor (image -> features; a new
        model is built on top of it).
    """
    if not any(layer.name == "head" for layer in model.layers):
        return keras.Model(model.input, head(model.output), name=model.name)
    current = model.get_layer("head")
    if current is not head:
        try:
            current.set_weights(head.get_weights())
        except ValueError as error:
            raise ConfigError(f"The `head` argument does not match the head of model "
                              f"{model.name!r}: {error}") from None
    return model
