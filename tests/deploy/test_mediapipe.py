"""Exported .tflite files load in MediaPipe Tasks as they are, and say what
`transferkit predict` says about the same image files.

MediaPipe runs in a separate process (tests/deploy/mediapipe_client.py) that imports only
mediapipe and numpy, with TensorFlow and transferkit blocked: a plain client with
nothing but the file. The classifier reads the class names, the input normalisation
and (multilabel) the score threshold from the file's metadata; the segmenter reads the
class names and returns the category mask; the object detector reads the four outputs
the file computes (locations, categories, scores, count) by their metadata and names
the categories from the labels file. Expected labels come from
`transferkit predict --json` (classes, detections) and `predict --out` (masks).
"""

import contextlib
import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from PIL import Image, ImageOps

from transferkit import cli
from transferkit.core.task_registry import get_task
from transferkit.data.files import image_dataset

from conftest import make_detection_folder, make_seg_folder

# Looked up, not imported: MediaPipe runs only in the client process.
if importlib.util.find_spec("mediapipe") is None:
    pytest.skip("MediaPipe Tasks is not installed (pip install '.[deploy]')",
                allow_module_level=True)

CLIENT = os.path.join(os.path.dirname(__file__), "mediapipe_client.py")
SIZE = 32
COLOURS = ("red", "green", "blue")


def _mediapipe(jobs, tmp):
    """MediaPipe's results for `jobs`, from the client script in a fresh process."""
    jobs_file = os.path.join(tmp, "jobs.json")
    with open(jobs_file, "w") as f:
        json.dump(jobs, f)
    done = subprocess.run([sys.executable, CLIENT, jobs_file], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _image(path, levels, rng, size=SIZE):
    """An image whose channel c is bright by levels[c] (0..1), plus noise."""
    pixels = rng.uniform(0, 60, (size, size, 3)) + 170 * np.asarray(levels)[None, None]
    Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(path)


def _cli(*argv):
    """Run a transferkit command in-process; its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main([str(a) for a in argv]) == 0
    return out.getvalue()


def _predict(run, files):
    out = _cli("predict", run, *files, "--json", "--top-k", "5")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in rows] == list(files)  # one row per file, in order
    return rows


def _export(run, out, *extra):
    _cli("export", run, "--format", "tflite", "--out", out, *extra)
    return os.path.join(out, "model_int8.tflite" if "int8" in extra else "model.tflite")


def _mediapipe_label(task, categories, class_names):
    """MediaPipe's answer in `predict`'s terms: the top class, binary's positive class
    when its score passes 0.5, multilabel's set of reported classes."""
    if task == "multilabel":
        return sorted(name for name, _ in categories)
    if task == "binary":
        (name, score), = categories
        return name if score > 0.5 else class_names[0]
    return max(categories, key=lambda c: c[1])[0]


def _agreement(task, rows, results, class_names):
    got = [_mediapipe_label(task, c, class_names) for c in results["categories"]]
    want = [sorted(r["label"]) if task == "multilabel" else r["label"] for r in rows]
    return np.mean([g == w for g, w in zip(got, want)])


def test_an_exported_classifier_loads_in_mediapipe_as_it_is(tmp_path):
    """Default run: an untrained three-class model (no training, so it is quick); the
    images are at the model's input size, so both sides see the same pixels. The same
    model with a novelty score too: its second output is MediaPipe's head 1, which
    names "unknown" exactly for the images `predict` calls unknown (the threshold read
    from the file's metadata), while head 0 stays the classes."""
    from transferkit.models import novelty as nv
    from transferkit.models.builder import build_model
    from transferkit.models.saving import save_model

    model = build_model("tiny_test", 3, weights=None, input_shape=SIZE)
    meta = {"class_names": list(COLOURS), "image_size": SIZE}
    run = save_model(model, str(tmp_path / "model.keras"), metadata=meta)
    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        files.append(str(tmp_path / f"{i}.png"))
        _image(files[-1], np.eye(3)[i % 3], rng)
    # A Mahalanobis score on these images' own features, its threshold their median:
    # half of them fall on each side.
    features, probs, _, _ = nv.novelty_inputs(model, image_dataset(files, SIZE)[0],
                                              get_task("multiclass"))
    arrays = nv.fit_arrays(features, np.arange(6) % 3)
    scores = nv.Novelty("mahalanobis", 0.0, 0.05, {}, "synthetic", arrays).score(
        features, probs)
    novelty = nv.Novelty("mahalanobis", float(np.median(scores)), 0.05,
                         {"mahalanobis": 0.5}, "synthetic",
                         {k: arrays[k] for k in nv.NEEDS["mahalanobis"]})
    with_novelty = save_model(model, str(tmp_path / "novel.keras"),
                              metadata={**meta, "novelty": novelty.to_json()},
                              extras={nv.ARRAYS_NAME: novelty.arrays_bytes()})
    paths = [_export(run, tmp_path / "exp"), _export(with_novelty, tmp_path / "exp2")]
    rows = _predict(run, files)
    novel_rows = _predict(with_novelty, files)
    results = _mediapipe([{"kind": "classifier", "model": path, "images": files}
                          for path in paths], str(tmp_path))
    for result in results:
        for row, categories in zip(rows, result["categories"]):
            assert sorted(name for name, _ in categories) == sorted(COLOURS)
            scores = {s["class"]: s["probability"] for s in row["scores"]}
            # The same probabilities: MediaPipe fed the raw 0-255 pixels (identity
            # normalisation from the metadata) and named every class from the labels.
            for name, score in categories:
                assert score == pytest.approx(scores[name], abs=1e-4)
    assert results[0]["heads"] == ["scores"]
    assert results[1]["heads"] == ["scores", "novelty"]
    assert {row["unknown"] for row in novel_rows} == {True, False}
    for row, (head,) in zip(novel_rows, results[1]["more_heads"]):
        if row["unknown"]:
            (name, score), = head
            assert name == "unknown" and score == pytest.approx(row["novelty"], rel=1e-4)
        else:
            assert head == []


# --- trained runs of every task (slow) -----------------------------------------------

def _classification_data(root, task, n=18, seed=0):
    """(data source, image files) for a classification task: colour-coded images at
    40 px (MediaPipe and transferkit both resize them to the model's 32 px)."""
    rng = np.random.default_rng(seed)
    os.makedirs(root)
    files, rows = [], []
    for i in range(n):
        if task == "multilabel":
            hot = [(i >> k) & 1 for k in range(3)] if i % 8 else [1, 0, 0]
            names = [c for c, h in zip(COLOURS, hot) if h]
        else:
            classes = COLOURS if task == "multiclass" else COLOURS[::2]
            names = [classes[i % len(classes)]]
            hot = [float(c in names) for c in COLOURS]
        folder = root if task == "multilabel" else os.path.join(root, names[0])
        os.makedirs(folder, exist_ok=True)
        files.append(os.path.join(folder, f"{i}.png"))
        _image(files[-1], hot, rng, size=40)
        rows.append([os.path.relpath(files[-1], root), "|".join(names)])
    if task != "multilabel":
        return root, files
    with open(os.path.join(root, "labels.csv"), "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return os.path.join(root, "labels.csv"), files


def _segmentation_data(root, n=8, seed=0):
    """`make_seg_folder`'s images/, masks/ and classes.txt; (root, the image files)."""
    make_seg_folder(root, count=n, size=SIZE, seed=seed)
    return str(root), [os.path.join(root, "images", f"{i:02d}.png") for i in range(n)]


def _train(data, task, out, epochs):
    with warnings.catch_warnings():  # "weights=none with head_epochs": known here
        warnings.simplefilter("ignore", UserWarning)
        keras.utils.set_random_seed(0)
        _cli("train", "--data", data, "--task", task, "--out", out, "--backbone",
             "tiny_test", "--weights", "none", "--image-size", SIZE, "--backbone-kwargs",
             "width=8", "--batch-size", 8, "--augment", "none", "--head-epochs", epochs,
             "--head-lr", 0.05, "--finetune-epochs", 0, "--early-stopping-patience", 0,
             "--decoder-width", 8, "--dropout", 0, "--no-report")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Every task trained, exported (multiclass also int8), predicted by transferkit,
    and run by MediaPipe in one client process: {name: {...}}."""
    root = str(tmp_path_factory.mktemp("deploy"))
    cases, jobs = {}, []
    for task in ("multiclass", "binary", "multilabel", "segmentation"):
        folder = os.path.join(root, task)
        if task == "segmentation":
            data, files = _segmentation_data(os.path.join(folder, "data"))
        else:
            data, files = _classification_data(os.path.join(folder, "data"), task)
        run = os.path.join(folder, "run")
        _train(data, task, run, 25 if task == "segmentation" else 10)
        exports = [("", _export(run, os.path.join(folder, "exp")))]
        if task == "multiclass":
            exports.append(("int8", _export(run, os.path.join(folder, "exp8"),
                                            "--quantize", "int8", "--data", data)))
        meta = json.load(open(exports[0][1] + ".json"))
        class_names = meta["class_names"]
        rows = _predict(run, files)
        if task == "segmentation":
            _cli("predict", run, *files, "--out", os.path.join(folder, "pred"))
        for quantize, path in exports:
            name = f"{task}_{quantize}" if quantize else task
            masks = [os.path.join(folder, f"mp_{i}.npy") for i in range(len(files))]
            kind = "segmenter" if task == "segmentation" else "classifier"
            jobs.append({"kind": kind, "model": path, "images": files, "masks": masks})
            cases[name] = {"task": task, "rows": rows, "class_names": class_names,
                           "files": files, "folder": folder, "masks": masks}
    for case, result in zip(cases.values(), _mediapipe(jobs, root)):
        case["mediapipe"] = result
    return cases



@pytest.mark.slow
@pytest.mark.parametrize("name, least", [("multiclass", 0.95), ("multiclass_int8", 0.9),
                                         ("binary", 0.95), ("multilabel", 0.95)])
def test_mediapipe_classifies_like_predict(deployed, name, least):
    case = deployed[name]
    task, categories = case["task"], case["mediapipe"]["categories"]
    reported = {n for image in categories for n, _ in image}
    if task == "binary":  # one sigmoid unit: labelled with the positive class
        assert reported == {case["class_names"][1]}
    elif task == "multiclass":  # every class, every image, named from the file
        assert all(sorted(n for n, _ in image) == sorted(case["class_names"])
                   for image in categories)
    else:  # the threshold from the metadata: only the classes an image has
        assert reported <= set(case["class_names"])
        assert all(score >= 0.5 for image in categories for _, score in image)
    # Not a trivial comparison: the trained model tells the images apart.
    assert len({str(r["label"]) for r in case["rows"]}) > 1
    assert _agreement(task, case["rows"], case["mediapipe"], case["class_names"]) >= least


@pytest.mark.slow
def test_mediapipe_segments_like_predict(deployed):
    case = deployed["segmentation"]
    assert case["mediapipe"]["labels"] == case["class_names"]
    agree, classes = [], set()
    for i, (path, mp_mask) in enumerate(zip(case["files"], case["masks"])):
        stem = os.path.splitext(os.path.basename(path))[0]
        want = np.asarray(Image.open(os.path.join(case["folder"], "pred",
                                                  f"{i:03d}_{stem}_mask.png")))
        got = np.load(mp_mask)
        assert got.shape == want.shape
        classes |= set(np.unique(want).tolist())
        agree.append(np.mean(got == want))
    assert np.mean(agree) >= 0.95
    assert len(classes) > 1  # the masks hold objects, not only background


@pytest.mark.slow
def test_a_one_channel_segmenter_reads_as_mediapipe_reads_one_channel(tmp_path):
    """One sigmoid channel: labelled with the foreground class alone, MediaPipe's
    category mask is 0 (that category) where its probability passes 0.5, else 255."""
    from transferkit.models.saving import save_model
    from transferkit.models.segmentation import build_segmenter

    model = build_segmenter("tiny_test", 1, weights=None, input_shape=SIZE, decoder_width=8)
    run = save_model(model, str(tmp_path / "model.keras"), metadata={
        "class_names": ["background", "object"], "image_size": SIZE,
        "task": "segmentation"})
    _, files = _segmentation_data(str(tmp_path / "data"), n=3)
    path = _export(run, tmp_path / "exp")
    _cli("predict", run, *files, "--out", tmp_path / "pred")
    masks = [str(tmp_path / f"mp_{i}.npy") for i in range(len(files))]
    result, = _mediapipe([{"kind": "segmenter", "model": path, "images": files,
                           "masks": masks}], str(tmp_path))
    assert result["labels"] == ["object"]
    seen = set()
    for i, (path, mp_mask) in enumerate(zip(files, masks)):
        stem = os.path.splitext(os.path.basename(path))[0]
        want = np.asarray(Image.open(tmp_path / "pred" / f"{i:03d}_{stem}_mask.png"))
        got = np.load(mp_mask)
        assert set(np.unique(got)) <= {0, 255}
        assert np.mean((got == 0) == (want == 1)) >= 0.95
        seen |= set(np.unique(want).tolist())
    assert seen == {0, 1}  # both sides of the threshold were compared


# --- a trained detector (slow) ----------------------------------------------------------

DETECTOR_SIZE = 64
# Each test image's content at the model's size, stretched by whole factors (x, y):
# 192x128, 128x256, 256x192, 192x192 and 320x128 pixels.
STRETCH = ((3, 2), (2, 4), (4, 3), (3, 3), (5, 2))


def _stretched_images(root, n=30, seed=5):
    """(files, true objects per file: (class name, normalised box)): generated
    detection images (`make_detection_folder`, upright), resized to the model's size
    and stretched by whole factors with nearest-neighbour sampling. Both sides'
    bilinear resizing then gives back exactly the model-size image, so neither
    transferkit's nor MediaPipe's resampling takes part, while MediaPipe still maps
    its boxes back to images of other sizes and shapes."""
    source = make_detection_folder(os.path.join(root, "source"), count=n, size=56,
                                   seed=seed)
    truth = {}
    with open(source) as f:
        for row in csv.DictReader(f):
            if row["label"]:
                truth.setdefault(row["path"], []).append(
                    (row["label"], [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]))
    files, objects = [], []
    for i in range(n):
        name = f"images/{i:03d}.png"
        with Image.open(os.path.join(root, "source", name)) as img:
            image = ImageOps.exif_transpose(img).convert("RGB")
        width, height = image.size  # the boxes are the upright image's pixels
        objects.append([(c, [b[0] / width, b[1] / height, b[2] / width, b[3] / height])
                        for c, b in truth.get(name, [])])
        kx, ky = STRETCH[i % len(STRETCH)]
        files.append(os.path.join(root, f"{i:03d}.png"))
        image.resize((DETECTOR_SIZE, DETECTOR_SIZE), Image.BILINEAR).resize(
            (DETECTOR_SIZE * kx, DETECTOR_SIZE * ky), Image.NEAREST).save(files[-1])
    return files, objects


def _iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * \
        max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _mediapipe_pixels(box, width, height):
    """A normalised box as MediaPipe reports one: whole pixels, the origin and the size
    each truncated (origin_x = int(xmin * width), width = int((xmax - xmin) * width))."""
    x, y = int(box[0] * width), int(box[1] * height)
    return [x, y, x + int((box[2] - box[0]) * width), y + int((box[3] - box[1]) * height)]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A detector trained on generated images (tiny backbone, 64 px), exported to fp32
    and int8 .tflite, predicted by transferkit on unseen images and run by MediaPipe's
    ObjectDetector in one client process."""
    root = str(tmp_path_factory.mktemp("detector"))
    data = make_detection_folder(os.path.join(root, "data"), count=48, size=56, seed=1)
    run = os.path.join(root, "run")
    with warnings.catch_warnings():  # "weights=none with head_epochs": known here
        warnings.simplefilter("ignore", UserWarning)
        keras.utils.set_random_seed(0)
        _cli("train", "--data", data, "--task", "detection", "--out", run, "--backbone",
             "tiny_test", "--weights", "none", "--image-size", DETECTOR_SIZE,
             "--batch-size", 8, "--augment", "none", "--head-epochs", 10, "--head-lr",
             0.01, "--finetune-epochs", 35, "--finetune-lr", 0.003, "--finetune-unfreeze",
             "none", "--early-stopping-patience", 0, "--no-report")
    files, objects = _stretched_images(os.path.join(root, "test"))
    exports = {"fp32": _export(run, os.path.join(root, "exp")),
               "int8": _export(run, os.path.join(root, "exp8"), "--quantize", "int8",
                               "--data", data)}
    results = _mediapipe([{"kind": "detector", "model": path, "images": files}
                          for path in exports.values()], root)
    return {"rows": _predict(run, files), "files": files, "objects": objects,
            "class_names": json.load(open(exports["fp32"] + ".json"))["class_names"],
            "mediapipe": dict(zip(exports, results))}


@pytest.mark.slow
def test_the_detector_finds_the_objects(detector):
    """Not a vacuous comparison: predict's detections on the unseen images are most of
    their objects (same class, IoU >= 0.5), and mostly objects."""
    rows, truth = detector["rows"], detector["objects"]
    found = [d for row in rows for d in row["detections"]]
    assert len(found) >= 20 and len({d["class"] for d in found}) > 1

    def hit(d, objects):
        return any(d["class"] == name and _iou(d["box_normalized"], box) >= 0.5
                   for name, box in objects)

    true = sum(hit(d, objects) for row, objects in zip(rows, truth)
               for d in row["detections"])
    recalled = sum(hit({"class": name, "box_normalized": box}, [
        (d["class"], d["box_normalized"]) for d in row["detections"]])
        for row, objects in zip(rows, truth) for name, box in objects)
    total = sum(len(objects) for objects in truth)
    assert true / len(found) >= 0.4 and recalled / total >= 0.5, (
        true, len(found), recalled, total)


@pytest.mark.slow
@pytest.mark.parametrize("name, least, score", [("fp32", 0.95, 1e-4), ("int8", 0.9, None)])
def test_mediapipe_detects_like_predict(detector, name, least, score):
    """The detections `predict --json` reports (score above the threshold) matched by
    one of MediaPipe's: the same class name, IoU >= 0.9 in the image's pixels (and for
    fp32 the same score: the file computes what the Keras model does)."""
    detections = detector["mediapipe"][name]["detections"]
    names = {category for image in detections for category, _, _ in image}
    assert names and names <= set(detector["class_names"])  # named from the labels file
    matched = total = 0
    for row, path, theirs in zip(detector["rows"], detector["files"], detections):
        width, height = Image.open(path).size
        for d in row["detections"]:
            box = _mediapipe_pixels(d["box_normalized"], width, height)
            total += 1
            matched += any(category == d["class"] and _iou(box, their_box) >= 0.9 and (
                score is None or abs(their_score - d["score"]) <= score)
                for category, their_score, their_box in theirs)
    assert total >= 20
    assert matched / total >= least, (matched, total)
