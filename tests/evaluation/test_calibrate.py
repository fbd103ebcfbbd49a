"""`evaluation.calibrate`: temperature scaling of over-confident outputs."""

import numpy as np
import pytest

from transferkit.core.task_registry import get_task
from transferkit.evaluation import calibrate as cal
from transferkit.models.builder import build_model

MULTICLASS = get_task("multiclass")


def _tiny(classes=3, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model("tiny_test", classes, weights=None, image_size=32)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_temperature_scaling_lowers_nll_of_an_over_confident_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 4)) * 2
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.eye(4)[[rng.choice(4, p=p) for p in true_p]]
    # logits x4: deliberately over-confident
    over = MULTICLASS.apply_temperature(true_p, 1 / 4)
    result = cal.calibrate(MULTICLASS, over, labels, over, labels)
    temperature = result["temperature"]
    scaled = MULTICLASS.apply_temperature(over, temperature)
    assert temperature == pytest.approx(4.0, rel=0.3)
    assert result["nll_after"] == pytest.approx(MULTICLASS.nll(scaled, labels))
    assert result["nll_after"] < result["nll_before"] - 0.1
    assert result["after"]["ece"] < result["before"]["ece"]
    np.testing.assert_array_equal(scaled.argmax(1), over.argmax(1))  # accuracy unchanged
    layer = cal.with_temperature(_tiny(classes=4), temperature, MULTICLASS)
    x = _images(n=2)
    inner = layer.layers[1].predict(x, verbose=0)
    np.testing.assert_allclose(layer.predict(x, verbose=0),
                               MULTICLASS.apply_temperature(inner, temperature), atol=1e-5)


def test_binary_temperature_rescales_the_sigmoid_and_keeps_the_ranking():
    # One sigmoid unit: calibration rescales its log-odds. (A softmax over one column
    # would output 1.0 for every image.)
    binary = get_task("binary")
    rng = np.random.default_rng(1)
    logit = rng.normal(size=300) * 1.5
    labels = (rng.uniform(size=300) < 1 / (1 + np.exp(-logit))).astype("float32")[:, None]
    over = 1 / (1 + np.exp(-4 * logit))[:, None]  # 4x the log-odds: over-confident
    temperature = binary.fit_temperature(over, labels)
    assert temperature == pytest.approx(4.0, rel=0.3)
    scaled = binary.apply_temperature(over, temperature)
    assert binary.nll(scaled, labels) < binary.nll(over, labels)
    order = np.argsort(over[:, 0], kind="stable")  # the ranking survives (ties allowed)
    assert np.all(np.diff(scaled[order, 0]) >= 0)
    layer = cal.TemperatureScale(temperature, "sigmoid")  # float32 log-odds near 1
    np.testing.assert_allclose(layer(over.astype("float32")), scaled, atol=1e-3)
