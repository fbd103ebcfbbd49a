"""Metrics, TTA, ensembles, calibration, Grad-CAM and the safe-mode refusal."""

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.evaluation import calibrate as cal
from transferkit.evaluation import evaluate as ev
from transferkit.evaluation.gradcam import grad_cam
from transferkit.models.builder import build_model
from transferkit.models.saving import load_model, save_model
from transferkit.models.tta import TTAViews, ViewMean, with_tta


MULTICLASS = get_task("multiclass")


def _tiny(classes=3, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model("tiny_test", classes, weights=None, input_shape=32)


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


def test_ensemble_prediction_is_the_mean_of_the_members():
    members = [_tiny(seed=0), _tiny(seed=1)]
    x = _images(n=5)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.eye(3)[[0, 1, 2, 0, 1]])).batch(2)
    probs, labels = ev.ensemble_outputs(members, dataset, MULTICLASS)
    manual = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(probs, manual, atol=1e-6)
    assert labels.shape == (5, 3)
    np.testing.assert_allclose(MULTICLASS.average([[[1, 0]], [[0, 1]]]), [[0.5, 0.5]])
    with pytest.raises(ConfigError, match="same shape"):
        MULTICLASS.average([np.ones((2, 3)), np.ones((2, 4))])


def test_classification_report_counts_and_top_k():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.5, 0.4, 0.1]])
    labels = np.eye(3)[[0, 1, 1, 1]]
    report = MULTICLASS.score(probs, labels, ["a", "b", "c"], top_k=(2,))
    assert report["accuracy"] == 0.5
    assert report["top2"] == 1.0
    assert report["confusion_matrix"] == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert report["per_class"]["a"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["per_class"]["b"]["recall"] == pytest.approx(1 / 3)
    assert report["per_class"]["c"]["precision"] == 0.0  # never right, no division error
    assert list(ev.worst_predictions(MULTICLASS, probs, labels, 2)) == [1, 3]  # p .3, .4


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


def test_grad_cam_heatmap_has_the_image_size_and_range():
    heatmap = grad_cam(_tiny(), _images(n=1)[0])
    assert heatmap.shape == (32, 32)
    assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0


def _lambda_model(path):
    import keras

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    return save_model(model, path, metadata={"class_names": ["blue", "red"],
                                             "image_size": 32})


def test_evaluate_refuses_a_lambda_model_unless_trusted(tmp_path, capsys):
    path = _lambda_model(str(tmp_path / "lambda.keras"))
    folder = make_image_folder(tmp_path / "images", per_class=4, size=32)
    assert cli.main(["evaluate", path, "--data", folder]) == 2
    err = capsys.readouterr().err
    assert "Refusing to load" in err and "--trusted" in err and "lambda.keras" in err
    assert cli.main(["evaluate", path, "--data", folder, "--trusted"]) == 0
    assert "8 images: accuracy=" in capsys.readouterr().out


def test_predict_decodes_files_exactly_as_training_does(tmp_path):
    # An EXIF-rotated JPEG: TensorFlow's decoder ignores the rotation, the scan applies
    # it. Training and prediction must both see the rotated pixels.
    from PIL import Image

    from transferkit.data.files import image_dataset
    from transferkit.data.load import load_data
    from transferkit.evaluation.evaluate import predict

    folder = make_image_folder(tmp_path / "images", per_class=3, size=32)
    pixels = np.zeros((32, 48, 3), "uint8")
    pixels[:, :24, 0] = 255  # left half red, right half blue: rotation shows
    pixels[:, 24:, 2] = 255
    odd = os.path.join(folder, "red", "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(odd, exif=exif.tobytes(), quality=95)
    splits = load_data(folder, image_size=32, val_split=0.0, batch_size=64, verbose=False)
    trained = next(iter(splits.train))[0].numpy()  # shuffled: find the image by value
    dataset, _ = image_dataset([odd], (32, 32))
    predicted = next(iter(dataset))[0].numpy()[0]
    assert any(np.allclose(predicted, t, atol=1.0) for t in trained)
    naive = tf.image.resize(tf.io.decode_image(open(odd, "rb").read(), channels=3),
                            (32, 32)).numpy()
    assert not np.allclose(predicted, naive, atol=20)
    model = _tiny(classes=2)
    path = save_model(model, str(tmp_path / "m.keras"),
                      metadata={"class_names": ["blue", "red"], "task": "multiclass",
                                "input": {"height": 32, "width": 32}})
    row = predict(path, [odd])[0]
    expected = model.predict(predicted[None], verbose=0)[0]
    got = {s["class"]: s["probability"] for s in row["scores"]}
    assert got["red"] == pytest.approx(float(expected[1]), abs=1e-5)
