"""Box-aware augmentation: an image and all its objects moved alike, in the tf.data
graph, on the CPU, from a stateless seed.

    image, boxes, classes = augment_objects(image, boxes, classes, seed, config)
    image, rows = augment_rows(image, rows, seed, config)   # rows (class, box) [M, 5]

Boxes are normalised xyxy ("rel_xyxy"); unused rows have class -1. The geometric ops
of an `AugmentConfig` (crop, flips, zoom, translation) are all axis-aligned, so they
compose into one map x' = a x + b, y' = c y + d: the image is resampled once
(bilinear; outside the image a flat grey, FILL, so no mirrored copy of an object
appears without its box, as reflect fill would make), and each box is mapped, put in
order, clipped to the image, and dropped (class -1, box zeros) when less than
`config.box_min_visibility` of its area stays in view or it is thinner than a pixel.
The crop is drawn to keep that much of at least one object
(`tf.image.stateless_sample_distorted_bounding_box`). Colour changes the image only.
Rotation and batch mixing are refused (`object_refusal`): a rotated box is no longer
the tight upright box of its object.

Keras 3's preprocessing layers move boxes too (`bounding_box_format=`), but draw their
randomness from an integer seed or a SeedGenerator (a variable updated per call, which
races under a parallel map) and cannot take the per-element seed tensor the pipeline
passes, and they clip boxes without dropping the ones that leave; hence these ops.
"""

from __future__ import annotations

import tensorflow as tf

from transferkit.data.augment import AugmentConfig, _color, _seeds

FILL = 127.5  # mid grey: no strong edge where the image is padded
MIN_BOX_PIXELS = 1.0  # a box thinner than this (in output pixels) is dropped


def object_refusal(config):
    """Why boxes of several objects refuse this AugmentConfig (None: they take it)."""
    if config is None:
        return None
    moved = [f"{k}={getattr(config, k)}" for k in ("rotation", "mixup_alpha",
                                                   "cutmix_alpha") if getattr(config, k)]
    if not moved:
        return None
    return (f"{', '.join(moved)}: boxes move with their image through crops, flips, "
            "zoom and translation; a rotated box is no longer its object's upright box "
            "and a mixed batch blends two images' objects. Use the augment presets "
            "'none' or 'light', or an AugmentConfig without rotation and mixing.")


def augment_rows(image, rows, seed, config: AugmentConfig):
    """`augment_objects` on rows [M, 5] of (class id, xmin, ymin, xmax, ymax), as
    `annotations.pad_objects` makes them; returns (image, rows)."""
    with tf.device("/CPU:0"):
        image, boxes, classes = augment_objects(image, rows[:, 1:], rows[:, 0], seed,
                                                config)
        return image, tf.concat([classes[:, None], boxes], axis=1)


def augment_objects(image, boxes, classes, seed, config: AugmentConfig):
    """Augment a float32 [H, W, 3] image (0-255) and its boxes [M, 4] (normalised
    xyxy) with classes [M] (-1: unused row) alike; the same seed gives the same
    result. Returns (image, boxes, classes) of the same shapes and dtypes; a box that
    leaves (see the module docstring) becomes class -1 and a zero box."""
    with tf.device("/CPU:0"):
        height, width = image.shape[0], image.shape[1]
        s = _seeds(seed, 8)  # the slots `augment_image` uses: crop, flips, affine, colour
        box_dtype, class_dtype = boxes.dtype, classes.dtype
        boxes = tf.cast(boxes, tf.float32)
        valid = classes >= 0
        size = tf.cast(tf.shape(image)[:2], tf.float32)  # (height, width)
        if _moves(config):
            ax, bx, ay, by = draw_map(image, boxes, valid, s, config)
            image = _warp(image, ax, bx, ay, by, size)
            boxes, valid = _move_boxes(boxes, valid, ax, bx, ay, by, size,
                                       config.box_min_visibility)
        if config.brightness or config.contrast or config.saturation or config.hue:
            image = _color(image / 255.0, s[4:8], config) * 255.0
        boxes = tf.where(valid[:, None], boxes, 0.0)
        classes = tf.where(valid, classes, tf.cast(-1, class_dtype))
        return (tf.ensure_shape(image, (height, width, 3)), tf.cast(boxes, box_dtype),
                classes)


def _moves(config):
    return (config.crop_scale is not None or bool(config.zoom or config.translation)
            or config.flip is not None)


def draw_map(image, boxes, valid, seeds, config):
    """(ax, bx, ay, by): the map x' = ax x + bx, y' = ay y + by (normalised) the
    geometric ops draw from `seeds` (`_seeds(seed, 8)`) for this image and boxes."""
    ax = ay = tf.constant(1.0)
    bx = by = tf.constant(0.0)
    if config.crop_scale is not None:
        x0, y0, w, h = _crop(image, boxes, valid, seeds[0], config)
        ax, bx, ay, by = 1.0 / w, -x0 / w, 1.0 / h, -y0 / h
    if config.zoom or config.translation:
        u = tf.random.stateless_uniform([3], seeds[3], -1.0, 1.0)
        zoom = 1.0 + u[0] * config.zoom  # > 1 zooms in, about the centre
        ax, bx = ax * zoom, (bx - 0.5) * zoom + 0.5 + u[1] * config.translation
        ay, by = ay * zoom, (by - 0.5) * zoom + 0.5 + u[2] * config.translation
    # Stateless flips decide from the seed alone: flip a 2-pixel probe with the seed
    # `augment_image` uses to learn whether it would mirror this image.
    if config.flip in ("horizontal", "horizontal_and_vertical"):
        probe = tf.image.stateless_random_flip_left_right([[[0.0], [1.0]]], seeds[1])
        flip = probe[0, 0, 0] > 0
        ax, bx = tf.where(flip, -ax, ax), tf.where(flip, 1.0 - bx, bx)
    if config.flip in ("vertical", "horizontal_and_vertical"):
        probe = tf.image.stateless_random_flip_up_down([[[0.0]], [[1.0]]], seeds[2])
        flip = probe[0, 0, 0] > 0
        ay, by = tf.where(flip, -ay, ay), tf.where(flip, 1.0 - by, by)
    return ax, bx, ay, by


def _crop(image, boxes, valid, seed, config):
    """(x0, y0, width, height) of a random crop window, normalised, covering at least
    `box_min_visibility` of one object (of the image when there is none)."""
    kept = tf.boolean_mask(boxes, valid)
    yxyx = tf.stack([kept[:, 1], kept[:, 0], kept[:, 3], kept[:, 2]], axis=1)
    covered = tf.where(tf.size(kept) > 0, config.box_min_visibility, 0.0)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), yxyx[None], seed=seed, min_object_covered=covered,
        area_range=config.crop_scale, aspect_ratio_range=config.crop_ratio,
        use_image_if_no_bounding_boxes=True)
    full = tf.cast(tf.shape(image)[:2], tf.float32)
    begin, size = tf.cast(begin[:2], tf.float32), tf.cast(size[:2], tf.float32)
    return begin[1] / full[1], begin[0] / full[0], size[1] / full[1], size[0] / full[0]


def _warp(image, ax, bx, ay, by, size):
    """The image resampled so that normalised point u lands at a u + b (per axis)."""
    # Output pixel x (centre (x + 0.5) / W) samples input pixel ((x + 0.5) / W - b) / a
    # x W - 0.5: the inverse map in the pixel-centre coordinates TF's transform uses.
    height, width = size[0], size[1]
    transform = tf.stack([1.0 / ax, 0.0, (0.5 - bx * width) / ax - 0.5,
                          0.0, 1.0 / ay, (0.5 - by * height) / ay - 0.5, 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
        fill_value=FILL, interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def _move_boxes(boxes, valid, ax, bx, ay, by, size, min_visibility):
    """(boxes mapped, ordered and clipped to [0, 1], which still count)."""
    xs = boxes[:, 0::2] * ax + bx  # [M, 2]: the mapped xmin, xmax (maybe swapped)
    ys = boxes[:, 1::2] * ay + by
    x0, x1 = tf.reduce_min(xs, axis=1), tf.reduce_max(xs, axis=1)
    y0, y1 = tf.reduce_min(ys, axis=1), tf.reduce_max(ys, axis=1)
    full = (x1 - x0) * (y1 - y0)
    cx0, cy0 = tf.clip_by_value(x0, 0.0, 1.0), tf.clip_by_value(y0, 0.0, 1.0)
    cx1, cy1 = tf.clip_by_value(x1, 0.0, 1.0), tf.clip_by_value(y1, 0.0, 1.0)
    seen = (cx1 - cx0) * (cy1 - cy0)
    visible = tf.math.divide_no_nan(seen, full)
    wide = ((cx1 - cx0) * size[1] >= MIN_BOX_PIXELS) & ((cy1 - cy0) * size[0] >= MIN_BOX_PIXELS)
    keep = valid & (visible >= min_visibility) & (seen > 0) & wide
    return tf.stack([cx0, cy0, cx1, cy1], axis=1), keep
