"""From-scratch baselines of the course notes and a tiny test backbone.

They are registered like Keras Applications backbones (same constructor signature, same
spec fields), so the tests of every other module run in milliseconds on the code path
users take, and "transfer versus scratch" compares like with like.
"""

import keras
from keras import layers

from transferkit.models.registry import BackboneSpec, register_backbone
from transferkit.core.errors import WeightsError


def _input(input_shape, name):
    if input_shape is None:
        raise WeightsError(f"Backbone {name!r} needs an `input_shape`.")
    return keras.Input(shape=tuple(input_shape), name="image")


def _check(include_top, weights, name):
    # Same contract as keras.applications: weights other than None are loaded by
    # `create_backbone`, which knows about files and saved models.
    if include_top:
        raise WeightsError(f"Backbone {name!r} has no classifier top: use include_top=False.")
    if weights is not None:
        raise WeightsError(f"Backbone {name!r} builds with weights=None only; "
                           "create_backbone loads weight files. Received: weights="
                           f"{weights!r}")


def LeNet(include_top=False, weights=None, input_shape=None, width=1.0):
    """LeNet-like "first CNN": conv5, pool, conv5, pool, fc120, fc84 (course notes)."""
    _check(include_top, weights, "lenet")
    inputs = _input(input_shape, "lenet")
    x = layers.Conv2D(int(6 * width), 5, activation="relu", name="block1_conv")(inputs)
    x = layers.MaxPooling2D(2, name="block1_pool")(x)
    x = layers.Conv2D(int(16 * width), 5, activation="relu", name="block2_conv")(x)
    x = layers.MaxPooling2D(2, name="block2_pool")(x)
    x = layers.Flatten(name="block3_flatten")(x)
    x = layers.Dense(120, activation="relu", name="block3_fc120")(x)
    x = layers.Dense(84, activation="relu", name="block4_fc84")(x)
    return keras.Model(inputs, x, name="lenet")


def AlexNet(include_top=False, weights=None, input_shape=None, width=1.0):
    """AlexNet-style convolutional stack: 11x11/4, 5x5, three 3x3, max pooling.

    "same" padding keeps it usable at small sizes; `width` scales every layer's filters.
    """
    _check(include_top, weights, "alexnet")
    inputs = _input(input_shape, "alexnet")
    x = inputs
    plan = [(96, 11, 4, True), (256, 5, 1, True), (384, 3, 1, False), (384, 3, 1, False),
            (256, 3, 1, True)]
    for i, (filters, kernel, stride, pool) in enumerate(plan, start=1):
        x = layers.Conv2D(max(1, int(filters * width)), kernel, strides=stride,
                          padding="same", activation="relu", name=f"block{i}_conv")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name="alexnet")


def TinyTest(include_top=False, weights=None, input_shape=None, width=8):
    """Three conv-BN-ReLU blocks: the tiny backbone every test runs on.

    It has BatchNorm, so the "BN statistics never move" guarantees are tested on it.
    """
    _check(include_top, weights, "tiny_test")
    inputs = _input(input_shape, "tiny_test")
    x = inputs
    for i, (filters, stride) in enumerate([(width, 1), (2 * width, 2), (2 * width, 2)], 1):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                          name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
    return keras.Model(inputs, x, name="tiny_test")


def CompactCNN(include_top=False, weights=None, input_shape=None, width=16,
               bn_momentum=0.99):
    """A stride-2 stem, then four blocks of two conv-BN-ReLU layers, widths 16-32-64-128.

    The source network of `transferkit demo`: small enough to pretrain on a CPU in
    minutes and to ship (~290k parameters, 1.2 MB), with named blocks and BatchNorm, so
    freezing by block and the BN rules apply to it as to a Keras Applications backbone.
    bn_momentum: BatchNorm's moving-average momentum (Keras's 0.99 by default); 0.9
        lets the moving statistics catch up within the hundred-odd steps of a short
        from-scratch run, whose evaluation otherwise lags far behind its training.
    """
    _check(include_top, weights, "compact_cnn")
    inputs = _input(input_shape, "compact_cnn")
    x = inputs
    for i, mult in enumerate([1, 2, 4, 8], start=1):
        for j in (1, 2):
            # A stride-2 stem (as in ResNet) quarters the cost of every later layer.
            stride = 2 if (i, j) == (1, 1) else 1
            x = layers.Conv2D(width * mult, 3, strides=stride, padding="same",
                              use_bias=False, name=f"block{i}_conv{j}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum,
                                          name=f"block{i}_bn{j}")(x)
            x = layers.ReLU(name=f"block{i}_relu{j}")(x)
        if i < 4:  # the last block keeps its resolution for the pooling layer
            x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name="compact_cnn")


_BLOCKS = r"^(block\d+)_"
register_backbone(BackboneSpec(
    name="lenet", constructor=LeNet, default_size=32, min_size=16, preprocessing="unit",
    feature_size=84, block_pattern=_BLOCKS, family="scratch", imagenet=False,
    tags=("scratch",), operations=8, pyramid=()))
register_backbone(BackboneSpec(
    name="alexnet", constructor=AlexNet, default_size=224, min_size=32,
    preprocessing="unit", feature_size=256, block_pattern=_BLOCKS, family="scratch",
    imagenet=False, tags=("scratch",), operations=9))
register_backbone(BackboneSpec(
    name="tiny_test", constructor=TinyTest, default_size=32, min_size=8,
    preprocessing="tf", feature_size=16, block_pattern=_BLOCKS, family="test",
    imagenet=False, tags=("test",), operations=10, skips=("block2_relu",),
    pyramid=(("block2_relu", 2), ("block3_relu", 4))))
register_backbone(BackboneSpec(
    name="compact_cnn", constructor=CompactCNN, default_size=64, min_size=16,
    preprocessing="tf", feature_size=128, block_pattern=_BLOCKS, family="scratch",
    imagenet=False, tags=("scratch",), operations=28,
    skips=("block1_relu2", "block2_relu2", "block3_relu2"),
    pyramid=(("block3_relu2", 8), ("block4_relu2", 16))))
