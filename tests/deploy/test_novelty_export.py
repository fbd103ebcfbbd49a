"""The novelty score beyond the Keras model: the energy candidate (logits recomputed from
the softmax Dense layer), the .tflite's second output and its metadata, and the
report's Novelty section."""

import dataclasses
import io
import json
import os
import re
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy.special import logsumexp

from transferkit.core.task_registry import get_task
from transferkit import deploy as ex
from transferkit.models import novelty as nv
from transferkit.deploy import tflite_metadata as tm
from transferkit.deploy._vendor import metadata_schema_py_generated as meta_fb
from transferkit.data.files import image_dataset
from transferkit.evaluation.evaluate import load_run, predict
from transferkit.deploy.model_card import model_card
from transferkit.evaluation.report import write_eval_report
from transferkit.models.builder import build_model
from transferkit.models.heads import HeadConfig
from transferkit.models.parts import resolve
from transferkit.models.saving import save_model

CLASSES = ["blue", "green", "red"]
SIZE = 32


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _batches(images):
    return tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(LoadedModel without novelty, images, their novelty inputs, fitted arrays)."""
    tmp = tmp_path_factory.mktemp("tiny")
    model = build_model("tiny_test", 3, weights=None, input_shape=SIZE)
    loaded = load_run(save_model(model, str(tmp / "model.keras"),
                                 metadata={"class_names": CLASSES, "image_size": SIZE}))
    images = _images(12)
    features, probs, logits, _ = nv.novelty_inputs(loaded.model, _batches(images),
                                                   loaded.task)
    return loaded, images, (features, probs, logits), nv.fit_arrays(features,
                                                                    np.arange(12) % 3)


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


@pytest.mark.parametrize("units", [(), (8,)])
def test_energy_is_minus_logsumexp_of_the_dense_logits(units):
    model = build_model("tiny_test", 3, weights=None, input_shape=SIZE,
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


@pytest.mark.parametrize("detector", ["mahalanobis", "energy"])
def test_the_tflite_file_returns_the_novelty_score_as_a_second_output(tiny, tmp_path,
                                                                      detector):
    loaded, images, inputs, arrays = tiny
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


def test_a_model_without_novelty_exports_as_before(tiny, tmp_path):
    loaded, images, _, _ = tiny
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


def _metadata_bytes(content):
    from tensorflow.lite.python import schema_py_generated as model_fb

    model = model_fb.Model.GetRootAs(bytearray(content), 0)
    entry, = [model.Metadata(i) for i in range(model.MetadataLength())
              if model.Metadata(i).Name() == b"TFLITE_METADATA"]
    return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()


def test_the_eval_report_has_a_novelty_section(tmp_path):
    rng = np.random.default_rng(0)
    novelty = nv.Novelty("knn", 0.25, 0.05, {"msp": 0.61, "mahalanobis": 0.83, "knn": 0.87},
                         "unknown-data")
    summary = nv.novelty_summary(novelty, rng.uniform(0, 0.3, 50), rng.uniform(0.2, 1, 20))
    task = get_task("multiclass")
    probs = rng.dirichlet([1, 1], size=10)
    report = task.score(probs, np.eye(2)[rng.integers(0, 2, 10)], ["a", "b"])
    page = open(write_eval_report(str(tmp_path / "plain"), report)).read()
    assert "Novelty" not in page
    report["novelty"] = summary
    path = write_eval_report(str(tmp_path / "eval"), report)
    page = open(path).read()
    section = page[page.index("<h2>Novelty</h2>"):]
    assert "<b>knn</b>" in section and "threshold 0.25," in section
    assert f"{summary['rejected']:.1%} of these images" in section
    assert f"AUROC {summary['auroc']:.4f}" in section and "20 unknown images" in section
    for name, value in novelty.auroc.items():
        assert f"<tr><th>{name}</th><td>{value:.4f}</td></tr>" in section
    assert re.search(r"<img src='report/novelty.png'", section)
    assert os.path.getsize(tmp_path / "eval" / "report" / "novelty.png") > 1000
    hist = summary["histogram"]
    assert sum(hist["known"]) == 50 and sum(hist["unknown"]) == 20


def test_an_int8_file_with_novelty_exports_and_runs(tiny, tmp_path):
    """int8 quantizes the novelty's arithmetic too: only that it converts and runs."""
    loaded, images, _, arrays = tiny
    loaded = _with(loaded, arrays, "mahalanobis")
    path = ex.export_model(loaded, "tflite", str(tmp_path), quantize="int8",
                           representative=[image[None] for image in images])
    probs, novelty = _run_tflite(path, images)
    assert probs.shape == (len(images), 3) and novelty.shape == (len(images), 1)
    assert np.all(np.isfinite(novelty))
    names = [t.name for t in tm.read_metadata(open(path, "rb").read())
             .subgraphMetadata[0].outputTensorMetadata]
    assert names == [b"scores", b"novelty"]


def test_the_savedmodel_serves_the_energy_score(tiny, tmp_path):
    loaded, _, _, arrays = tiny
    loaded = _with(loaded, arrays, "energy", threshold=-1.1)
    images = np.round(_images(4, seed=1))  # PNG keeps whole values exactly
    payload = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.astype("uint8")).save(buffer, format="PNG")
        payload.append(buffer.getvalue())
    saved = tf.saved_model.load(ex.export_model(loaded, "savedmodel", str(tmp_path)))
    served = saved.signatures["serving_default"](image_bytes=tf.constant(payload))
    expected = loaded.novelty.score(*nv.novelty_inputs(loaded.model, _batches(images),
                                                       loaded.task)[:3])
    np.testing.assert_allclose(served["novelty"].numpy(), expected, rtol=1e-5)
    assert served["unknown"].numpy().tolist() == (expected > -1.1).tolist()


def test_a_tta_models_file_scores_novelty_on_the_clean_view_as_predict_does(tiny, tmp_path):
    from transferkit.models.tta import with_tta

    loaded, images, _, _ = tiny
    model = with_tta(loaded.model, "flip", task=loaded.task)
    loaded = dataclasses.replace(loaded, model=model, novelty=nv.Novelty(
        "msp", 0.5, 0.05, {}, "synthetic"))
    predictor = ex.load_predictor(ex.export_model(loaded, "tflite", str(tmp_path)))
    np.testing.assert_allclose(predictor(images), model.predict_on_batch(images), atol=1e-5)
    inputs = nv.novelty_inputs(model, _batches(images), loaded.task)[:3]
    np.testing.assert_allclose(predictor.novelty(images), loaded.novelty.score(*inputs),
                               atol=1e-5)
