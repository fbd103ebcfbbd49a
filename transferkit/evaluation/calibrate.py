"""Temperature scaling (Guo et al. 2017) and reliability-diagram data.

    temperature = fit_temperature(val_probs, val_labels)
    calibrated = apply_temperature(test_probs, temperature)
    model = with_temperature(model, temperature)   # exportable, safe to load

One scalar T divides the logits: T > 1 softens an over-confident model, and the
argmax (so accuracy) never changes. transferkit models output probabilities, and
softmax(log p) == p, so log-probabilities stand in for the logits.
"""

import keras
import numpy as np
from keras import ops
from scipy.optimize import minimize_scalar

from transferkit.core.errors import ConfigError

EPSILON = 1e-12


def _true(labels):
    labels = np.asarray(labels)
    return labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(int)


def apply_temperature(probs, temperature):
    """softmax(log(probs) / temperature), row-wise; numerically stable."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPSILON, 1.0))
    logits = logits / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(probs, labels):
    """Mean negative log-likelihood of the true classes."""
    true = _true(labels)
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(true)), true]
    return float(-np.mean(np.log(np.clip(picked, EPSILON, 1.0))))


def fit_temperature(probs, labels, bounds=(0.05, 20.0)):
    """The T in `bounds` (default 0.05-20) minimising validation NLL.

    A bounded 1-D search on log T (scipy) is exact enough and has no learning rate
    to tune, unlike fitting T with an optimizer.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] < 2 or len(probs) == 0:
        raise ConfigError("Temperature scaling needs multiclass probabilities [N, C>=2]; "
                          f"received shape {probs.shape}.")
    low, high = np.log(bounds[0]), np.log(bounds[1])
    result = minimize_scalar(lambda log_t: nll(apply_temperature(probs, np.exp(log_t)),
                                               labels),
                             bounds=(low, high), method="bounded")
    return float(np.exp(result.x))


def reliability(probs, labels, bins=10):
    """Reliability-diagram data: per confidence bin its count, confidence, accuracy.

    Returns {"edges", "count", "confidence", "accuracy", "ece"}; ECE is the
    count-weighted mean |accuracy - confidence| over bins.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == _true(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    nonzero = np.maximum(count, 1)
    conf, acc = conf_sum / nonzero, acc_sum / nonzero
    ece = float(np.sum(count * np.abs(acc - conf)) / max(len(confidence), 1))
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": conf.tolist(),
            "accuracy": acc.tolist(), "ece": ece}


@keras.saving.register_keras_serializable(package="transferkit")
class TemperatureScale(keras.layers.Layer):
    """Probabilities in, temperature-scaled probabilities out (a fixed scalar T)."""

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ConfigError("The `temperature` argument should be > 0. Received: "
                              f"temperature={temperature}")
        self.temperature = float(temperature)

    def call(self, probs):
        logits = ops.log(ops.clip(probs, EPSILON, 1.0)) / self.temperature
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def with_temperature(model, temperature):
    """`model` followed by a TemperatureScale layer: same shapes, calibrated outputs."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = TemperatureScale(temperature, name="temperature")(model(inputs))
    return keras.Model(inputs, outputs, name=model.name)
