"""Localization: one object's class and box per image (task="localization"), on the
dense detection head: the image's prediction is its best location."""

import contextlib
import csv
import importlib.util
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import tiny_recipe
from transferkit import cli
from transferkit.core.errors import ConfigError, DataError
from transferkit.core.task_registry import get_task, task_for_model
from transferkit.data.augment import AugmentConfig
from transferkit.data.load import load_data
from transferkit.data.pipeline import decode_image
from transferkit.models.builder import ModelConfig
from transferkit.models.detection import DetectionLoss, Grid, encode
from transferkit.models.tta import with_tta

ROOT = Path(__file__).resolve().parents[2]
TASK = get_task("localization")


def _iou(a, b):
    """IoU of two xyxy boxes, computed independently of keras."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def _image(path, size, box=None):
    """A grey image of `size` (w, h) with a white rectangle over `box` (pixels)."""
    pixels = np.full((size[1], size[0], 3), 60, np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = 255
    Image.fromarray(pixels).save(path)
    return path


def _generate(out, count):
    spec = importlib.util.spec_from_file_location(
        "make_loc", ROOT / "recipes" / "make_localization_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_sample(out, count=count)


def _cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue()


# --- data: CSV, VOC, checks ------------------------------------------------------------

def test_csv_boxes_are_normalised_by_each_images_own_size_and_checked(tmp_path):
    (tmp_path / "img").mkdir()
    _image(tmp_path / "img" / "a.png", (64, 40), (8, 4, 40, 20))
    _image(tmp_path / "img" / "b.png", (40, 64))
    _image(tmp_path / "img" / "c.png", (48, 48))
    _image(tmp_path / "img" / "d.png", (48, 48))
    _image(tmp_path / "img" / "e.png", (48, 48))
    rows = [["path", "label", "xmin", "ymin", "xmax", "ymax"],
            ["img/a.png", "sq", 8, 4, 40, 20],        # line 2: fine
            ["img/b.png", "sq", 30, 50, 50, 70],      # line 3: partly outside -> clipped
            ["img/c.png", "sq", 20, 10, 10, 30],      # line 4: inverted
            ["img/d.png", "sq", 60, 60, 70, 70],      # line 5: wholly outside
            ["img/e.png", "sq", 1, 1, 9, 9],          # lines 6-7: two objects
            ["img/e.png", "sq", 20, 20, 30, 30]]
    with open(tmp_path / "boxes.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    report = TASK.scan_source(str(tmp_path / "boxes.csv"))
    reasons = {p.kind: (p.path, p.reason) for p in report.problems}
    assert any(p.path.endswith("c.png") and "line 4" in p.reason and "inverted" in p.reason
               for p in report.problems)
    assert any("line 5" in p.reason and "outside" in p.reason for p in report.problems)
    assert "line 3" in reasons["box_clipped"][1]
    several = reasons["several_objects"]
    assert several[0].endswith("e.png") and "line 6" in several[1] and "line 7" in several[1]
    assert "--task detection" in several[1]  # where several objects per image go
    paths, labels, _, _ = TASK.read_files(str(tmp_path / "boxes.csv"))
    kept = {Path(p).name: lab.box for p, lab in zip(paths, labels)}
    assert set(kept) == {"a.png", "b.png"}
    np.testing.assert_allclose(kept["a.png"], (8 / 64, 4 / 40, 40 / 64, 20 / 40))
    np.testing.assert_allclose(kept["b.png"], (30 / 40, 50 / 64, 1.0, 1.0))
    rows = TASK.source_labels(labels, ("sq",))
    assert rows.shape == (2, 1, 5) and (rows[:, 0, 0] == 0).all()
    np.testing.assert_allclose(rows[0, 0, 1:], (8 / 64, 4 / 40, 40 / 64, 20 / 40))
    code, printed = _cli("scan", tmp_path / "boxes.csv", "--task", "localization")
    assert code == 0 and "line 6" in printed and "2 usable" in printed


def test_voc_folder_is_read_with_its_one_based_corners(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    _image(tmp_path / "JPEGImages" / "x.png", (50, 30))
    xml = ("<annotation><filename>x.png</filename><object><name>cat</name><bndbox>"
           "<xmin>11</xmin><ymin>6</ymin><xmax>30</xmax><ymax>20</ymax></bndbox>"
           "</object></annotation>")
    (tmp_path / "Annotations" / "x.xml").write_text(xml)
    paths, labels, problems, _ = TASK.read_files(str(tmp_path))
    assert [Path(p).name for p in paths] == ["x.png"] and not problems
    assert labels[0].label == "cat"
    np.testing.assert_allclose(labels[0].box, (10 / 50, 5 / 30, 30 / 50, 20 / 30))


# --- augmentation ------------------------------------------------------------------------

def test_crops_and_flips_move_the_box_with_the_image_and_colour_does_not():
    image = np.full((40, 60, 3), 0.0, np.float32)
    image[10:22, 30:50] = 255.0
    label = tf.constant([[1.0, 30 / 60, 10 / 40, 50 / 60, 22 / 40]])  # one object row
    config = AugmentConfig(crop_scale=(0.4, 1.0), flip="horizontal_and_vertical")
    for seed in range(12):
        out, moved = TASK.augment_example(tf.constant(image), label,
                                          tf.constant([seed, 7], tf.int64), config)
        ys, xs = np.nonzero(out.numpy()[..., 0] > 191)
        drawn = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)  # the shape's pixels
        box = moved.numpy()[0, 1:] * [60, 40, 60, 40]
        np.testing.assert_allclose(box, drawn, atol=2.0)
        assert moved.numpy()[0, 0] == 1.0
    colour = AugmentConfig(crop_scale=None, flip=None, brightness=0.3, hue=0.1)
    _, same = TASK.augment_example(tf.constant(image), label,
                                   tf.constant([1, 2], tf.int64), colour)
    np.testing.assert_allclose(same.numpy(), label.numpy(), atol=1e-6)
    with pytest.raises(DataError, match="rotation"):
        TASK.check_augment(AugmentConfig(rotation=0.1))
    with pytest.raises(DataError, match="mixup"):
        TASK.check_augment(AugmentConfig(mixup_alpha=0.2))


# --- loss, metrics, outputs ------------------------------------------------------------

GRID = Grid((32, 32), ((2, 2, 16),))  # 4 locations


def _dense(rows, best=(1, 3, 0)):
    """Dense outputs [N, 4, C + 4] whose best location (`best[i]`) holds row i and
    whose other locations score 0.05 with a box elsewhere."""
    rows = np.asarray(rows, np.float32)
    out = np.zeros((len(rows), GRID.size, rows.shape[1]), np.float32)
    out[..., :-4] = 0.05
    out[..., -4:] = [0.0, 0.0, 0.05, 0.05]
    out[np.arange(len(rows)), best[:len(rows)]] = rows
    return out


def test_score_and_keras_metrics_against_an_independent_computation():
    truth = np.array([[1, 0, .1, .1, .5, .5], [0, 1, .2, .2, .6, .9],
                      [0, 1, .0, .0, .4, .4]], np.float32)
    rows = np.array([[.9, .1, .1, .1, .5, .6], [.3, .7, .3, .3, .6, .9],
                     [.8, .2, .0, .0, .4, .4]], np.float32)
    objects = np.concatenate([truth[:, :2].argmax(axis=1)[:, None], truth[:, 2:]], 1)
    labels = np.stack([encode(o[None], GRID, 2).numpy() for o in objects])
    outputs = _dense(rows)
    ious = [_iou(lab[2:], out[2:]) for lab, out in zip(truth, rows)]
    report = TASK.score(outputs, labels, ("a", "b"))
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["mean_iou"] == pytest.approx(np.mean(ious), abs=1e-5)
    hits = [i >= 0.5 and o[:2].argmax() == y[:2].argmax()
            for i, o, y in zip(ious, rows, truth)]
    assert report["correct_iou50"] == pytest.approx(np.mean(hits))
    assert sum(report["histograms"]["box IoU"]["counts"]) == 3
    for metric in TASK.metrics(6):  # the Keras metrics training reports agree
        metric.update_state(labels, outputs)
        assert float(metric.result()) == pytest.approx(report[metric.name], abs=1e-5)
    # The pooled layout of earlier versions ([N, C + 4] rows) scores the same.
    assert TASK.score(rows, truth, ("a", "b"))["mean_iou"] == \
        pytest.approx(report["mean_iou"])
    assert float(DetectionLoss(box_weight=0.0)(labels, outputs)) > 0
    with pytest.raises(ConfigError, match="Temperature calibration"):
        TASK.fit_temperature(outputs, labels)


def test_model_is_the_dense_detector_and_takes_no_tta():
    recipe_task = TASK.bind(ModelConfig(backbone="tiny_test", weights="none",
                                        image_size=32))
    model = recipe_task.build_model(ModelConfig(backbone="tiny_test", weights="none",
                                                image_size=32), 3 + 4)
    grid = recipe_task.grid
    assert model.output_shape == (None, grid.size, 7)
    assert task_for_model(model).name == "detection"  # without metadata: a detector
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    best = TASK.rows(out)
    assert best.shape == (2, 7) and (TASK.boxes(out)[:, :2] <= TASK.boxes(out)[:, 2:]).all()
    top = out[..., :3].max(axis=-1).argmax(axis=-1)
    np.testing.assert_allclose(best, out[np.arange(2), top])
    with pytest.raises(ConfigError, match="no TTA"):
        with_tta(model, "flip", task=TASK)


def test_describe_file_gives_the_box_in_the_files_own_pixels(tmp_path):
    path = _image(tmp_path / "wide.png", (80, 30))
    row = np.array([0.2, 0.8, 0.25, 0.1, 0.75, 0.9])
    described = TASK.describe_file(row, ("a", "b"), 2, str(path))
    assert described["label"] == "b" and described["scores"][0]["class"] == "b"
    np.testing.assert_allclose(described["box"], [20, 3, 60, 27])


# --- commands on a tiny run ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("loc")
    data = _generate(root / "data", 18)
    code, printed = _cli("train", "--data", data, "--task", "localization",
                         "--backbone", "tiny_test", "--weights", "none", "--image-size", 32,
                         "--batch-size", 6, "--head-epochs", 1, "--finetune-epochs", 1,
                         "--no-report", "--out", root / "run")
    return code, printed, root, data


def test_train_evaluate_predict_and_export_on_a_tiny_run(tiny_run):
    code, printed, root, data = tiny_run
    assert code == 0, printed
    # The two-phase schedule on cached features, then on the boundary cache: the box
    # labels travel with each augmented view's features.
    assert "phase 1 on cached backbone features" in printed
    assert "phase 2 on cached activations" in printed
    history = json.loads((root / "run" / "history.json").read_text())
    assert {"accuracy", "mean_iou", "correct_iou50", "val_mean_iou"} <= set(history[-1])
    assert json.loads((root / "run" / "config.json").read_text())["task"] == "localization"
    code, printed = _cli("evaluate", root / "run", "--data", data, "--out", root / "eval")
    assert code == 0 and "mean_iou=" in printed
    assert (root / "eval" / "report" / "histogram_box_IoU.png").is_file()
    assert "Histogram of box IoU" in (root / "eval" / "report.html").read_text()
    image = data.parent / "images" / "003.jpg"  # a 64x40 image
    assert Image.open(image).size == (64, 40)
    code, printed = _cli("predict", root / "run", image, "--json")
    row = json.loads(printed.strip().splitlines()[-1])
    model = keras.saving.load_model(root / "run" / "model.keras")
    x = decode_image(str(image), (32, 32)).numpy()  # predict's decoder
    out = model.predict(x[None], verbose=0)[0]
    box = out[out[:, :-4].max(axis=1).argmax(), -4:]  # the best location's
    np.testing.assert_allclose(row["box"], np.sort(box.reshape(2, 2), axis=0).ravel()
                               * [64, 40, 64, 40], atol=0.05)
    code, printed = _cli("predict", root / "run", image, "--out", root / "pred")
    assert code == 0 and (root / "pred" / "000_003_box.png").is_file()
    assert Image.open(root / "pred" / "000_003_box.png").size == (64, 40)
    code, printed = _cli("export", root / "run", "--format", "keras", "--out", root / "exp",
                         "--check", "--data", data)
    assert code == 0 and "correct_iou50" in printed


# --- the done-when figures on the shipped sample -------------------------------------

@pytest.mark.slow
def test_transfer_localizes_the_shipped_shapes(tmp_path):
    """`train --task localization` on data/localization: val accuracy >= 0.8 and mean
    box IoU >= 0.5; `predict --json` boxes in each image's own pixels match the CSV at
    mean IoU >= 0.5; `export --check` passes."""
    data = ROOT / "data" / "localization" / "boxes.csv"
    code, printed = _cli(
        "train", "--task", "localization", "--data", data, "--backbone", "compact_cnn",
        "--weights", ROOT / "data" / "source_compact_cnn.keras", "--image-size", 64,
        "--val-split", 0.2, "--augment", "light", "--pooling", "flatten",
        "--head-units", 256, "--head-epochs", 20, "--head-lr", 3e-3,
        "--finetune-epochs", 30, "--finetune-lr", 1e-3, "--unfreeze", "all",
        "--train-batchnorm", "--early-stopping-patience", 0,
        "--backbone-kwargs", "bn_momentum=0.9", "--no-report", "--out", tmp_path / "run")
    assert code == 0, printed
    val = json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]
    assert val["accuracy"] >= 0.8 and val["mean_iou"] >= 0.5, val
    with open(data) as handle:
        rows = list(csv.DictReader(handle))[::4]
    images = [str(data.parent / r["path"]) for r in rows]
    code, printed = _cli("predict", tmp_path / "run", *images, "--json")
    predicted = [json.loads(line) for line in printed.strip().splitlines()]
    ious = [_iou([float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")], p["box"])
            for r, p in zip(rows, predicted)]
    assert np.mean(ious) >= 0.5, np.mean(ious)
    code, printed = _cli("export", tmp_path / "run", "--format", "keras", "--out",
                         tmp_path / "exp", "--check", "--data", data)
    assert code == 0 and "ok" in printed


def test_recipe_resolves_and_builds_tiny(tmp_path):
    from transferkit.training.recipe import build_run_model
    from transferkit.cli.recipes import resolve_recipe

    recipe, _ = resolve_recipe("localization_compact_cnn", [
        "--data", str(tmp_path), "--weights", "none", "--backbone", "tiny_test",
        "--image-size", "32", "--backbone-kwargs", ""])
    assert recipe.task == "localization"
    grid = recipe.task_config().grid
    assert build_run_model(recipe, 3 + 4).output_shape == (None, grid.size, 7)


def test_shipped_sample_regenerates_byte_for_byte(tmp_path):
    shipped = ROOT / "data" / "localization"
    _generate(tmp_path / "again", 240)
    files = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert len(files) == 241  # 240 images and boxes.csv
    for rel in files:
        assert (tmp_path / "again" / rel).read_bytes() == (shipped / rel).read_bytes(), rel
    sizes = {Image.open(shipped / "images" / f"{i:03d}.jpg").size for i in range(9)}
    assert sizes == {(48, 48), (64, 40), (40, 64)}


@pytest.mark.slow  # two tiny trials, ~10 s: over the default run's budget
def test_tune_searches_the_box_loss_weight(tiny_run, tmp_path):
    from transferkit.tuning.space import SearchSpace
    from transferkit.tuning.tuner import tune

    _, _, _, data = tiny_run
    base = tiny_recipe(data, task="localization", batch_size=6, scan=False)
    space = SearchSpace(head_width=None, head_depth=None, dropout=None, head_lr=None,
                        finetune_lr=None, unfreeze_blocks=None, label_smoothing=None,
                        box_weight=(1.0, 10.0))
    result = tune(base, str(tmp_path / "sweep"), space=space, max_trials=2, verbose=0,
                  process_per_trial=False)
    with open(tmp_path / "sweep" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(r["box_weight"]) for r in rows) == [1.0, 10.0]
    best = result.best_recipe
    assert best.task_config().box_weight == best.box_weight in (1.0, 10.0)


def test_an_exif_rotated_image_is_measured_upright(tmp_path):
    from transferkit.data.boxes import image_size

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60x20, shown turned a quarter: 20 wide, 60 high
    Image.new("RGB", (60, 20)).save(tmp_path / "turned.jpg", exif=exif)
    assert image_size(tmp_path / "turned.jpg") == (20, 60)
    assert image_size(_image(tmp_path / "plain.png", (60, 20))) == (60, 20)
