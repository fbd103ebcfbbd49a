"""Precise BatchNorm statistics: recomputed exactly over the training split after a phase
in which BN trained, on the live and the boundary-cache path; left alone where BN is
frozen."""

import keras
import numpy as np
import tensorflow as tf

from transferkit.models import build_model
from transferkit.models.heads import HeadConfig
from transferkit.training import cache
from transferkit.training.bn_stats import population_stats, recompute_batchnorm
from transferkit.training.boundary import boundary_extractor, find_cut
from transferkit.training.freezing import FreezePolicy, freeze
from transferkit.training.orchestrator import fine_tune
from transferkit.training.schedule import PhaseConfig, ScheduleConfig

SCRATCH = FreezePolicy("none", train_batchnorm=True)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return build_model("tiny_test", 2, weights=None, input_shape=32,
                       head=HeadConfig(dropout=0.0))


def _images(splits):
    return np.concatenate([x for x, _ in splits.train])


def _bn_input(model, images, conv):
    """The input of the BN layer after `conv` (its conv's output), as numpy float64."""
    backbone = model.get_layer("backbone")
    bottom = keras.Model(backbone.inputs, backbone.get_layer(conv).output)
    return np.asarray(bottom(model.get_layer("preprocess")(images)), np.float64)


def test_recomputed_statistics_are_the_population_statistics_of_the_inputs():
    model = _model()
    images = np.random.default_rng(0).uniform(0, 255, (21, 32, 32, 3)).astype("float32")
    # Uneven batches (8, 8, 5): pooling must weigh them by size, not average them.
    assert recompute_batchnorm(model, tf.data.Dataset.from_tensor_slices(images).batch(8)) == 3
    inputs = _bn_input(model, images, "block1_conv")
    bn = model.get_layer("backbone").get_layer("block1_bn")
    # Keras's moving_variance averages the biased batch variance (ops.moments): ddof=0.
    np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean((0, 1, 2)), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), inputs.var((0, 1, 2)),
                               rtol=1e-4, atol=1e-7)
    # The layer is itself again: inference mode reads the new statistics.
    assert "call" not in vars(bn)
    # A bounded pass reads only its batches.
    few = population_stats(model, tf.data.Dataset.from_tensor_slices(images).batch(8),
                           [bn], max_batches=1)
    first = _bn_input(model, images[:8], "block1_conv")
    np.testing.assert_allclose(few[bn][0], first.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_after_a_from_scratch_phase_inference_agrees_with_training_behaviour():
    """Keras's moving averages (momentum 0.99) barely move in a few dozen steps: on
    bright images with a faint class signal, inference then predicts one class while
    training mode separates both; after the recompute the two agree."""
    rng = np.random.default_rng(0)
    labels = np.arange(32) % 2
    images = 200 + rng.uniform(-10, 10, (32, 32, 32, 3))
    images[labels == 0, ..., 0] += 8
    images[labels == 1, ..., 2] += 8
    images = images.astype("float32")
    accuracy = {}
    for batches in (0, 100):  # off, on
        model = _model()
        schedule = ScheduleConfig(
            head=PhaseConfig(epochs=0),
            finetune=PhaseConfig(epochs=6, learning_rate=1e-2, freeze=SCRATCH,
                                 early_stopping_patience=0),
            batch_size=8, batchnorm_stats_batches=batches)
        fine_tune(model, (images, labels), config=schedule, verbose=0)
        # Training behaviour over the whole split: BN normalises by its statistics.
        trained = np.asarray(model(images, training=True))
        predicted = model.predict(images, verbose=0)
        accuracy[batches] = [(out.argmax(-1) == labels).mean() for out in (trained,
                                                                           predicted)]
    assert accuracy[0] == [1.0, 0.5]  # the lag: inference predicts a single class
    assert accuracy[100] == [1.0, 1.0]
    np.testing.assert_allclose(predicted, trained, atol=5e-3)


def test_frozen_batchnorm_keeps_its_statistics(splits):
    model = _model()
    moving = [v for v in model.get_layer("backbone").weights if "moving" in v.path]
    before = [v.numpy() for v in moving]
    schedule = ScheduleConfig(head=PhaseConfig(epochs=1),
                              finetune=PhaseConfig(epochs=1, freeze="none"), batch_size=8)
    fine_tune(model, splits, config=schedule, verbose=0)
    assert len(moving) == 6
    for a, b in zip(before, moving):
        np.testing.assert_array_equal(a, b.numpy())


def test_on_the_boundary_path_the_top_is_fed_the_cached_activations(splits, capsys):
    model = _model()
    schedule = ScheduleConfig(
        head=PhaseConfig(epochs=1, learning_rate=0.05),
        finetune=PhaseConfig(epochs=2, learning_rate=1e-2,
                             freeze=FreezePolicy("last_blocks", 1, train_batchnorm=True),
                             early_stopping_patience=0),
        batch_size=8)
    fine_tune(model, splits, config=schedule, verbose=1,
              cache=cache.FeatureCache(boundary=True))
    out = capsys.readouterr().out
    assert "phase 2 on cached activations" in out and "BatchNorm statistics of 1" in out
    # Independently: block3_bn's input is block3_conv of the cached (float16) cut.
    freeze(model, schedule.finetune.freeze)
    cut, _ = find_cut(model)
    activations = boundary_extractor(model, cut, features=False).predict(
        _images(splits), verbose=0).astype(np.float16).astype(np.float32)
    backbone = model.get_layer("backbone")
    inputs = np.asarray(backbone.get_layer("block3_conv")(activations), np.float64)
    bn = backbone.get_layer("block3_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), inputs.mean((0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), inputs.var((0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
