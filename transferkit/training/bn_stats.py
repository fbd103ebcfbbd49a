"""Precise BatchNorm statistics: recompute the moving mean and variance after training.

Keras's moving averages (momentum 0.99) trail far behind the weights on small data: a
from-scratch U-Net that segments its training images at 0.93 mIoU in training mode can
predict all background in inference mode. Wherever BatchNorm layers trained in a phase,
`recompute_batchnorm` replaces their moving statistics by the exact population
statistics of their inputs over (a bounded part of) the training split, computed with
the phase's final weights:

- one pass, every trained BN layer normalising with its batch's statistics as in
  training (so the layers above see what they trained on), everything else in
  inference mode (no dropout, and the data without augmentation where it can be
  re-read: file splits);
- per channel, the batches' means and biased variances (what Keras's BatchNormalization
  averages into `moving_variance`: `ops.moments`, divided by n) are pooled exactly
  (Chan et al.'s parallel formula), not momentum-averaged.

BN layers that stayed frozen (the transfer default) are left alone: nothing changed
there. The orchestrator runs this when a phase ends (`ScheduleConfig.batchnorm_stats_batches`).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from transferkit.models.blocks import descendants

_BN = keras.layers.BatchNormalization


def trained_batchnorm(model):
    """The BatchNorm layers of `model` (at any depth) that train as it is frozen now:
    their moving statistics moved during a phase that trained them."""
    seen, found = set(), []
    for layer in descendants(model):
        if isinstance(layer, _BN) and layer.trainable and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def population_stats(model, batches, layers, max_batches=None):
    """{layer: (mean, variance)} per channel (float64 arrays) of the inputs of the BN
    `layers` inside `model` over `batches` (a dataset of inputs or (inputs, ...)
    tuples; at most `max_batches` of them, None: all), with those layers normalising by
    batch statistics and the rest of the model in inference mode. The variance is the
    biased one, as BatchNormalization's `moving_variance` holds."""
    if max_batches is not None:
        batches = batches.take(max_batches)
    collected = {}
    for layer in layers:
        layer.__dict__["call"] = _recording_call(layer, collected)  # this instance only
    try:
        @tf.function(reduce_retracing=True)
        def step(x):
            collected.clear()
            model(x, training=False)
            return [collected[id(layer)] for layer in layers]

        totals = {id(layer): None for layer in layers}
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer, stats in zip(layers, step(x)):
                totals[id(layer)] = _pool(totals[id(layer)],
                                          *(np.asarray(s, np.float64) for s in stats))
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)
    if any(t is None for t in totals.values()):
        return {}  # no batches
    return {layer: (totals[id(layer)][1], totals[id(layer)][2]) for layer in layers}


def recompute_batchnorm(model, batches, layers=None, max_batches=None):
    """Set the moving mean and variance of BN `layers` (default: those of `model` that
    train) to their population statistics over `batches` (see `population_stats`);
    returns the number of layers updated (0: no trained BN layer, or no batches)."""
    layers = trained_batchnorm(model) if layers is None else list(layers)
    if not layers:
        return 0
    stats = population_stats(model, batches, layers, max_batches)
    for layer, (mean, variance) in stats.items():
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    return len(stats)


def _recording_call(layer, collected):
    """A `call` for BN `layer` that records its input's per-channel count, mean and
    biased variance in `collected` and normalises with them (training behaviour)."""

    def call(inputs, training=None, mask=None):
        x = ops.cast(inputs, "float32")
        axes = layer._reduction_axes
        mean, variance = ops.moments(x, axes=axes)
        count = ops.cast(ops.size(x), "float32") / ops.cast(ops.size(mean), "float32")
        collected[id(layer)] = (count, mean, variance)
        gamma = ops.cast(layer.gamma, "float32") if layer.scale else None
        beta = ops.cast(layer.beta, "float32") if layer.center else None
        out = ops.batch_normalization(x, mean, variance, axis=layer.axis, offset=beta,
                                      scale=gamma, epsilon=layer.epsilon)
        return ops.cast(out, layer.compute_dtype)

    return call


def _pool(total, count, mean, variance):
    """(count, mean, biased variance) of the union of `total` and one batch's
    statistics; exact (Chan et al.), in float64."""
    if total is None:
        return count, mean, variance
    n, m, v = total
    both = n + count
    delta = mean - m
    pooled = m + delta * (count / both)
    m2 = v * n + variance * count + delta ** 2 * n * count / both
    return both, pooled, m2 / both
