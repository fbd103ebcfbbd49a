"""Box-aware augmentation: every transform moves each box exactly as it moves the
pixels of its object; boxes that leave are dropped (class -1); seeded determinism."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from transferkit.core.errors import DataError
from transferkit.data.augment import AugmentConfig, _seeds, augment_image
from transferkit.data.box_augment import (FILL, augment_objects, augment_rows, draw_map,
                                          object_refusal)

NONE = AugmentConfig(crop_scale=None, flip=None)
GEOMETRY = {
    "flip_h": dataclasses.replace(NONE, flip="horizontal"),
    "flip_v": dataclasses.replace(NONE, flip="vertical"),
    "flip_hv": dataclasses.replace(NONE, flip="horizontal_and_vertical"),
    "crop": dataclasses.replace(NONE, crop_scale=(0.2, 0.6), crop_ratio=(0.5, 2.0)),
    "zoom": dataclasses.replace(NONE, zoom=0.6),
    "shift": dataclasses.replace(NONE, translation=0.4),
    "all": AugmentConfig(crop_scale=(0.3, 1.0), flip="horizontal_and_vertical",
                         zoom=0.5, translation=0.2, box_min_visibility=0.5),
}
# Saturated colours far from the grey background (and from FILL, the same grey).
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [255, 0, 255], [0, 255, 255]], np.float32)


def _scene(seed, height=48, width=64, count=5, pad=3):
    """(image, boxes [count + pad, 4], classes): `count` filled rectangles of distinct
    colours, apart from each other, and `pad` unused rows."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), FILL, np.float32)
    boxes, taken = [], np.zeros((height, width), bool)
    while len(boxes) < count:
        w, h = rng.integers(5, 20), rng.integers(5, 16)
        x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        if taken[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2].any():
            continue
        taken[y:y + h, x:x + w] = True
        image[y:y + h, x:x + w] = COLOURS[len(boxes)]
        boxes.append((x / width, y / height, (x + w) / width, (y + h) / height))
    boxes += [(0.0, 0.0, 0.0, 0.0)] * pad
    classes = np.array([i % 3 for i in range(count)] + [-1] * pad, np.int32)
    return image, np.array(boxes, np.float32), classes


def _extent(image, k):
    """Pixel extent (x0, y0, x1, y1) of the pixels nearer colour k than the background
    or any other colour (blends at an edge count from half-way, where the edge is),
    or None."""
    palette = np.concatenate([np.full((1, 3), FILL, np.float32), COLOURS])
    nearest = np.abs(image[:, :, None] - palette).sum(-1).argmin(-1)
    near = nearest == k + 1
    rows, cols = np.nonzero(near)
    if not len(rows):
        return None, 0
    return (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1), int(near.sum())


def _mapped(box, ax, bx, ay, by):
    xs, ys = sorted([box[0] * ax + bx, box[2] * ax + bx]), sorted([box[1] * ay + by,
                                                                  box[3] * ay + by])
    return np.array([xs[0], ys[0], xs[1], ys[1]])


@pytest.mark.parametrize("name", sorted(GEOMETRY))
def test_each_box_stays_on_its_objects_pixels(name):
    config = GEOMETRY[name]
    kept = dropped = 0
    for seed in range(12):
        image, boxes, classes = _scene(seed)
        key = tf.constant([seed, 5], tf.int64)
        out, out_boxes, out_classes = (t.numpy() for t in augment_objects(
            tf.constant(image), tf.constant(boxes), tf.constant(classes), key, config))
        assert out.shape == image.shape and out_boxes.shape == boxes.shape
        height, width = image.shape[:2]
        scale = np.array([width, height, width, height])
        ax, bx, ay, by = (float(v) for v in draw_map(
            tf.constant(image), tf.constant(boxes), tf.constant(classes >= 0),
            _seeds(key, 8), config))
        for k, cls in enumerate(classes):
            if cls < 0:  # unused rows stay unused
                assert out_classes[k] == -1 and not out_boxes[k].any()
                continue
            extent, area = _extent(out, k)
            full = _mapped(boxes[k], ax, bx, ay, by)
            clipped = np.clip(full, 0.0, 1.0)
            visible = np.prod(clipped[2:] - clipped[:2]) / np.prod(full[2:] - full[:2])
            if out_classes[k] >= 0:
                kept += 1
                assert out_classes[k] == cls
                assert visible >= config.box_min_visibility - 1e-6
                # The pixels of the object fill its box: edges within a pixel.
                assert extent is not None, (name, seed, k)
                np.testing.assert_allclose(out_boxes[k] * scale, extent, atol=1.0,
                                           err_msg=f"{name} seed {seed} box {k}")
            else:
                dropped += 1
                assert not out_boxes[k].any()
                # Dropped: less than box_min_visibility of it in view, or (nearly)
                # nothing of it on the image.
                thin = min((clipped[2:] - clipped[:2]) * scale[:2]) < 1.0
                assert visible < config.box_min_visibility + 1e-6 or thin, (name, seed, k)
                if extent is not None:  # what shows of it is where the map puts it
                    np.testing.assert_allclose(clipped * scale, extent, atol=1.0)
    assert kept > 0
    if name in ("crop", "zoom", "shift", "all"):  # these move boxes out of view
        assert dropped > 0, name


def test_flip_mirrors_like_augment_image_for_the_same_seed():
    image, boxes, classes = _scene(1)
    config = GEOMETRY["flip_hv"]
    flips = set()
    for seed in range(16):
        key = tf.constant([seed, 0], tf.int64)
        out, out_boxes, _ = augment_objects(image, boxes, classes, key, config)
        np.testing.assert_array_equal(out, augment_image(tf.constant(image), key, config))
        flips.add(tuple(np.round(out_boxes[0].numpy(), 4)))
    assert len(flips) == 4  # none, horizontal, vertical, both: all drawn


def test_seeded_determinism_in_a_parallel_pipeline():
    scenes = [_scene(s) for s in range(6)]
    config = GEOMETRY["all"]
    rows = np.stack([np.concatenate([c[:, None], b], 1) for _, b, c in scenes])
    ds = tf.data.Dataset.from_tensor_slices(
        (np.stack([i for i, _, _ in scenes]), rows.astype(np.float32),
         np.arange(6, dtype=np.int64)))

    def run():
        mapped = ds.map(lambda x, r, i: augment_rows(x, r, tf.stack([i, 9]), config),
                        num_parallel_calls=4, deterministic=True)
        return [(x, r) for x, r in mapped.as_numpy_iterator()]

    first, second = run(), run()
    for (x1, r1), (x2, r2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(r1, r2)
    assert any(not np.array_equal(r, rows[i]) for i, (_, r) in enumerate(first))
    other = augment_rows(scenes[0][0], rows[0], tf.constant([0, 10], tf.int64), config)
    assert not np.array_equal(other[0], first[0][0])


def test_background_images_and_colour_only():
    image = np.full((32, 32, 3), 100.0, np.float32)
    boxes, classes = np.zeros((4, 4), np.float32), -np.ones(4, np.int32)
    out, out_boxes, out_classes = augment_objects(
        image, boxes, classes, tf.constant([3, 4], tf.int64), GEOMETRY["all"])
    assert out.shape == (32, 32, 3) and (out_classes.numpy() == -1).all()
    assert not out_boxes.numpy().any()
    colour = AugmentConfig(crop_scale=None, flip=None, brightness=0.3, hue=0.1)
    image, boxes, classes = _scene(2)
    out, out_boxes, out_classes = augment_objects(image, boxes, classes,
                                                  tf.constant([1, 1], tf.int64), colour)
    assert not np.allclose(out, image)
    np.testing.assert_array_equal(out_boxes, boxes)
    np.testing.assert_array_equal(out_classes, classes)


def test_ops_are_placed_on_cpu():
    fn = tf.function(lambda x, r, s: augment_rows(x, r, s, GEOMETRY["all"]))
    graph = fn.get_concrete_function(tf.TensorSpec([32, 32, 3], tf.float32),
                                     tf.TensorSpec([5, 5], tf.float32),
                                     tf.TensorSpec([2], tf.int64)).graph
    compute = [op for op in graph.get_operations()
               if op.type not in ("Placeholder", "Const", "NoOp", "Identity")]
    assert compute and all("CPU" in op.device for op in compute)


def test_refusals_and_config_checks():
    assert object_refusal(None) is None and object_refusal(GEOMETRY["all"]) is None
    assert "rotation=0.1" in object_refusal(AugmentConfig(rotation=0.1))
    assert "mixup_alpha=0.2" in object_refusal(AugmentConfig(mixup_alpha=0.2))
    with pytest.raises(DataError, match="zoom must be < 1"):
        AugmentConfig(zoom=1.0)
    with pytest.raises(DataError, match="box_min_visibility must be in"):
        AugmentConfig(box_min_visibility=1.5)
