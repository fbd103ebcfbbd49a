"""Detection: every object's class and box (task="detection"), scored and served
through the task's one post-processing contract."""

import contextlib
import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import DETECTION_CLASSES, make_detection_folder
from transferkit import cli
from transferkit.core.errors import ConfigError, DataError
from transferkit.core.task_registry import get_task, task_for_model
from transferkit.data.load import load_data
from transferkit.models.builder import ModelConfig
from transferkit.models.detection import Grid, encode
from transferkit.training.cache import FeatureStore, split_features
from transferkit.training.recipe import RecipeConfig, load_run_data

TASK = get_task("detection")
GRID = Grid((32, 32), ((4, 4, 8),))


def _cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue()


def _labels(*images, classes=2, grid=GRID):
    """Encoded labels [N, 100 + L, C + 4] of per-image object lists."""
    rows = np.zeros((len(images), TASK.max_objects, 5), np.float32)
    rows[:, :, 0] = -1
    for i, objects in enumerate(images):
        for k, obj in enumerate(objects):
            rows[i, k] = obj
    return np.stack([encode(r, grid, classes).numpy() for r in rows])


def _outputs(*images, classes=2, locations=GRID.size):
    """Dense outputs [N, L, C + 4]: each image's (class, score, box) detections at its
    first locations, the rest background."""
    out = np.zeros((len(images), locations, classes + 4), np.float32)
    out[..., classes:] = [0.0, 0.0, 0.01, 0.01]
    for i, found in enumerate(images):
        for k, (cls, score, box) in enumerate(found):
            out[i, k, cls] = score
            out[i, k, classes:] = box
    return out


# --- scoring -----------------------------------------------------------------------------

A, B = (0.1, 0.1, 0.4, 0.4), (0.5, 0.5, 0.9, 0.8)


def test_score_is_cocos_map_and_ap50_on_hand_made_detections():
    labels = _labels([(0, *A)], [(1, *B)])
    perfect = _outputs([(0, 0.9, A)], [(1, 0.8, B)])
    report = TASK.score(perfect, labels, ("a", "b"))
    assert report["map"] == pytest.approx(1.0) and report["ap50"] == pytest.approx(1.0)
    assert report["precision"] == 1.0 and report["recall"] == 1.0
    assert report["num_objects"] == 2 and report["per_class"]["b"]["support"] == 1
    # One object found, one missed, one false positive elsewhere (scored lower): class
    # a's AP is 1 (all it said is right), b's 0; COCO's mean over classes: 0.5.
    half = _outputs([(0, 0.9, A)], [(0, 0.7, B)])
    report = TASK.score(half, labels, ("a", "b"))
    assert report["per_class"]["a"]["ap"] == pytest.approx(1.0)
    assert report["per_class"]["b"]["ap"] == 0.0
    assert report["map"] == pytest.approx(0.5) and report["ap50"] == pytest.approx(0.5)
    assert report["precision"] == 0.5 and report["recall"] == 0.5
    # A box at IoU 0.6 counts at the IoU thresholds .5 and .55 of COCO's ten.
    shifted = (0.1, 0.1, 0.4, 0.4 * 0.6 / 1 + 0.1 * 0.4)  # height 0.18 of 0.3: IoU 0.6
    report = TASK.score(_outputs([(0, 0.9, shifted)], [(1, 0.8, B)]), labels, ("a", "b"))
    assert report["per_class"]["a"]["ap50"] == pytest.approx(1.0)
    assert report["per_class"]["a"]["ap"] == pytest.approx(0.2)  # 2 of 10 thresholds
    curve = report["curves"]["precision-recall (IoU 0.5)"]
    assert len(curve["x"]) == 101 and set(curve["series"]) == {"a", "b"}
    # A background image with nothing predicted: nothing to score, no NaN.
    empty = TASK.score(_outputs([]), _labels([]), ("a", "b"))
    assert empty["map"] == 0.0 and empty["num_objects"] == 0


def test_example_losses_count_misses_and_false_detections():
    labels = _labels([(0, *A)], [(1, *B)], [])
    outputs = _outputs([(0, 0.9, A)], [(0, 0.9, B)], [(1, 0.6, A)])
    np.testing.assert_array_equal(TASK.example_losses(outputs, labels), [0, 2, 1])
    assert TASK.agreement(outputs, outputs, 0.01) == 1.0
    assert TASK.agreement(outputs, _outputs([(0, 0.9, A)], [], []), 0.01) == \
        pytest.approx(1 / 3)


def test_describe_file_gives_each_box_in_the_files_own_pixels(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (80, 30)).save(path)
    row = _outputs([(1, 0.8, (0.25, 0.1, 0.75, 0.9)), (0, 0.2, A)])[0]
    described = TASK.describe_file(row, ("a", "b"), 3, str(path))
    assert described["label"] == ["b"]  # 0.2 is under the score threshold
    found = described["detections"]
    assert len(found) == 1 and found[0]["class"] == "b"
    np.testing.assert_allclose(found[0]["box"], [20, 3, 60, 27])
    assert "1 object(s): b 0.80" in TASK.prediction_line({"detections": found})


def test_serving_outputs_are_the_postprocess_contract_with_class_names():
    outputs = tf.constant(_outputs([(1, 0.8, B), (0, 0.9, A)], []))
    served = TASK.serving_outputs(outputs, ("a", "b"))
    assert set(served) == {"boxes", "classes", "scores", "count", "class_names"}
    assert list(served["count"].numpy()) == [2, 0]
    assert served["boxes"].shape == (2, 100, 4)
    assert [n.decode() for n in served["class_names"].numpy()[0, :3]] == ["a", "b", ""]


# --- labels ------------------------------------------------------------------------------

def test_arrays_and_their_checks(tmp_path):
    x = np.zeros((2, 32, 32, 3), np.uint8)
    y = np.array([[[1, 0.1, 0.1, 0.5, 0.5], [-1, 0, 0, 0, 0]],
                  [[0, 0.2, 0.3, 0.4, 0.9], [2, 0.5, 0.5, 0.6, 0.6]]], np.float32)
    names, strata, rows = TASK.array_labels(x, y)
    assert names == ("0", "1", "2") and strata == ["1", "0"]
    assert rows.shape == (2, 100, 5) and (rows[:, 2:, 0] == -1).all()
    with pytest.raises(DataError, match=r"\[N, objects, 5\]"):
        TASK.array_labels(x, y[:, :, :4])
    with pytest.raises(DataError, match="outside"):
        TASK.encode(y, ("a", "b"))


def test_unbound_labels_hold_the_objects_and_bound_ones_the_grid_too(tmp_path):
    source = make_detection_folder(tmp_path / "d", count=6, size=32)
    plain = load_data(source, image_size=32, task="detection", val_split=0.0,
                      batch_size=6, verbose=False)
    _, y = next(iter(plain.train))
    assert y.shape == (6, 100, len(DETECTION_CLASSES) + 4)
    recipe = RecipeConfig.from_keys(data=str(source), task="detection",
                                    backbone="tiny_test", image_size=32, val_split=0.0,
                                    batch_size=6)
    bound = load_run_data(recipe, verbose=False)
    _, y = next(iter(bound.train))
    grid = recipe.task_config().grid
    assert grid.levels == ((16, 16, 2), (8, 8, 4))
    assert y.shape == (6, 100 + grid.size, len(DETECTION_CLASSES) + 4)
    # The object rows are the same either way (what scoring reads).
    # (The two pipelines shuffle the images apart: compare them as sets of images.)
    def images(rows):
        return sorted(tuple(np.sort(r)) for r in rows[:, :100, 0])

    assert images(y.numpy()) == images(next(iter(plain.train))[1].numpy())


def test_cached_views_keep_the_maps_and_each_views_moved_boxes(tmp_path):
    """Phase 1's cache re-reads the files with the task's own augmentation: an
    augmented view's targets are its own moved boxes, not the clean view's."""
    source = make_detection_folder(tmp_path / "d", count=6, size=32)
    recipe = RecipeConfig.from_keys(data=str(source), task="detection",
                                    backbone="tiny_test", weights="none", image_size=32,
                                    val_split=0.0, batch_size=6, augment="light")
    data = load_run_data(recipe, verbose=False)
    model = recipe.task_config().build_model(recipe.model, data.num_classes)
    from transferkit.data.augment import augment_config

    train, _ = split_features(model, data, views=2, augment=augment_config("light"),
                              store=FeatureStore(), verbose=0)
    assert train.x.shape[:2] == (3, 6)
    assert train.y.shape == (3, 6, 100 + model.output_shape[1], 7)
    clean, moved = train.y[0, :, :100, 1:5], train.y[1:, :, :100, 1:5]
    assert not all(np.allclose(clean, view) for view in moved)
    np.testing.assert_array_equal(train.y[0, :, :100, :5], data.train_labels)


# --- refusals -----------------------------------------------------------------------------

def test_tta_and_temperature_and_class_weights_are_refused_by_the_task():
    with pytest.raises(ConfigError, match="no TTA"):
        TASK.check_tta("flip")
    with pytest.raises(ConfigError, match="Temperature calibration"):
        TASK.check_calibratable()
    with pytest.raises(DataError, match="class_weights"):
        TASK.class_weight(np.zeros((2, 100, 5)))
    assert TASK.novelty_ids(np.zeros((2, 100, 5))) is None and not TASK.adds_classes
    with pytest.raises(ConfigError, match="needs an output width"):
        TASK.build_model(ModelConfig(backbone="tiny_test", weights="none"), 4)


# --- commands on a tiny run ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    source = make_detection_folder(root / "data", count=16, size=40, seed=3)
    code, printed = _cli("train", "--data", source, "--task", "detection",
                         "--backbone", "tiny_test", "--weights", "none", "--image-size", 32,
                         "--batch-size", 8, "--head-epochs", 1, "--finetune-epochs", 1,
                         "--score-threshold", 0.0, "--out", root / "run")
    return code, printed, root, source


def test_train_evaluate_predict_and_export_on_a_tiny_run(tiny_run):
    code, printed, root, source = tiny_run
    assert code == 0, printed
    assert "phase 1 on cached backbone features" in printed
    assert "phase 2 on cached activations" in printed
    assert "map=" in printed and "ap50=" in printed
    history = json.loads((root / "run" / "history.json").read_text())
    assert {"loss", "box_iou", "val_box_iou"} <= set(history[-1])
    assert "Precision-recall" in (root / "run" / "report.html").read_text()
    meta = json.loads((root / "run" / "config.json").read_text())
    assert meta["detection"]["score_threshold"] == 0.0

    code, printed = _cli("evaluate", root / "run", "--data", source, "--out", root / "ev")
    assert code == 0 and "map=" in printed
    report = json.loads((root / "ev" / "evaluation.json").read_text())
    assert {"map", "ap50", "per_class", "curves"} <= set(report)
    assert (root / "ev" / "report" / "worst.png").is_file()

    image = sorted((root / "data" / "images").glob("*.png"))[1]
    code, printed = _cli("predict", root / "run", image, "--json")
    row = json.loads(printed.strip().splitlines()[-1])
    model = keras.saving.load_model(root / "run" / "model.keras")
    width, height = Image.open(image).size
    from transferkit.data.pipeline import decode_image

    x = decode_image(str(image), (32, 32)).numpy()
    found = get_task("detection").with_settings({"score_threshold": 0.0,
                                                 "max_detections": 100, "nms_iou": 0.5}) \
        .detections(model.predict(x[None], verbose=0))[0]
    assert len(row["detections"]) == len(found[0]) > 0
    np.testing.assert_allclose([d["box"] for d in row["detections"]],
                               found[0] * [width, height, width, height], atol=0.05)
    code, printed = _cli("predict", root / "run", image, "--out", root / "pred")
    assert code == 0 and Image.open(next((root / "pred").glob("*_boxes.png"))).size == \
        (width, height)

    # The SavedModel's bytes signature returns predict's detections.
    code, printed = _cli("export", root / "run", "--format", "savedmodel", "--out",
                         root / "exp", "--check", "--data", source)
    assert code == 0, printed
    saved = tf.saved_model.load(str(root / "exp" / "saved_model"))
    served = saved.signatures["serving_default"](image_bytes=tf.constant([image.read_bytes()]))
    assert int(served["count"][0]) == len(found[0])
    np.testing.assert_allclose(served["boxes"][0, :len(found[0])].numpy(), found[0],
                               atol=1e-4)


def test_add_class_and_novelty_refuse_detection(tiny_run, tmp_path):
    _, _, root, source = tiny_run
    code, printed = _cli("add-class", root / "run", "--data", source, "--out",
                         tmp_path / "grown")
    assert code == 2
    code, printed = _cli("evaluate", root / "run", "--data", source, "--unknown-data",
                         root / "data" / "images")
    assert code == 2


def test_scan_names_the_annotation_problems(tmp_path):
    source = make_detection_folder(tmp_path / "d", count=4, size=32)
    with open(source, "a") as handle:
        handle.write("images/001.png,block,30,30,10,10\n")  # inverted
    code, printed = _cli("scan", source, "--task", "detection")
    assert code == 0 and "inverted" in printed


@pytest.mark.parametrize("backbone,size,classes", [("tiny_test", 48, 1),
                                                   ("compact_cnn", 64, 3)])
def test_training_runs_on_other_backbones_sizes_and_class_counts(tmp_path, backbone, size,
                                                                 classes):
    source = make_detection_folder(tmp_path / "d", count=9, size=size)
    names = DETECTION_CLASSES[:classes]
    recipe = RecipeConfig.from_keys(data=str(source), task="detection", backbone=backbone,
                                    weights="none", image_size=size, val_split=0.3,
                                    batch_size=4, head_epochs=1, finetune_epochs=0,
                                    report=False, augment="light")
    from transferkit.app.train import train

    if classes < len(DETECTION_CLASSES):  # keep only the first classes' rows
        lines = open(source).read().splitlines()
        kept = [l for l in lines[1:] if len(l.split(",")) == 1 or l.split(",")[1] in names]
        open(source, "w").write("\n".join(lines[:1] + kept) + "\n")
    result = train(recipe, str(tmp_path / "run"), verbose=0)
    assert result.class_names == names
    assert result.model.output_shape == (None, recipe.task_config().grid.size, classes + 4)
    assert 0.0 <= result.metrics["val"]["map"] <= 1.0
    assert task_for_model(result.model).name == "detection"


@pytest.mark.parametrize("cells,named", [("disc,12,abc,25,32", "'abc'"),
                                         ("disc,12,3", "4 cells"),
                                         ("disc,1,2,nan,6", "'nan'")])
def test_unreadable_box_rows_stop_train_naming_file_line_and_value(tmp_path, capsys,
                                                                   cells, named):
    source = make_detection_folder(tmp_path / "d", count=2, size=32)
    bad = tmp_path / "d" / "bad.csv"
    bad.write_text(f"path,label,xmin,ymin,xmax,ymax\nimages/001.png,{cells}\n")
    code, _ = _cli("train", "--task", "detection", "--data", bad, "--backbone",
                   "tiny_test", "--weights", "none", "--image-size", 32, "--out",
                   tmp_path / "run")
    message = capsys.readouterr().err
    assert code == 2 and f"{bad} line 2" in message and named in message, message
    assert "Traceback" not in message and source.endswith("boxes.csv")


def test_a_boxes_csv_is_named_as_such_by_classification_and_the_pooled_builder(tmp_path):
    source = make_detection_folder(tmp_path / "d", count=3, size=32)
    with pytest.raises(DataError, match="is a boxes CSV .*--task detection"):
        load_data(source, image_size=32, verbose=False)  # multiclass: path,label rows
    from transferkit.models.builder import build_model

    with pytest.raises(ConfigError, match="dense head .*build_detector"):
        build_model("tiny_test", 3, task="detection", weights=None, input_shape=32)
