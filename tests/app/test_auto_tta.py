"""Flip TTA decided on validation at the end of training and kept in model.keras.

The models here are hand-set (no training), so whether the mirror helps is known in
advance: one reads only the left half of the image. Scores are checked against numpy
computations of the same model on the decoded image files.
"""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from transferkit.app.train import finish, prepare, train
from transferkit.cli.main import main
from transferkit.evaluation.evaluate import eval_data, load_run, predict
from transferkit.models.tta import tta_of, unwrap_tta, with_tta
from transferkit.models.saving import read_metadata, save_model
from transferkit.training.recipe import RecipeConfig

SIZE, SCALE = 32, 0.05


def _folder(root, kind, per_class=10):
    """"sides": class left/right = which half is bright (the mirror swaps classes);
    "patch": class red/blue = colour of a patch on one half, alternately left and right,
    with a faint patch of the other colour on the other half (the mirror keeps the
    class; a model reading the left half only is misled on half of the images)."""
    rng = np.random.default_rng(0)
    classes = ("left", "right") if kind == "sides" else ("blue", "red")
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            pixels = rng.integers(0, 60, (SIZE, SIZE, 3)).astype("uint8")
            half = c if kind == "sides" else i % 2  # 0: left half, 1: right half
            cols = slice(0, SIZE // 2) if half == 0 else slice(SIZE // 2, SIZE)
            if kind == "sides":
                pixels[:, cols] += 180
            else:  # and a faint patch of the other colour on the other half
                other = slice(SIZE // 2, SIZE) if half == 0 else slice(0, SIZE // 2)
                pixels[:, cols, 0 if name == "red" else 2] += 180
                pixels[:, other, 2 if name == "red" else 0] += 40
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    return str(root)


def _weights(kind):
    """Dense weights [3, 2] and bias on the mean RGB of the pooled region."""
    if kind == "sides":  # left bright: sum of the means above 360 -> class "left"
        return np.array([[SCALE, -SCALE]] * 3), np.array([-360 * SCALE, 360 * SCALE])
    return (np.array([[-SCALE, SCALE], [0, 0], [SCALE, -SCALE]]),  # blue, red
            np.zeros(2))


def _model(kind, half=True):
    """Softmax over 2 classes from the mean colour of the left half (or whole image)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Cropping2D(((0, 0), (0, SIZE // 2)))(inputs) if half else inputs
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(x)
    dense.set_weights([w.astype("float32") for w in _weights(kind)])
    return keras.Model(inputs, outputs, name="hand_set")


def _numpy_probs(kind, images, half=True):
    """The same model in numpy, on [N, H, W, 3] images."""
    region = images[:, :, :SIZE // 2] if half else images
    w, b = _weights(kind)
    logits = region.mean(axis=(1, 2)) @ w + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _finish(tmp_path, kind, half=True, **keys):
    folder = _folder(tmp_path / "data", kind)
    recipe = RecipeConfig.from_keys(data=folder, backbone="tiny_test", weights="none",
                                    image_size=SIZE, val_split=0.5, report=False,
                                    novelty=False, **keys)
    job = prepare(recipe, str(tmp_path / "run"))
    return folder, finish(job, _model(kind, half), [])


def _val_images(run, folder):
    files = eval_data(load_run(run), folder, split="val").files
    return files, np.stack([np.asarray(Image.open(f).convert("RGB"), np.float64)
                            for f in files])


def _accuracy(probs, files, names=("blue", "red")):
    truth = [os.path.basename(os.path.dirname(f)) for f in files]
    return np.mean([names[p] == t for p, t in zip(probs.argmax(axis=1), truth)])


def test_flip_is_kept_where_it_helps_and_every_command_uses_it(tmp_path, capsys):
    folder, result = _finish(tmp_path, "patch")
    run = result.out_dir
    decision = result.tta
    assert decision["tta"] == "flip" and decision["metric"] == "accuracy"
    # Independently: the numpy model on the val files, and on their mirrors.
    files, images = _val_images(run, folder)
    plain = _numpy_probs("patch", images)
    both = (plain + _numpy_probs("patch", images[:, :, ::-1])) / 2
    assert decision["plain"]["accuracy"] == pytest.approx(_accuracy(plain, files))
    assert decision["flip"]["accuracy"] == pytest.approx(_accuracy(both, files))
    assert decision["plain"]["accuracy"] < decision["flip"]["accuracy"] == 1.0
    # Stored: the model file is the wrapped model, its metadata, run.json, metrics.json.
    model_file = os.path.join(run, "model.keras")
    assert tta_of(load_run(run).model) == "flip"
    assert read_metadata(model_file)["tta"] == decision
    assert json.load(open(os.path.join(run, "run.json")))["tta"] == decision
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["val"]["tta"] == decision
    assert metrics["val"]["accuracy"] == pytest.approx(decision["flip"]["accuracy"])
    # evaluate and predict, with no flag, give the averaged model's numbers.
    out = tmp_path / "eval"
    assert main(["evaluate", run, "--data", folder, "--split", "val", "--out",
                 str(out)]) == 0
    report = json.load(open(out / "evaluation.json"))
    assert report["accuracy"] == pytest.approx(decision["flip"]["accuracy"])
    assert report["nll"] == pytest.approx(decision["flip"]["loss"], rel=1e-4)
    rows = predict(run, list(files))
    np.testing.assert_allclose([[s["probability"] for s in sorted(
        r["scores"], key=lambda s: s["class"])] for r in rows], both, atol=1e-4)
    # --tta flip again is a no-op; --tta none scores the plain model.
    capsys.readouterr()
    assert main(["evaluate", run, "--data", folder, "--split", "val", "--tta"]) == 0
    assert "already averages flip TTA" in capsys.readouterr().err
    assert main(["evaluate", run, "--data", folder, "--split", "val", "--tta", "none",
                 "--out", str(tmp_path / "plain")]) == 0
    plain_report = json.load(open(tmp_path / "plain" / "evaluation.json"))
    assert plain_report["accuracy"] == pytest.approx(decision["plain"]["accuracy"])


def test_flip_is_not_kept_where_the_mirror_swaps_classes(tmp_path):
    folder, result = _finish(tmp_path, "sides")
    decision = result.tta
    assert decision["tta"] is None
    assert decision["flip"]["loss"] > decision["plain"]["loss"]  # ~log 2 against ~0
    assert decision["plain"]["accuracy"] == 1.0
    assert tta_of(load_run(result.out_dir).model) is None
    assert read_metadata(os.path.join(result.out_dir, "model.keras"))["tta"] == decision


def test_a_tie_keeps_the_plain_model_and_auto_tta_off_skips_the_decision(tmp_path):
    # The whole-image mean is the same for an image and its mirror: a tie.
    _, result = _finish(tmp_path / "tie", "patch", half=False)
    assert result.tta["tta"] is None
    assert result.tta["flip"]["accuracy"] == result.tta["plain"]["accuracy"]
    assert tta_of(load_run(result.out_dir).model) is None
    _, result = _finish(tmp_path / "off", "patch", auto_tta=False)
    assert result.tta == {"tta": None, "reason": "auto_tta is off"}
    assert tta_of(load_run(result.out_dir).model) is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:weights=none")
def test_a_trained_run_records_its_decision_and_trains_again_from_a_wrapped_model(
        tmp_path):
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "images", per_class=8, size=SIZE)
    keys = dict(data=folder, backbone="tiny_test", weights="none", image_size=SIZE,
                head_epochs=0, finetune_epochs=1, unfreeze="all", report=False)
    result = train(RecipeConfig.from_keys(**keys), tmp_path / "a", verbose=0)
    assert result.tta["tta"] in ("flip", None) and "plain" in result.tta
    assert tta_of(load_run(result.out_dir).model) == result.tta["tta"]
    # A run's model.keras that kept flip TTA is a starting point for another run: its
    # backbone is found inside the wrapper.
    plain = unwrap_tta(load_run(result.out_dir).model)
    wrapped = save_model(with_tta(plain, "flip"), str(tmp_path / "wrapped.keras"))
    again = train(RecipeConfig.from_keys(**{**keys, "weights": wrapped, "finetune_epochs": 0,
                                           "auto_tta": False}), tmp_path / "b", verbose=0)
    for a, b in zip(plain.get_layer("backbone").weights,
                    again.model.get_layer("backbone").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("task_name", ["segmentation", "localization"])
def test_the_decision_scores_mirrored_outputs_as_the_saved_wrapper_predicts(task_name):
    # Masks are mirrored back and a box's x-range is mirrored back (Task.unflip) before
    # the mean, as with_tta's layers do in the model that would be saved.
    import tensorflow as tf

    from transferkit.core.task_registry import get_task
    from transferkit.evaluation.evaluate import flip_decision
    from transferkit.models.builder import build_model
    from transferkit.models.segmentation import build_segmenter

    task, rng = get_task(task_name), np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    if task_name == "segmentation":
        model = build_segmenter("tiny_test", 3, weights=None, input_shape=SIZE,
                                decoder_width=4)
        y = np.eye(3, dtype="float32")[rng.integers(0, 3, (4, SIZE, SIZE))]  # one-hot
    else:
        model = build_model("tiny_test", 3, task=task_name, weights=None, input_shape=SIZE)
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
