"""Augmentation: CPU placement, shapes, labels, mixing mass, seeded determinism."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transferkit.data.augment import AugmentConfig, augment_image, mix_batch
from transferkit.data.load import load_data
from transferkit.data.pipeline import make_dataset
from transferkit.core.errors import DataError

FULL = AugmentConfig(crop_scale=(0.5, 1.0), flip="horizontal_and_vertical", rotation=0.1,
                     zoom=0.2, translation=0.1, brightness=0.2, contrast=0.3,
                     saturation=0.3, hue=0.1)
MIXED = dataclasses.replace(FULL, mixup_alpha=0.4, cutmix_alpha=1.0)


def _images(n=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)


def test_ops_are_placed_on_cpu():
    image_fn = tf.function(lambda x, s: augment_image(x, s, FULL))
    graph = image_fn.get_concrete_function(
        tf.TensorSpec([16, 16, 3], tf.float32), tf.TensorSpec([2], tf.int64)).graph
    mix_fn = tf.function(lambda x, y, s: mix_batch(x, y, s, MIXED))
    mix_graph = mix_fn.get_concrete_function(
        tf.TensorSpec([None, 16, 16, 3]), tf.TensorSpec([None, 3]),
        tf.TensorSpec([2], tf.int64)).graph
    for g in (graph, mix_graph):
        compute = [op for op in g.get_operations()
                   if op.type not in ("Placeholder", "Const", "NoOp", "Identity")]
        assert compute and all("CPU" in op.device for op in compute), \
            [(op.name, op.device) for op in compute if "CPU" not in op.device]


def test_augment_keeps_shape_dtype_and_range():
    for i, image in enumerate(_images()):
        out = augment_image(tf.constant(image), tf.constant([i, 7], tf.int64), FULL)
        assert out.shape == (16, 16, 3) and out.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
    a = augment_image(tf.constant(_images()[0]), tf.constant([1, 2], tf.int64), FULL)
    b = augment_image(tf.constant(_images()[0]), tf.constant([1, 2], tf.int64), FULL)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("config", [
    AugmentConfig(mixup_alpha=0.4), AugmentConfig(cutmix_alpha=1.0), MIXED])
def test_mixing_label_mass_and_pixels_agree(config):
    # Class 0 images are black, class 1 white: the mean pixel must equal the weight
    # the mixed label gives class 1, and every label must sum to 1.
    labels = tf.one_hot([0, 1, 0, 1, 1, 0, 1, 0], 2)
    images = tf.ones([8, 16, 16, 3]) * 255.0 * labels[:, 1, None, None, None]
    for step in range(5):
        x, y = mix_batch(images, labels, tf.constant([step, 3], tf.int64), config)
        assert x.shape == images.shape and y.shape == labels.shape
        np.testing.assert_allclose(tf.reduce_sum(y, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(tf.reduce_mean(x, axis=[1, 2, 3]) / 255.0, y[:, 1],
                                   atol=1e-5)


def test_pipeline_keeps_labels_and_shapes(tmp_path):
    files, labels = [], []
    for i, image in enumerate(_images(12, 20).astype(np.uint8)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
        labels.append(np.eye(3, dtype=np.float32)[i % 3])
    ds = make_dataset(files, labels, image_size=16, batch_size=4, training=True,
                      augment=FULL, seed=0)
    seen = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert sorted(map(tuple, seen)) == sorted(map(tuple, labels))
    x, _ = next(iter(ds))
    assert x.shape == (4, 16, 16, 3) and x.dtype == tf.float32
    plain = make_dataset(files, labels, image_size=16, batch_size=12, augment=FULL)
    x, _ = next(iter(plain))  # training=False: neither shuffled nor augmented
    expected = tf.image.resize(np.asarray(Image.open(files[0])), (16, 16))
    np.testing.assert_allclose(x[0], expected, atol=1e-3)


def test_same_seed_same_batches(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                tmp_path / "d" / c / f"{i}.png")

    def batches(seed):
        splits = load_data(tmp_path / "d", image_size=16, batch_size=4, val_split=0.0,
                           augment=MIXED, seed=seed, deterministic=True, cache="memory",
                           normalized_dir=tmp_path / "n", verbose=False)
        return [np.concatenate([np.ravel(x), np.ravel(y)])
                for _ in range(2) for x, y in splits.train.as_numpy_iterator()]

    first, again, other = batches(5), batches(5), batches(6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[3])  # epoch 2 differs from epoch 1


def test_config_validation():
    with pytest.raises(DataError, match="Did you mean 'horizontal'"):
        AugmentConfig(flip="horizontl")
    with pytest.raises(DataError, match="rotation must be >= 0"):
        AugmentConfig(rotation=-0.1)
    with pytest.raises(DataError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.8, 0.5))
    assert dataclasses.replace(FULL, zoom=0.0).zoom == 0.0
