"""The tf.data pipeline: decode, resize, cache, shuffle, augment, batch, prefetch.

All work runs inside tf.data `map` with parallel calls under `tf.device("/CPU:0")`, so
on a GPU machine the accelerator only runs the model, and `prefetch` has the next
batches ready while the model steps. Images come out float32, raw RGB in 0-255.

Order of stages and why:
  cheap elements (paths or indices) -> shuffle   whole split, no pixels in memory
  -> decode + resize (parallel map) -> cache     decoded once, before augmentation
  -> augment (parallel map, stateless seeds) -> encode label -> batch
  -> mixup/cutmix -> prefetch
With a cache the shuffle moves after it (a buffer of decoded images), so each epoch
gets a new order; the cache stores uint8.

One builder for every task: elements are (image, raw label), where a raw label is an
encoded row, a class index, a mask file path or a mask tensor, and the task's hooks
(`Task.decode_label`, `Task.augment_example`, `Task.encode_label`) read it, augment it
with its image and encode it. So masks get the same skip counting, cache and shuffle.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError, DataError
from transferkit.core.inputs import parse_size
from transferkit.core.task_registry import DEFAULT_TASK, get_task
from transferkit.data.augment import AugmentConfig, mix_batch
from transferkit.data.config import DEFAULT_BATCH_SIZE

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_IMAGE_BUFFER = 1024  # shuffle buffer when elements are decoded images


def decode_image(path, image_size):
    """Read and decode one file (JPEG/PNG/GIF/BMP/WebP, first frame) to float32 RGB."""
    with tf.device("/CPU:0"):
        return decode_bytes(tf.io.read_file(path), image_size)


def decode_bytes(data, image_size):
    """Encoded image bytes (a scalar string tensor) -> float32 RGB 0-255 [h, w, 3] at
    `image_size`: the one decoder of training, evaluation and the SavedModel's
    encoded-image signature (graph ops only, so it exports)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, image_size)  # bilinear, float32, still 0-255


def tf_decodes(data: bytes) -> bool:
    """Whether the pipeline's decoder accepts these file bytes (eagerly, on the CPU)."""
    try:
        with tf.device("/CPU:0"):
            tf.io.decode_image(data, channels=3, expand_animations=False)
        return True
    except (tf.errors.OpError, ValueError):
        return False


class SkipWatch:
    """Counts the images file pipelines dropped because a file failed to read or
    decode at training time (changed since the scan, or listed by --no-scan), so the
    run can then name those files (`data.files.undecodable`).

    No path travels with the elements (that cost 4x throughput on small images): each
    pass is framed by two marker batches, and one filter per batch counts the images
    that arrive between them and adds the shortfall to `missing()`.
    """

    def __init__(self):
        with tf.device("/CPU:0"):
            self._missing = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.named = {}  # path -> reason, once the run has named them

    def missing(self) -> int:
        """Images dropped so far, summed over passes (0: nothing failed)."""
        return int(self._missing.numpy())

    def count(self, ds, n: int):
        """`ds` (batches of float (images [B, H, W, 3], labels), `n` images per pass;
        or single (image [H, W, 3], label) elements) with counting."""
        with tf.device("/CPU:0"):
            seen = tf.Variable(0, dtype=tf.int64, trainable=False)
        image, label = ds.element_spec
        batched = image.shape.rank == 4

        def marker(value):  # an image of +-inf: never a real (decoded) image
            x = [1 if d is None else d for d in image.shape]
            y = [1 if d is None else d for d in label.shape]
            return tf.data.Dataset.from_tensors((tf.fill(x, tf.constant(value, image.dtype)),
                                                 tf.zeros(y, label.dtype)))

        def keep(x, y):
            # Branch-free (tf.case would add three functions to set up every pass).
            flag = tf.reshape(x, [-1])[0]  # labels may be masks of any dtype: mark images
            size = tf.cast(tf.shape(x)[0], tf.int64) if batched else tf.constant(1, tf.int64)
            first, last = tf.equal(flag, -np.inf), tf.equal(flag, np.inf)
            images = ~(first | last)
            before = seen.read_value()
            short = tf.where(last, tf.maximum(tf.constant(n, tf.int64) - before, 0), 0)
            after = tf.where(first | last, tf.constant(0, tf.int64),
                             before + tf.where(images, size, 0))
            with tf.control_dependencies([seen.assign(after),
                                          self._missing.assign_add(short)]):
                return tf.identity(images)

        return marker(-np.inf).concatenate(ds).concatenate(marker(np.inf)).filter(keep)


def to_rgb_float(image, image_size):
    """Any uint8/float image [H, W] / [H, W, 1|3|4] -> float32 [h, w, 3] in 0-255."""
    with tf.device("/CPU:0"):
        image = tf.convert_to_tensor(image)
        if image.shape.rank == 2:
            image = image[..., None]
        image = tf.cast(image, tf.float32)
        channels = image.shape[-1]
        if channels == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif channels == 4:
            image = image[..., :3]
        elif channels != 3:
            raise DataError(f"images must have 1, 3 or 4 channels; received shape "
                            f"{image.shape}")
        return tf.image.resize(image, image_size)


def _label_array(labels, n: int) -> np.ndarray:
    """Raw labels as one array: mask paths stay strings, masks [N, H, W] their dtype,
    anything else float32 rows [N, k]."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "OSU":  # paths of label files (masks)
        labels = labels.astype(str)
    elif labels.ndim <= 2:
        labels = labels.astype(np.float32)
        if labels.ndim == 1:
            labels = labels[:, None]
    if len(labels) != n or labels.ndim == 0:
        raise DataError(f"labels must have one row per image ({n}); received shape "
                        f"{labels.shape}. Encode them with the task (tasks.Task.encode).")
    return labels


def make_dataset(paths, labels, *, image_size, batch_size: int = DEFAULT_BATCH_SIZE,
                 training: bool = False, augment: AugmentConfig | None = None,
                 seed: int | None = None, cache=None, shuffle_buffer: int | None = None,
                 deterministic: bool = False, drop_remainder: bool = False,
                 skip_errors: bool | None = None, watch: SkipWatch | None = None,
                 task=DEFAULT_TASK, num_classes: int | None = None) -> tf.data.Dataset:
    """Batches of (float32 [B, H, W, 3] 0-255, float32 labels) from image files.

    labels: one per path: encoded targets (see tasks.Task.encode), or what `task`
        reads as labels (`Task.source_labels`: e.g. mask file paths).
    task, num_classes: the task (default DEFAULT_TASK) whose hooks decode, augment
        and encode the labels, and its number of classes.
    training=False (default): no shuffle, no augmentation, files in the given order.
    cache: None, "memory" or a file path prefix; holds decoded, resized images.
    shuffle_buffer: default the whole list of paths (strings are cheap), or 1024
        decoded images when cached. deterministic: same seed -> same batches.

    skip_errors (default: training): a file that fails to read or decode (changed
    since the scan, or listed without one) is skipped, not fatal: an epoch never dies
    on one file; the dataset keeps its number of batches (the learning-rate schedule
    and resume count on it) by topping up the last batch(es) from the start of the
    next pass. watch: a SkipWatch that counts the skipped images.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise DataError("make_dataset: paths is empty; there are no images to load.")
    labels = _label_array(labels, len(paths))
    size = parse_size(image_size)
    skip_errors = training if skip_errors is None else skip_errors
    with tf.device("/CPU:0"):
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        ds = build(ds, lambda p, y: (decode_image(p, size), y), n=len(paths),
                   batch_size=batch_size, training=training, augment=augment,
                   seed=seed, cache=cache, shuffle_buffer=shuffle_buffer,
                   deterministic=deterministic, drop_remainder=drop_remainder,
                   skip_errors=skip_errors, watch=watch, task=task,
                   num_classes=num_classes)
        steps = len(paths) // batch_size if drop_remainder else -(-len(paths) // batch_size)
        if skip_errors and steps > 0:  # a known length: Keras warns on an unknown one
            ds = ds.repeat().take(steps).apply(
                tf.data.experimental.assert_cardinality(steps))
        return ds


def dataset_from_arrays(x, y, *, image_size=None, batch_size: int = DEFAULT_BATCH_SIZE,
                        training: bool = False, augment: AugmentConfig | None = None,
                        seed: int | None = None, cache=None,
                        shuffle_buffer: int | None = None, deterministic: bool = False,
                        drop_remainder: bool = False, task=DEFAULT_TASK,
                        num_classes: int | None = None) -> tf.data.Dataset:
    """Like make_dataset, from in-memory images x [N, H, W(, C)] and encoded labels y
    (or what `task` reads as labels, e.g. masks [N, H, W] of class indices).

    image_size defaults to the arrays' own size. Images stay in their dtype in
    memory and are shuffled by index, so nothing is copied per epoch.
    """
    x = np.asarray(x)
    if x.ndim not in (3, 4) or len(x) == 0:
        raise DataError(f"x must be a non-empty array [N, H, W] or [N, H, W, C]; "
                        f"received shape {x.shape}")
    y = _label_array(y, len(x))
    size = parse_size(image_size or tuple(x.shape[1:3]))
    with tf.device("/CPU:0"):
        xs, ys = tf.constant(x), tf.constant(y)
        ds = tf.data.Dataset.range(len(x))

        def prepare(i):
            return to_rgb_float(tf.gather(xs, i), size), tf.gather(ys, i)

        return build(ds, prepare, n=len(x), batch_size=batch_size, training=training,
                     augment=augment, seed=seed, cache=cache,
                     shuffle_buffer=shuffle_buffer, deterministic=deterministic,
                     drop_remainder=drop_remainder, task=task, num_classes=num_classes)


def _map(ds, fn, **kwargs):
    """`ds.map(fn)` without autograph: the pipeline's functions are graph ops with no
    Python control flow on tensors, and converting them cost about a second of every
    command's start (measured: `benchmarks/add_class.py`)."""
    return ds.map(tf.autograph.experimental.do_not_convert(fn), **kwargs)


def build(ds, prepare, *, n: int | None, batch_size: int, training: bool,
          augment: AugmentConfig | None, seed: int | None, cache,
          shuffle_buffer: int | None, deterministic: bool, drop_remainder: bool,
          cheap_elements: bool = True, skip_errors: bool = False,
          watch: SkipWatch | None = None, task=DEFAULT_TASK,
          num_classes: int | None = None) -> tf.data.Dataset:
    """The pipeline of every source and task. `ds` yields elements `prepare` maps to
    (float32 image at the model's size, raw label); `task`'s hooks then decode the
    raw label (before the cache), augment it with its image and encode it (after),
    for `num_classes` classes. cheap_elements=False when elements are already images
    (then the shuffle buffer defaults to DEFAULT_IMAGE_BUFFER rather than the whole
    split). skip_errors: drop elements `prepare` (or the label's decoding) fails on
    (logged by TF) instead of failing the iteration, and count them in `watch` (a
    SkipWatch; needs `n`)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if cache not in (None, "memory") and not isinstance(cache, (str, os.PathLike)):
        raise DataError(f"cache should be None, 'memory' or a file path. Received: "
                        f"cache={cache!r}")
    task = get_task(task)
    task.check_augment(augment if training else None)

    def decoded(*element):
        image, label = prepare(*element)
        return image, task.decode_label(label, tuple(image.shape[:2]), num_classes)

    def encoded(image, label):
        return image, task.encode_label(label, num_classes)

    augmenting = training and augment is not None
    # training=False must give a fixed order (the feature cache keys on it).
    ordered = deterministic or not training
    with tf.device("/CPU:0"):
        if training and cache is None:  # shuffle before decoding: no pixels buffered
            full = n if cheap_elements and n else DEFAULT_IMAGE_BUFFER
            ds = ds.shuffle(shuffle_buffer or full, seed=seed, reshuffle_each_iteration=True)
        # Counting per batch is cheaper, but needs batches of any size.
        count_batches = watch is not None and not drop_remainder
        count = None if count_batches else watch
        # Labels are encoded after augmentation (a mask is augmented as class indices),
        # in the same map as the stage before it: no extra stage per element.
        first = decoded if cache is not None or augmenting else (
            lambda *e: encoded(*decoded(*e)))
        # uint8 in the cache: a quarter of float32's memory or disk, error < 0.5. Cast
        # in the decoding map, unless a per-element count needs float marker images.
        cast_later = cache is not None and skip_errors and count is not None
        if cache is not None and not cast_later:
            first = (lambda *e: _to_uint8(*decoded(*e)))
        ds = _map(ds, first, num_parallel_calls=AUTOTUNE, deterministic=ordered)
        ds = _skipping(ds, skip_errors, count, n)
        if cache is not None:
            if cast_later:
                ds = _map(ds, _to_uint8, num_parallel_calls=AUTOTUNE, deterministic=ordered)
            ds = ds.cache("" if cache == "memory" else os.fspath(cache))
            if training:
                ds = ds.shuffle(shuffle_buffer or min(n or DEFAULT_IMAGE_BUFFER,
                                                      DEFAULT_IMAGE_BUFFER),
                                seed=seed, reshuffle_each_iteration=True)
            ds = _map(ds, lambda x, y: (tf.cast(x, tf.float32), y) if augmenting
                        else encoded(tf.cast(x, tf.float32), y),
                        num_parallel_calls=AUTOTUNE, deterministic=ordered)
        if augmenting:  # the task augments image and label alike, then encodes
            ds = _map(with_seeds(ds, seed, 0),
                lambda xy, s: encoded(*task.augment_example(xy[0], xy[1], s, augment)),
                num_parallel_calls=AUTOTUNE, deterministic=ordered)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if count_batches and skip_errors and n:
            # The prefetch keeps the batches flowing past the counting filter (without
            # it the filter costs ~20% of a small-image pipeline; with it, noise).
            ds = watch.count(ds.prefetch(AUTOTUNE), n)
        if training and augment is not None and augment.mixes:
            ds = _map(with_seeds(ds, seed, 1),
                lambda xy, s: mix_batch(xy[0], xy[1], s, augment),
                num_parallel_calls=AUTOTUNE, deterministic=ordered)
        options = tf.data.Options()
        options.deterministic = ordered
        return ds.with_options(options).prefetch(AUTOTUNE)


def _skipping(ds, skip_errors, watch, n):
    if not skip_errors:
        return ds
    ds = ds.ignore_errors(log_warning=True)
    return watch.count(ds, n) if watch is not None and n else ds


def _to_uint8(image, label):
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8), label


def with_seeds(ds, seed, stream: int):
    """Zip a seed [2] onto each element: a new one per element and per epoch, the same
    sequence for the same seed (stateless ops then make augmentation reproducible)."""
    randoms = tf.data.Dataset.random(
        seed=None if seed is None else seed * 2 + stream, rerandomize_each_iteration=True)
    seeds = _map(randoms, lambda r: tf.stack([r, tf.constant(stream, tf.int64)]))
    return tf.data.Dataset.zip((ds, seeds))


def as_batches(data, task, units, batch_size=DEFAULT_BATCH_SIZE, training=False, seed=0):
    """A batched tf.data dataset of (image, float label) from a dataset or (x, y) arrays.

    Integer class labels are one-hot encoded when the task's head has several units.
    """
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        if len(data.element_spec[0].shape) == 3:  # unbatched examples
            data = data.batch(batch_size)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(a) for a in data)
        if len(x) != len(y):
            raise ConfigError(f"x and y have different lengths: {len(x)} and {len(y)}.")
        data = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
        if training:
            data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        data = data.batch(batch_size)
    else:
        raise ConfigError("Training data should be a tf.data.Dataset, an (x, y) tuple of "
                          f"arrays or a DataSplits. Received: {type(data).__name__}")
    label = data.element_spec[1]
    if task.single_label and units > 1 and label.dtype.is_integer:
        data = data.map(lambda x, y: (x, tf.one_hot(tf.reshape(y, [-1]), units)))
    elif not label.dtype.is_floating:
        data = data.map(lambda x, y: (x, tf.cast(y, tf.float32)))
    return data.prefetch(tf.data.AUTOTUNE)
