"""Deploying an export: the SavedModel's encoded-image signature (what TF Serving's REST
API calls) answers like `transferkit predict`, novelty score included, TFLite runs on
LiteRT, and `export --format all --check` writes one table and a model card."""

import dataclasses
import io
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit import deploy as ex
from transferkit.evaluation.evaluate import load_run
from transferkit.models import novelty as nv
from transferkit.models.builder import build_model
from transferkit.models.saving import save_model

NAMES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    model = build_model("tiny_test", 3, weights=None, input_shape=32)
    path = save_model(model, str(root / "model.keras"),
                      metadata={"class_names": NAMES, "image_size": 32})
    return load_run(path), root


def _photo(path, size, seed):
    """A smooth image (so JPEG keeps it close) of `size` (width, height), not 32x32."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]] / max(size)
    pixels = np.stack([255 * x, 255 * y, 255 * (1 - x * y)], -1) * rng.uniform(0.3, 1, 3)
    Image.fromarray(pixels.astype("uint8")).save(path)
    return str(path)


def test_encoded_image_signature_answers_like_predict(tiny, capsys):
    loaded, root = tiny
    saved_dir = ex.export_model(loaded, "savedmodel", str(root / "export"))
    files = [_photo(root / "a.jpg", (57, 41), 0), _photo(root / "b.png", (40, 64), 1),
             _photo(root / "c.jpg", (96, 96), 2)]
    saved = tf.saved_model.load(saved_dir)
    assert set(saved.signatures) == {"serving_default", "serve"}
    out = saved.signatures["serving_default"](
        image_bytes=tf.constant([open(f, "rb").read() for f in files]))
    capsys.readouterr()
    assert cli.main(["predict", loaded.path, *files, "--json", "--top-k", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = np.array([[{s["class"]: s["probability"] for s in r["scores"]}[n]
                          for n in NAMES] for r in rows])
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
    assert [v.decode() for v in out["label"].numpy()] == [r["label"] for r in rows]
    assert out["classes"].numpy().astype(str).tolist() == [NAMES] * len(files)
    # The float signature is the model itself, as load_predictor uses it.
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(ex.load_predictor(saved_dir)(x),
                               loaded.model.predict(x, verbose=0), atol=1e-5)
    meta = json.load(open(saved_dir + ".json"))
    assert meta["signatures"]["serving_default"]["inputs"] == {
        "image_bytes": ["string", [None]]}


def test_the_savedmodel_serves_the_energy_score(tiny, tmp_path):
    # Energy, -logsumexp of the head's logits, needs no fitted arrays.
    loaded = dataclasses.replace(tiny[0], novelty=nv.Novelty(
        "energy", -1.1, 0.05, {"energy": 0.9}, "synthetic"))
    # Whole values (PNG keeps them exactly)
    images = np.round(np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3))).astype(
        "float32")
    payload = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.astype("uint8")).save(buffer, format="PNG")
        payload.append(buffer.getvalue())
    saved = tf.saved_model.load(ex.export_model(loaded, "savedmodel", str(tmp_path)))
    served = saved.signatures["serving_default"](image_bytes=tf.constant(payload))
    expected = loaded.novelty.score(*nv.novelty_inputs(
        loaded.model, tf.data.Dataset.from_tensor_slices((images, np.zeros(4))).batch(8),
        loaded.task)[:3])
    np.testing.assert_allclose(served["novelty"].numpy(), expected, rtol=1e-5)
    assert served["unknown"].numpy().tolist() == (expected > -1.1).tolist()


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression",
                                  "segmentation"])
def test_serving_outputs_say_what_predict_says(task):
    # Each task's in-graph outputs against its numpy reading of the same outputs.
    t = get_task(task)
    rng = np.random.default_rng(0)
    shape = {"binary": (4, 1), "regression": (4, 2), "segmentation": (4, 5, 6, 3)}
    outputs = rng.uniform(0, 1, shape.get(task, (4, 3))).astype("float32")
    names = ("blue", "red") if task == "binary" else tuple(NAMES)
    got = {k: v.numpy() for k, v in t.serving_outputs(tf.constant(outputs), names).items()}
    if task == "regression":
        np.testing.assert_allclose(got["values"], outputs)
        return
    assert got["scores"].shape[0] == 4
    np.testing.assert_allclose(got["scores"], t.probabilities(outputs), atol=1e-6)
    assert got["classes"].astype(str).tolist() == [list(names)] * 4
    if task == "segmentation":
        np.testing.assert_array_equal(got["class_ids"], t.predicted(outputs))
        return
    for row, label in zip(outputs, got["label"].astype(str)):
        described = t.describe(row, names)["label"]
        assert label == ("|".join(described) if isinstance(described, list) else described)


def test_tflite_runs_on_litert_with_tf_lite_as_fallback(tiny, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    loaded, root = tiny
    path = ex.export_model(loaded, "tflite", str(root / "tflite"))
    x = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    reference = loaded.model.predict(x, verbose=0)
    assert type(ex.tflite_interpreter(path)) is Interpreter
    np.testing.assert_allclose(ex.load_predictor(path)(x), reference, atol=1e-5)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # not installed
    with pytest.warns(Warning):  # TF's own interpreter says it is deprecated
        interpreter = ex.tflite_interpreter(path)
    assert type(interpreter) is tf.lite.Interpreter
    with pytest.warns(Warning):
        predictor = ex.load_predictor(path)
    np.testing.assert_allclose(predictor(x), reference, atol=1e-5)


def test_export_all_checks_every_artifact_and_writes_a_model_card(tiny, capsys):
    loaded, root = tiny
    folder = make_image_folder(root / "images", classes=NAMES, per_class=3, size=32)
    out = str(root / "all")
    capsys.readouterr()
    assert cli.main(["export", loaded.path, "--format", "all", "--out", out, "--check",
                     "--data", folder, "--split", "all"]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("artifact"):].splitlines()
    formats = ["keras", "keras", "savedmodel", "tflite fp32", "tflite fp16", "tflite int8"]
    assert [line.split()[-1] for line in table[1:7]] == ["ok"] * 6, printed
    assert [line[24:37].strip() for line in table[1:7]] == formats, printed
    for line, name in zip(table[2:7], ["model.keras", "saved_model", "model.tflite",
                                       "model_fp16.tflite", "model_int8.tflite"]):
        assert line.startswith(name)
        size = ex.size_bytes(os.path.join(out, name)) / 2 ** 20
        assert float(line[37:45]) == pytest.approx(size, abs=0.006)
    card = open(os.path.join(out, "MODEL_CARD.md")).read()
    for needle in ("blue, green, red", "32x32", "| tflite int8 | `model_int8.tflite`",
                   '{\\"b64\\"', "ai_edge_litert", "ImageClassifier", loaded.path):
        assert needle in card, needle
    assert card.count("| ok |") == 6


def test_format_and_quantize_combinations_name_the_allowed_values(tiny, capsys):
    loaded, root = tiny
    assert ex.export_plan("all", calibration_data=False) == [
        ("keras", None), ("savedmodel", None), ("tflite", None), ("tflite", "fp16")]
    assert ex.export_plan("all", calibration_data=True)[-1] == ("tflite", "int8")
    with pytest.raises(ConfigError, match=r"--quantize.*\['fp16', 'int8'\].*"
                       r"format='all', quantize='int8'"):
        ex.export_plan("all", "int8")
    for argv, needle in ((["--format", "all", "--quantize", "fp16"], "format='all'"),
                         (["--format", "savedmodel", "--quantize", "int8"], "--quantize"),
                         (["--format", "tflite", "--quantize", "int8"], "--data")):
        capsys.readouterr()
        assert cli.main(["export", loaded.path, "--out", str(root / "bad"), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own choice check
        cli.main(["export", loaded.path, "--out", str(root / "bad"), "--format", "onnx"])
    assert exit_info.value.code == 2
    assert "--format: invalid choice: 'onnx' (choose from 'keras', 'savedmodel', " \
        "'tflite', 'all')" in capsys.readouterr().err


def test_evaluate_and_predict_run_an_exported_tflite_file(tiny, capsys):
    loaded, root = tiny
    path = ex.export_model(loaded, "tflite", str(root / "runnable"))
    folder = make_image_folder(root / "eval_images", classes=NAMES, per_class=2, size=32)
    files = sorted(os.path.join(folder, n, f) for n in NAMES
                   for f in os.listdir(os.path.join(folder, n)))
    answers = []
    for i, model in enumerate((loaded.path, path)):
        capsys.readouterr()
        assert cli.main(["predict", model, *files, "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        answers.append(np.array([[s["probability"] for s in r["scores"]] for r in rows]))
        out = root / f"eval_{i}"
        assert cli.main(["evaluate", model, "--data", folder, "--out", str(out)]) == 0
        answers.append(json.load(open(out / "evaluation.json"))["nll"])
    np.testing.assert_allclose(answers[2], answers[0], atol=1e-5)
    assert answers[3] == pytest.approx(answers[1], abs=1e-5)
    capsys.readouterr()
    assert cli.main(["predict", path, *files[:1], "--tta"]) == 2
    assert "--tta needs a Keras model" in capsys.readouterr().err


def test_check_scores_the_val_split_the_run_held_out(tmp_path):
    # config.json holds the nested tree `train` writes: its data.val_split (not a
    # default 0.2) decides which images --check and int8 calibration see.
    from transferkit.core.rundir import RunDir
    from transferkit.evaluation.evaluate import eval_data
    from transferkit.training.recipe import RecipeConfig

    model = build_model("tiny_test", 2, weights=None, input_shape=32)
    path = save_model(model, str(tmp_path / "run" / "model.keras"),
                      metadata={"class_names": ["blue", "red"], "image_size": 32})
    recipe = RecipeConfig.from_keys(val_split=0.5, seed=3, backbone="tiny_test")
    RunDir(str(tmp_path / "run")).write_config(recipe.to_dict())
    loaded = load_run(path)
    assert (loaded.config["val_split"], loaded.config["seed"]) == (0.5, 3)
    assert loaded.config["backbone"] == "tiny_test"
    folder = make_image_folder(tmp_path / "images", per_class=4, size=32)
    assert len(eval_data(loaded, folder, split="val").files) == 4
    assert len(ex.representative_images(loaded, folder)) == 4
