"""Export to .keras, SavedModel and TFLite keeps the predictions, the class names and
the novelty score (the .tflite's second output, with its threshold in the metadata)."""

import dataclasses
import io
import json
import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import make_image_folder
from transferkit import deploy as ex
from transferkit.data.files import image_dataset, list_images
from transferkit.deploy import tflite_metadata as tm
from transferkit.deploy._vendor import metadata_schema_py_generated as meta_fb
from transferkit.deploy.export import export_model
from transferkit.deploy.model_card import model_card
from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.core.task_registry import get_task
from transferkit.evaluation.evaluate import eval_data, load_run, predict
from transferkit.models import novelty as nv
from transferkit.models.builder import build_model
from transferkit.models.saving import read_metadata, save_model
from transferkit.models.tta import with_tta

CLASSES = ["blue", "green", "red"]
SIZE = 32


@pytest.fixture
def tiny_run(tmp_path):
    model = build_model("tiny_test", 2, weights=None, input_shape=32)
    path = save_model(model, str(tmp_path / "model.keras"),
                      metadata={"class_names": ["blue", "red"], "image_size": 32})
    folder = make_image_folder(tmp_path / "images", per_class=5, size=32)
    return load_run(path), folder


def test_every_format_predicts_like_the_keras_model(tiny_run, tmp_path):
    loaded, folder = tiny_run
    out = str(tmp_path / "out")
    paths = {"keras": ex.export_model(loaded, "keras", out),
             "savedmodel": ex.export_model(loaded, "savedmodel", out),
             "tflite": ex.export_model(loaded, "tflite", out),
             "fp16": ex.export_model(loaded, "tflite", out, quantize="fp16"),
             "int8": ex.export_model(loaded, "tflite", out, quantize="int8",
                                     representative=ex.representative_images(loaded, folder))}
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    reference = loaded.model.predict(x, verbose=0)
    tolerance = {"keras": 1e-6, "savedmodel": 1e-5, "tflite": 1e-5, "fp16": 1e-2,
                 "int8": 5e-2}
    for name, path in paths.items():
        got = ex.load_predictor(path)(x)
        np.testing.assert_allclose(got, reference, atol=tolerance[name], err_msg=name)
    # Class names travel with every artifact.
    assert open(os.path.join(out, "labels.txt")).read() == "blue\nred\n"
    for path in paths.values():
        assert json.load(open(path + ".json"))["class_names"] == ["blue", "red"]
    assert read_metadata(paths["keras"])["class_names"] == ["blue", "red"]
    assert os.path.exists(os.path.join(paths["savedmodel"], "assets", "labels.txt"))
    rows = ex.check_parity(loaded, [paths["savedmodel"], paths["tflite"]],
                           eval_data(loaded, folder, split="val"))
    assert [r["ok"] for r in rows] == [True, True, True]
    assert rows[2]["max_abs_diff"] < 1e-4 and rows[2]["agreement"] == 1.0
    assert "saved_model" in ex.format_parity(rows, 0.01, loaded.task)


def test_parity_failure_names_the_artifact():
    rows = [{"artifact": "source", "accuracy": 0.9, "agreement": 1.0, "ok": True},
            {"artifact": "model_int8.tflite", "accuracy": 0.7, "agreement": 0.8,
             "ok": False}]
    with pytest.raises(TransferkitError,
                       match="model_int8.tflite accuracy 0.7000, agreement 0.800"):
        ex.raise_on_mismatch(rows, 0.01, get_task("multiclass"))


def test_quantize_arguments_are_checked(tiny_run, tmp_path):
    loaded, _ = tiny_run
    with pytest.raises(ConfigError, match="tflite only"):
        ex.export_model(loaded, "keras", str(tmp_path), quantize="fp16")
    with pytest.raises(ConfigError, match="--data"):
        ex.export_model(loaded, "tflite", str(tmp_path), quantize="int8")
    with pytest.raises(ConfigError, match="Did you mean 'tflite'"):
        ex.export_model(loaded, "tflit", str(tmp_path))


def test_a_tta_model_exports_to_tflite(tiny_run, tmp_path):
    import dataclasses

    from transferkit.models.tta import with_tta

    loaded, _ = tiny_run
    loaded = dataclasses.replace(loaded, model=with_tta(loaded.model, "ten_crop"))
    path = ex.export_model(loaded, "tflite", str(tmp_path / "out"), metadata={"tta": "ten_crop"})
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(ex.load_predictor(path)(x), loaded.model.predict(x, verbose=0),
                               atol=1e-5)
    assert json.load(open(path + ".json"))["tta"] == "ten_crop"


# --- the novelty score in the exported files -------------------------------------------

@pytest.fixture(scope="module")
def unscored(tmp_path_factory):
    """(LoadedModel without novelty, images, their novelty inputs, fitted arrays)."""
    tmp = tmp_path_factory.mktemp("tiny")
    model = build_model("tiny_test", 3, weights=None, image_size=SIZE)
    loaded = load_run(save_model(model, str(tmp / "model.keras"),
                                 metadata={"class_names": CLASSES, "image_size": SIZE}))
    images = _images(12)
    features, probs, logits, _ = nv.novelty_inputs(loaded.model, _batches(images),
                                                   loaded.task)
    return loaded, images, (features, probs, logits), nv.fit_arrays(features,
                                                                    np.arange(12) % 3)


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _batches(images):
    return tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(8)


def _with(loaded, arrays, detector, threshold=0.5):
    novelty = nv.Novelty(detector, threshold, 0.05, {detector: 0.9}, "synthetic",
                         {k: arrays[k] for k in nv.NEEDS[detector]})
    return dataclasses.replace(loaded, novelty=novelty)


def _run_tflite(path, images):
    interpreter = ex.tflite_interpreter(path)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                    images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _metadata_bytes(content):
    from tensorflow.lite.python import schema_py_generated as model_fb

    model = model_fb.Model.GetRootAs(bytearray(content), 0)
    entry, = [model.Metadata(i) for i in range(model.MetadataLength())
              if model.Metadata(i).Name() == b"TFLITE_METADATA"]
    return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()


@pytest.mark.parametrize("detector", ["mahalanobis", "energy"])
def test_the_tflite_file_returns_the_novelty_score_as_a_second_output(unscored, tmp_path,
                                                                      detector):
    loaded, images, inputs, arrays = unscored
    loaded = _with(loaded, arrays, detector, threshold=0.123456)
    path = ex.export_model(loaded, "tflite", str(tmp_path))
    probs, novelty = _run_tflite(path, images)
    np.testing.assert_allclose(probs, loaded.model.predict_on_batch(images), atol=1e-5)
    assert novelty.shape == (len(images), 1)
    np.testing.assert_allclose(novelty[:, 0], loaded.novelty.score(*inputs),
                               rtol=1e-4, atol=1e-5)
    # Predictions read the probabilities output, whatever else the file returns;
    # predict on the file reads the novelty output and the threshold beside it.
    np.testing.assert_allclose(ex.load_predictor(path)(images), probs)
    files = []
    for i, image in enumerate(np.round(images[:4])):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image.astype("uint8")).save(files[-1])
    rows = predict(path, files)
    on_files = nv.novelty_inputs(loaded.model, image_dataset(files, SIZE)[0], loaded.task)
    expected = loaded.novelty.score(*on_files[:3])
    np.testing.assert_allclose([r["novelty"] for r in rows], expected, rtol=1e-4, atol=1e-5)
    assert [r["unknown"] for r in rows] == (expected > 0.123456).tolist()
    assert [r["label"] for r in rows] == [CLASSES[i] for i in on_files[1].argmax(1)]
    # The metadata: head 0 the classes, head 1 the novelty with its threshold.
    content = open(path, "rb").read()
    outputs = tm.read_metadata(content).subgraphMetadata[0].outputTensorMetadata
    assert [t.name for t in outputs] == [b"scores", b"novelty"]
    assert b"unknown when above 0.123456" in outputs[1].description
    unit, = outputs[1].processUnits
    assert unit.optionsType == meta_fb.ProcessUnitOptions.ScoreThresholdingOptions
    assert unit.options.globalScoreThreshold == pytest.approx(0.123456)
    assert outputs[0].processUnits is None  # the classes keep every score
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.read(tm.NOVELTY_LABELS_FILE) == b"unknown\n"
    card = model_card(loaded, [path])
    assert "above 0.123456" in card and "second output" in card


def test_a_model_without_novelty_exports_as_before(unscored, tmp_path):
    loaded, images, _, _ = unscored
    path = ex.export_model(loaded, "tflite", str(tmp_path / "new"))
    # The earlier recipe, step by step: Keras's own SavedModel, converted, metadata.
    loaded.model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    with open(path + ".json") as f:
        meta = json.load(f)
    before = tm.export_metadata(ex.tflite_bytes(str(tmp_path / "saved")),
                                loaded.task.tflite_output(CLASSES, 3), meta)
    after = open(path, "rb").read()
    # Byte for byte but for names the converter numbers per trace: same size, the same
    # metadata and files, one output, the same numbers.
    assert len(after) == len(before)
    assert _metadata_bytes(after) == _metadata_bytes(before)
    with zipfile.ZipFile(io.BytesIO(after)) as a, zipfile.ZipFile(io.BytesIO(before)) as b:
        assert {n: a.read(n) for n in a.namelist()} == {n: b.read(n) for n in b.namelist()}
    got = _run_tflite(path, images)
    assert len(got) == 1
    with open(tmp_path / "before.tflite", "wb") as f:
        f.write(before)
    np.testing.assert_array_equal(got[0], _run_tflite(tmp_path / "before.tflite", images)[0])


def test_an_int8_file_with_novelty_exports_and_runs(unscored, tmp_path):
    """int8 quantizes the novelty's arithmetic too: only that it converts and runs."""
    loaded, images, _, arrays = unscored
    loaded = _with(loaded, arrays, "mahalanobis")
    path = ex.export_model(loaded, "tflite", str(tmp_path), quantize="int8",
                           representative=[image[None] for image in images])
    probs, novelty = _run_tflite(path, images)
    assert probs.shape == (len(images), 3) and novelty.shape == (len(images), 1)
    assert np.all(np.isfinite(novelty))
    names = [t.name for t in tm.read_metadata(open(path, "rb").read())
             .subgraphMetadata[0].outputTensorMetadata]
    assert names == [b"scores", b"novelty"]


def test_a_tta_models_file_scores_novelty_on_the_clean_view_as_predict_does(unscored, tmp_path):
    loaded, images, _, _ = unscored
    model = with_tta(loaded.model, "flip", task=loaded.task)
    loaded = dataclasses.replace(loaded, model=model, novelty=nv.Novelty(
        "msp", 0.5, 0.05, {}, "synthetic"))
    predictor = ex.load_predictor(ex.export_model(loaded, "tflite", str(tmp_path)))
    np.testing.assert_allclose(predictor(images), model.predict_on_batch(images), atol=1e-5)
    inputs = nv.novelty_inputs(model, _batches(images), loaded.task)[:3]
    np.testing.assert_allclose(predictor.novelty(images), loaded.novelty.score(*inputs),
                               atol=1e-5)


def test_exports_carry_the_novelty_score(open_world_run, tmp_path):
    loaded = load_run(open_world_run["run"])
    rings = list_images(open_world_run["new"])[:3] + list_images(open_world_run["known"])[:2]
    expected = predict(loaded, rings)
    keras_file = export_model(loaded, "keras", str(tmp_path / "k"))
    assert load_run(keras_file).novelty.to_json() == loaded.novelty.to_json()
    saved = tf.saved_model.load(export_model(loaded, "savedmodel", str(tmp_path / "s")))
    payload = tf.constant([open(p, "rb").read() for p in rings])
    served = saved.signatures["serving_default"](image_bytes=payload)
    np.testing.assert_allclose(served["novelty"].numpy(), [r["novelty"] for r in expected],
                               rtol=1e-3, atol=1e-4)
    assert served["unknown"].numpy().tolist() == [r["unknown"] for r in expected]
