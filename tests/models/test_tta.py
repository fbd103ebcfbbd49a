"""`models.tta`: test-time augmentation layers (flip, ten crops) inside the model."""

import numpy as np
import tensorflow as tf

from transferkit.models.builder import build_model
from transferkit.models.saving import load_model, save_model
from transferkit.models.tta import TTAViews, ViewMean, with_tta


def _tiny(classes=3, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model("tiny_test", classes, weights=None, image_size=32)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_tta_flip_averages_the_image_and_its_mirror():
    model, x = _tiny(), _images()
    got = with_tta(model, "flip").predict(x, verbose=0)
    manual = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, manual, atol=1e-6)


def test_tta_ten_crop_views_are_the_five_crops_and_their_mirrors():
    x = _images(n=2, size=8)
    views = TTAViews(multi_crop=True, flip=True, crop_fraction=0.5)(x).numpy()
    assert views.shape == (20, 8, 8, 3)  # view-major: 10 views of 2 images
    resize = lambda crop: tf.image.resize(crop, (8, 8)).numpy()  # noqa: E731
    expected = [resize(x[:, 2:6, 2:6]), resize(x[:, :4, :4]), resize(x[:, :4, 4:]),
                resize(x[:, 4:, :4]), resize(x[:, 4:, 4:])]
    expected += [e[:, :, ::-1] for e in expected]
    np.testing.assert_allclose(views, np.concatenate(expected), atol=1e-4)
    means = ViewMean(10)(np.arange(20, dtype="float32").reshape(20, 1)).numpy()
    np.testing.assert_allclose(means[:, 0], [9.0, 10.0])  # mean of 0,2,..,18 and 1,..,19


def test_tta_model_survives_a_safe_mode_round_trip(tmp_path):
    model, x = _tiny(), _images()
    tta = with_tta(model, "ten_crop")
    before = tta.predict(x, verbose=0)
    path = save_model(tta, str(tmp_path / "tta.keras"))
    after = load_model(path).predict(x, verbose=0)  # trusted=False: safe_mode on
    assert before.shape == (4, 3)
    np.testing.assert_allclose(after, before, atol=1e-6)
