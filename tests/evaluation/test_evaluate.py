"""`evaluation.evaluate`: metrics, ensembles, the flip-TTA decision, the safe-mode
refusal and predict's decoding."""

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.evaluation import evaluate as ev
from transferkit.evaluation.evaluate import flip_decision
from transferkit.models.builder import build_model
from transferkit.models.saving import save_model
from transferkit.models.tta import with_tta


MULTICLASS = get_task("multiclass")


def _tiny(classes=3, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model("tiny_test", classes, weights=None, input_shape=32)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


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


# (Localization, a dense head now, takes no flip TTA: tests/tasks/test_localization.py.)
@pytest.mark.parametrize("task_name", ["segmentation"])
def test_the_decision_scores_mirrored_outputs_as_the_saved_wrapper_predicts(task_name):
    # Masks are mirrored back (Task.unflip) before the mean, as with_tta's layers do in
    # the model that would be saved.
    from transferkit.models.segmentation import build_segmenter

    task, rng = get_task(task_name), np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    if task_name == "segmentation":
        model = build_segmenter("tiny_test", 3, weights=None, image_size=32,
                                decoder_width=4)
        y = np.eye(3, dtype="float32")[rng.integers(0, 3, (4, 32, 32))]  # one-hot
    else:
        model = build_model("tiny_test", 3, task=task_name, weights=None, image_size=32)
        corners = np.sort(rng.uniform(0, 1, (4, 2, 2)), axis=1)  # [N, (min, max), (x, y)]
        boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0],
                          corners[:, 1, 1]], axis=1)
        y = np.concatenate([np.eye(3)[rng.integers(0, 3, 4)], boxes], 1).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    decision = flip_decision(model, dataset, task, ("a", "b", "c"))
    wrapped = with_tta(model, "flip", task=task).predict(x, verbose=0)
    assert decision["flip"][task.headline] == pytest.approx(
        task.score(wrapped, y, ("a", "b", "c"))[task.headline], abs=1e-6)
    assert decision["flip"]["loss"] == pytest.approx(
        float(np.mean(task.example_losses(wrapped, y))), rel=1e-5)
