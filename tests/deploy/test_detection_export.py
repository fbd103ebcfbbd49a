"""A detector's exports: the .tflite computes MediaPipe ObjectDetector's four outputs in
its graph (builtin ops only; int8 keeps the post-processing float), predict and evaluate
read a .tflite's own detections, the SavedModel's bytes signature returns predict's
detections, and `export --check` pairs detections.

The detector is untrained with its class and box predictors drawn at random (so
scores spread over 0..1 and boxes vary with the image): every comparison here is
between artifacts of one model, and the random head gives each image its own set of
detections to compare. tests/deploy/test_mediapipe.py runs trained detectors.
"""

import contextlib
import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from tensorflow.lite.python import schema_py_generated as model_fb

from conftest import DETECTION_CLASSES, make_detection_folder
from transferkit import cli
from transferkit import deploy as ex
from transferkit.data.files import image_dataset
from transferkit.deploy.model_card import model_card
from transferkit.evaluation.evaluate import eval_data, load_run, predict_outputs
from transferkit.models.detection import build_detector, feature_grid
from transferkit.models.saving import save_model
from transferkit.tasks import Detection
from transferkit.tasks.detection import PREDICTORS
from transferkit.tasks.coco import coco_eval
from transferkit.tasks.outputs import DETECTION_OUTPUTS

SIZE = 48
N = Detection().config.max_detections


def _scrambled(images, share=0.02, seed=0):
    """An untrained detector whose class and box predictors are random, the class
    bias set so that about `share` of the locations of `images` score above the score
    threshold: a few detections per image, scores spread over 0..1, boxes of a few
    cells."""
    keras.utils.set_random_seed(seed)
    model = build_detector("tiny_test", len(DETECTION_CLASSES), weights=None,
                           input_shape=SIZE, width=16)
    rng = np.random.default_rng(seed)
    head = model.get_layer("head")
    for name, scale in (("head_classes", 3.0), ("head_boxes", 0.2)):
        layer = head.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([rng.normal(0, scale, kernel.shape).astype("float32"),
                           np.zeros_like(bias)])
    scores = model.predict(images, verbose=0)[..., :-4].max(axis=-1)
    logits = np.log(scores) - np.log1p(-scores)
    threshold = Detection().config.score_threshold
    layer = head.get_layer("head_classes")
    kernel, bias = layer.get_weights()
    offset = np.log(threshold / (1 - threshold)) - np.quantile(logits, 1 - share)
    layer.set_weights([kernel, bias + offset.astype("float32")])
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(LoadedModel, data source, {name: artifact path}, images [B, SIZE, SIZE, 3])."""
    root = tmp_path_factory.mktemp("detector")
    data = make_detection_folder(root / "data", count=10, size=SIZE, seed=3)
    files = sorted(os.path.join(root, "data", "images", f) for f in
                   os.listdir(os.path.join(root, "data", "images")))
    dataset, _ = image_dataset(files, (SIZE, SIZE))
    images = np.concatenate([batch.numpy() for batch, _ in dataset])
    path = save_model(_scrambled(images), str(root / "model.keras"), metadata={
        "class_names": list(DETECTION_CLASSES), "image_size": SIZE, "task": "detection",
        "task_settings": Detection().settings()})
    loaded = load_run(path)
    out = str(root / "exports")
    paths = {"savedmodel": ex.export_model(loaded, "savedmodel", out),
             "fp32": ex.export_model(loaded, "tflite", out)}
    return loaded, data, paths, images


def _ops(path):
    """(builtin operator names, custom op codes) of a .tflite file."""
    model = model_fb.ModelT.InitFromPackedBuf(bytearray(open(path, "rb").read()), 0)
    names = {v: k for k, v in vars(model_fb.BuiltinOperator).items() if not k.startswith("_")}
    return ({names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in model.operatorCodes},
            [c.customCode for c in model.operatorCodes if c.customCode])


def _same(a, b, atol=1e-5):
    """Two lists of per-image detections (boxes, class ids, scores) are the same."""
    assert len(a) == len(b)
    for (boxes, ids, scores), (boxes2, ids2, scores2) in zip(a, b):
        np.testing.assert_array_equal(ids, ids2)
        np.testing.assert_allclose(boxes, boxes2, atol=atol)
        np.testing.assert_allclose(scores, scores2, atol=atol)


def _check_outputs_and_ops(path):
    """MediaPipe's four outputs in its order, shapes and type (locations, categories,
    scores, count), batch 1, builtin ops only (no Flex, no custom op); the op names."""
    interpreter = ex.tflite_interpreter(path)
    details = interpreter.get_output_details()
    assert [list(d["shape"]) for d in details] == [[1, N, 4], [1, N], [1, N], [1]]
    assert {d["dtype"] for d in details} == {np.float32}
    runner = interpreter.get_signature_runner()
    by_name = {n: d["index"] for n, d in runner.get_output_details().items()}
    assert [by_name[n] for n in DETECTION_OUTPUTS] == [d["index"] for d in details]
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, SIZE, SIZE, 3]
    ops, custom = _ops(path)
    assert custom == [] and "NON_MAX_SUPPRESSION_V5" in ops, (path, ops, custom)
    assert not any("FLEX" in op or op == "CUSTOM" for op in ops)
    return ops


def test_a_detectors_tflite_has_mediapipes_four_outputs_in_builtin_ops(exported):
    _, _, paths, _ = exported
    _check_outputs_and_ops(paths["fp32"])


@pytest.mark.slow
def test_quantized_files_keep_the_post_processing_float(exported, tmp_path):
    """fp16 and int8 files have the same four outputs; int8 runs the network in int8
    and the class and box predictors (on each of the pyramid's levels) and the
    post-processing in float, so class ids and counts come out as whole numbers (int8
    would round a category to 0.996, which MediaPipe reads as class 0)."""
    loaded, data, _, images = exported
    fp16 = ex.export_model(loaded, "tflite", str(tmp_path), quantize="fp16")
    int8 = ex.export_model(loaded, "tflite", str(tmp_path), quantize="int8",
                           representative=ex.representative_images(loaded, data))
    for path in (fp16, int8):
        _check_outputs_and_ops(path)
    reference = loaded.model.predict(images, verbose=0)
    assert loaded.task.agreement(reference, ex.load_predictor(fp16)(images), 0.01) >= 0.9
    model = model_fb.ModelT.InitFromPackedBuf(bytearray(open(int8, "rb").read()), 0)
    graph = model.subgraphs[0]
    codes = {v: k for k, v in vars(model_fb.BuiltinOperator).items() if not k.startswith("_")}
    kinds = {}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kinds.setdefault(codes[max(code.builtinCode, code.deprecatedBuiltinCode)], []).append(
            graph.tensors[op.inputs[0]].type)
    levels = len(feature_grid("tiny_test", loaded.input).levels)
    assert kinds["CONV_2D"].count(model_fb.TensorType.FLOAT32) == len(PREDICTORS) * levels
    assert kinds["CONV_2D"].count(model_fb.TensorType.INT8) > 0
    assert set(kinds["NON_MAX_SUPPRESSION_V5"]) == {model_fb.TensorType.FLOAT32}
    head = {layer.name for layer in loaded.model.get_layer("head").layers}
    assert set(PREDICTORS) <= head  # the names an int8 file keeps float are the head's
    found = ex.load_predictor(int8).detections(images)
    for key in ("category", "number_of_detections"):
        np.testing.assert_array_equal(found[key], np.rint(found[key]))
    assert found["number_of_detections"].sum() > 0
    rows = ex.check_parity(loaded, [int8], eval_data(loaded, data, split="all"))
    assert rows[1]["format"] == "tflite int8" and 0.0 <= rows[1]["agreement"] <= 1.0


def test_predict_and_evaluate_read_the_files_own_detections(exported):
    loaded, data, paths, images = exported
    task = loaded.task
    reference = task.detections(loaded.model.predict(images, verbose=0))
    assert sum(len(ids) for _, ids, _ in reference) >= 10  # something to compare
    predictor = ex.load_predictor(paths["fp32"])
    got = task.detections(predictor(images))
    _same(got, reference)
    # The file's four outputs as they are: the first `count` rows hold them.
    raw = predictor.detections(images)
    for row, (boxes, ids, _) in enumerate(got):
        n = int(raw["number_of_detections"][row])
        assert n == len(ids)
        np.testing.assert_array_equal(raw["category"][row, :n], ids)
        np.testing.assert_allclose(raw["location"][row, :n], boxes, atol=1e-6)
    # Evaluate scores a file by the detections it reports: the source model's COCO
    # mAP over its detections at the score threshold, exactly.
    tflite = load_run(paths["fp32"])
    assert tflite.task.settings() == task.settings()
    split = eval_data(tflite, data)
    outputs, labels = predict_outputs(tflite.model, split.dataset)
    source, _ = predict_outputs(loaded.model, split.dataset)
    objects = task.objects(labels)
    want = coco_eval(task.detections(source), objects, len(DETECTION_CLASSES))
    assert task.score(outputs, labels)["map"] == pytest.approx(want["map"], abs=1e-6)
    # `predict --json` on the file: the run's boxes, classes and scores.
    files = list(split.files[:6])
    rows = {model: _predict(model, files) for model in (loaded.path, paths["fp32"])}
    assert sum(len(row["detections"]) for row in rows[loaded.path]) > 0
    for a, b in zip(rows[loaded.path], rows[paths["fp32"]]):
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        np.testing.assert_allclose([d["box"] for d in a["detections"]],
                                   [d["box"] for d in b["detections"]], atol=1e-3)


def test_the_bytes_signature_returns_predicts_detections(exported, tmp_path):
    """JPEG and PNG files of three sizes other than the model's (upright: a client's
    decoder applies no EXIF rotation)."""
    loaded, _, paths, _ = exported
    make_detection_folder(tmp_path / "photos", count=8, size=64, seed=11)
    files = []
    for i in range(8):
        image = ImageOps.exif_transpose(Image.open(tmp_path / "photos" / "images" /
                                                   f"{i:03d}.png")).convert("RGB")
        files.append(str(tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}"))
        image.save(files[-1], quality=95)
    saved = tf.saved_model.load(paths["savedmodel"])
    out = {k: v.numpy() for k, v in saved.signatures["serving_default"](
        image_bytes=tf.constant([open(f, "rb").read() for f in files])).items()}
    assert set(out) == {"boxes", "classes", "scores", "count", "class_names"}
    assert out["boxes"].shape == (len(files), N, 4)
    rows = _predict(loaded.path, files)
    assert sum(out["count"]) >= 5  # detections to compare
    for i, row in enumerate(rows):
        n = int(out["count"][i])
        assert len(row["detections"]) == n
        assert [d["class"] for d in row["detections"]] == \
            out["class_names"][i, :n].astype(str).tolist()
        np.testing.assert_allclose([d["score"] for d in row["detections"]],
                                   out["scores"][i, :n], atol=1e-5)
        np.testing.assert_allclose(np.reshape([d["box_normalized"] for d in row["detections"]],
                                              (-1, 4)), out["boxes"][i, :n], atol=1e-5)
        assert all(name == b"" for name in out["class_names"][i, n:])


def _predict(model, files):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["predict", model, *files, "--json"]) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_export_check_pairs_detections_and_the_card_says_how_to_run_them(exported):
    loaded, data, paths, _ = exported
    artifacts = [paths[k] for k in ("savedmodel", "fp32")]
    rows = ex.check_parity(loaded, artifacts, eval_data(loaded, data, split="all"))
    table = ex.format_parity(rows, 0.01, loaded.task)
    assert [r["format"] for r in rows] == ["keras", "savedmodel", "tflite fp32"]
    for row in rows:  # the same detections
        assert row["ok"] and row["agreement"] == 1.0 and row["max_abs_diff"] < 1e-4
        assert row["map"] == pytest.approx(rows[0]["map"], abs=1e-6)
    assert "model.tflite" in table and "saved_model" in table
    card = model_card(loaded, artifacts, rows=rows, tolerance=0.01)
    for words in ("vision.ObjectDetectorOptions", "detector.detect(",
                  "`number_of_detections` [1]", "`boxes` [None, 100, 4]",
                  "`count` [None]"):
        assert words in card, words


def test_parity_pairs_detections_by_class_box_and_score():
    """Hand-made outputs: one location per detection (`detections_as_outputs`'s
    layout), the artifact's boxes moved, classes changed and scores shifted."""
    task = Detection()
    reference = np.zeros((2, 4, 3 + 4), np.float32)
    reference[0, 0, [0, 3, 4, 5, 6]] = [0.9, 0.1, 0.1, 0.5, 0.5]
    reference[0, 1, [1, 3, 4, 5, 6]] = [0.8, 0.6, 0.6, 0.9, 0.9]
    reference[1, 0, [2, 3, 4, 5, 6]] = [0.7, 0.2, 0.2, 0.4, 0.6]
    labels = np.full((2, task.max_objects, 5), -1.0, np.float32)
    labels[0, 0], labels[0, 1] = [0, 0.1, 0.1, 0.5, 0.5], [1, 0.6, 0.6, 0.9, 0.9]
    labels[1, 0] = [2, 0.2, 0.2, 0.4, 0.6]
    same = task.parity(reference, reference.copy(), labels)
    assert same["ok"] and same["agreement"] == 1.0 and same["max_abs_diff"] == 0.0
    assert same["map"] == pytest.approx(1.0)
    moved = reference.copy()
    moved[0, 0, 5] = 0.45  # IoU 0.875 with the original box: no longer a pair
    moved[0, 1, 1] = 0.005  # class 1 now scores under class 0's...
    moved[0, 1, 0] = 0.8  # ...so it is a class-0 detection: not a pair either
    moved[1, 0, 2] = 0.75  # the score moved by 0.05: a pair by box and class only
    changed = task.parity(reference, moved, labels, tolerance=0.01)
    # No detection of the 3 + 3 pairs: agreement 0 of 6 - 0.
    assert changed["agreement"] == 0.0 and not changed["ok"]
    assert changed["max_abs_diff"] == pytest.approx(0.05, abs=1e-6)
    assert task.parity(reference, moved, labels, tolerance=0.1)["agreement"] == \
        pytest.approx(1 / 5)  # the score pair counts: 1 of (3 + 3 - 1)
