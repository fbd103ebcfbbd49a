"""`models.novelty`: the novelty score. Picking a detector and its threshold, refitting
to more classes, the energy candidate (logits recomputed from the softmax Dense layer)
and the shuffled tiles that stand in for unknown images."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.models import novelty as nv
from transferkit.models.builder import build_model
from transferkit.models.heads import HeadConfig
from transferkit.models.parts import resolve

SIZE = 32


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _batches(images):
    return tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(8)


def test_fit_novelty_picks_a_detector_and_calibrates_its_threshold():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 4, (3, 16))
    ids = np.repeat(np.arange(3), 100)
    x = means[ids] + rng.normal(0, 1, (300, 16))
    val_ids = np.repeat(np.arange(3), 40)
    val = means[val_ids] + rng.normal(0, 1, (120, 16))
    far = rng.normal(0, 1, (60, 16)) + 12
    flat = np.full((len(val), 3), 1 / 3)  # useless probabilities: msp cannot separate
    fitted = nv.fit_novelty(x, ids, val, flat, far, np.full((60, 3), 1 / 3),
                            false_rejection=0.05)
    assert fitted.detector == "mahalanobis" and fitted.auroc["mahalanobis"] > 0.99
    assert fitted.auroc["msp"] == pytest.approx(0.5)
    assert np.mean(fitted.unknown(fitted.score(val, flat))) == pytest.approx(0.05, abs=0.01)
    again = nv.Novelty.from_parts(fitted.to_json(), fitted.arrays_bytes())
    np.testing.assert_allclose(again.score(far, flat[:60]), fitted.score(far, flat[:60]))
    with pytest.raises(ConfigError, match="false_rejection"):
        nv.fit_novelty(x, ids, val, flat, far, flat[:60], false_rejection=0)


def test_refit_keeps_the_detector_and_recalibrates_its_threshold():
    rng = np.random.default_rng(1)
    means = rng.normal(0, 4, (4, 8))
    ids = np.repeat(np.arange(4), 50)
    x = means[ids] + rng.normal(0, 1, (200, 8))
    val = means[np.repeat(np.arange(4), 20)] + rng.normal(0, 1, (80, 8))
    probs = np.full((80, 4), 0.25)
    for name in ("mahalanobis", "knn"):
        first = nv.Novelty(name, 0.0, 0.1, {name: 0.9}, "synthetic",
                           nv.fit_arrays(x[ids < 3], ids[ids < 3], needs=nv.NEEDS[name]))
        refit = first.refit(x, ids, val, probs)
        assert refit.detector == name and refit.auroc == first.auroc
        assert set(refit.arrays) == set(nv.NEEDS[name])
        if name == "mahalanobis":  # independent: class means by hand, Mahalanobis by loop
            np.testing.assert_allclose(refit.arrays["means"],
                                       [x[ids == c].mean(axis=0) for c in range(4)],
                                       rtol=1e-5)
            p = refit.arrays["precision"].astype(np.float64)
            direct = [min(np.sqrt((v - m) @ p @ (v - m)) for m in refit.arrays["means"])
                      for v in val]
            np.testing.assert_allclose(refit.score(val, probs), direct, rtol=1e-4)
        scores = refit.score(val, probs)
        assert np.mean(scores > refit.threshold) == pytest.approx(0.1, abs=0.02)


def test_shuffled_tiles_keep_the_tiles_and_lose_the_layout():
    image = np.arange(8 * 8 * 3, dtype=np.float32).reshape(1, 8, 8, 3)
    out = nv.shuffled_tiles(image, grid=4, seed=1)
    tiles = lambda a: sorted(a[0, r:r + 2, c:c + 2].tobytes()  # noqa: E731
                             for r in range(0, 8, 2) for c in range(0, 8, 2))
    assert tiles(out) == tiles(image) and not np.array_equal(out, image)


@pytest.mark.parametrize("units", [(), (8,)])
def test_energy_is_minus_logsumexp_of_the_dense_logits(units):
    model = build_model("tiny_test", 3, weights=None, image_size=SIZE,
                        head=HeadConfig(units=units, dropout=0.3))
    images = _images(5)
    features, probs, logits, _ = nv.novelty_inputs(model, _batches(images),
                                                   get_task("multiclass"))
    # Independently: numpy through the head's Dense weights (dropout is off at inference).
    x = resolve(model).feature_extractor().predict_on_batch(images)
    dense = [layer for layer in model.get_layer("head").layers if layer.weights]
    for layer in dense[:-1]:
        x = np.maximum(x @ layer.get_weights()[0] + layer.get_weights()[1], 0)  # relu
    kernel, bias = dense[-1].get_weights()
    expected = x @ kernel + bias
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs, model.predict_on_batch(images), atol=1e-6)
    energy = nv.Novelty("energy", 0.0, 0.05, {}, "synthetic")
    np.testing.assert_allclose(energy.score(features, probs, logits),
                               -logsumexp(expected, axis=1), rtol=1e-5)
    # A sigmoid output has no softmax logits: the candidate does not apply.
    assert nv.head_logits(model, get_task("binary")) is None


def test_energy_is_a_candidate_only_with_logits():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(3), 30)
    x = rng.normal(0, 1, (90, 8)) + 3 * np.eye(3, 8)[ids]
    val = rng.normal(0, 1, (30, 8)) + 3 * np.eye(3, 8)[ids[::3]]
    far = rng.normal(0, 1, (20, 8)) - 3
    weights = np.eye(8, 3) * 4  # logits: large for known images, small for far ones
    probs = lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)  # noqa: E731
    with_logits = nv.fit_novelty(x, ids, val, probs(val @ weights), far,
                                 probs(far @ weights), val_logits=val @ weights,
                                 outlier_logits=far @ weights)
    assert set(with_logits.auroc) == set(nv.DETECTORS)
    assert with_logits.auroc["energy"] > 0.9
    without = nv.fit_novelty(x, ids, val, probs(val @ weights), far, probs(far @ weights))
    assert "energy" not in without.auroc
