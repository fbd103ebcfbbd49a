"""Evaluation: metrics from predicted probabilities, ensembles, and what to load.

    loaded = load_run("runs/pets")                     # run directory or .keras file
    data = eval_data(loaded, "data/pets", split="val")
    probs, labels = predict_dataset(loaded.model, data.dataset)
    report = classification_report(probs, labels, loaded.class_names)

Everything works on probabilities (what transferkit models output), so one code path
scores a model, a TTA-wrapped model, an ensemble or an exported TFLite file.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from transferkit.evaluation.calibrate import nll
from transferkit.core.errors import ConfigError, DataError, check_choice
from transferkit.models.heads import task_of
from transferkit.models.saving import load_model, read_metadata

SPLITS = ("all", "val", "test")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model with what travels with it: class names, image size and run config."""

    path: str
    model: object
    class_names: tuple
    image_size: tuple
    config: dict
    task: str = "multiclass"


@dataclasses.dataclass(frozen=True)
class EvalData:
    """One fixed-order split: batches of (images 0-255, one-hot labels) and the files."""

    dataset: object
    files: tuple
    labels: np.ndarray
    class_names: tuple


def model_file(path):
    """`path` itself if it is a .keras file, `path/model.keras` for a run directory."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        inner = os.path.join(path, "model.keras")
        if not os.path.exists(inner):
            raise ConfigError(f"The MODEL argument {path} is a directory without "
                              "model.keras; pass a run directory or a .keras file.")
        return inner
    if not os.path.exists(path):
        raise ConfigError(f"The MODEL argument {path} does not exist; pass a run "
                          "directory or a .keras file.")
    return path


def load_run(path, *, trusted=False):
    """Load a run directory or `.keras` file (safe mode unless `trusted`)."""
    file = model_file(path)
    # compile=False: scoring needs no optimizer, and its state would only be skipped.
    model = load_model(file, trusted=trusted, compile=False)
    meta = read_metadata(file)
    folder = os.path.dirname(os.path.abspath(file))
    config = _read_json(os.path.join(folder, "config.json")) or {}
    names = meta.get("class_names") or _read_json(os.path.join(folder, "class_names.json"))
    size = model.input_shape[1:3]
    if None in size and meta.get("image_size"):
        size = (meta["image_size"],) * 2 if isinstance(meta["image_size"], int) \
            else tuple(meta["image_size"])
    task = meta.get("task") or task_of(model)
    return LoadedModel(file, model, tuple(names or ()), tuple(size), config, task)


def check_classifier(loaded):
    """Raise ConfigError unless `loaded` is a multiclass or binary classifier."""
    if loaded.task not in ("multiclass", "binary"):
        raise ConfigError(f"{loaded.path} was trained for task={loaded.task!r}; evaluate "
                          "reports classification metrics for 'multiclass' and 'binary' "
                          "models only.")


def eval_data(loaded, data_dir, *, split="all", batch_size=32, val_split=None, seed=None):
    """The images of `data_dir` to score `loaded` on, in a fixed order.

    split: "all" (default: every image), or "val"/"test": the split a run with the
        same `val_split`/`seed` (default: the run's config, else 0.2 and 0) held out.
    Class order follows the model; a class the model does not know is an error.
    """
    from transferkit.data.load import load_data, make_dataset

    check_choice("split", split, SPLITS)
    cfg = loaded.config
    val_split = cfg.get("val_split", 0.2) if val_split is None else val_split
    test_split = cfg.get("test_split", 0.0)
    seed = cfg.get("seed", 0) if seed is None else seed
    data = load_data(os.path.expanduser(data_dir), image_size=loaded.image_size,
                     batch_size=batch_size, class_names=loaded.class_names or None,
                     val_split=0.0 if split == "all" else val_split,
                     test_split=0.0 if split == "all" else test_split, seed=seed)
    name = "train" if split == "all" else split
    files, labels = getattr(data, f"{name}_files"), getattr(data, f"{name}_labels")
    if not files:
        raise DataError(f"{data_dir}: the {split!r} split is empty (val_split={val_split},"
                        f" test_split={test_split}); use --split all.")
    dataset = make_dataset(files, labels, image_size=loaded.image_size,
                           batch_size=batch_size, training=False)
    return EvalData(dataset, tuple(files), labels, tuple(data.class_names))


def predict_dataset(predict, dataset, verbose=False):
    """(probabilities [N, C], labels [N, C]) over a dataset of (images, labels).

    predict: a keras model or any callable from a numpy batch to probabilities.
    verbose: show a progress bar (default False).
    """
    fn = predict.predict_on_batch if hasattr(predict, "predict_on_batch") else predict
    steps = int(dataset.cardinality())
    bar = keras.utils.Progbar(steps if steps > 0 else None) if verbose else None
    probs, labels = [], []
    for images, y in dataset:
        probs.append(np.asarray(fn(images.numpy())))
        labels.append(y.numpy())
        if bar:
            bar.add(1)
    return np.concatenate(probs), np.concatenate(labels)


def average_probabilities(probabilities):
    """The ensemble prediction: the mean of several [N, C] probability arrays."""
    arrays = [np.asarray(p, dtype=np.float64) for p in probabilities]
    shapes = {a.shape for a in arrays}
    if not arrays or len(shapes) != 1:
        raise ConfigError(f"Ensemble members must predict the same shape; received "
                          f"shapes {sorted(shapes)}.")
    return np.mean(arrays, axis=0)


def ensemble_predict(models, dataset, verbose=False):
    """(mean probabilities [N, C], labels [N, C]) of one or more models on `dataset`.

    A binary model's single sigmoid column becomes two columns (not-class, class).
    """
    results = [predict_dataset(model, dataset, verbose) for model in models]
    probs = average_probabilities([p for p, _ in results]).astype(np.float32)
    labels = results[0][1]
    if probs.shape[1] == 1:
        probs, labels = np.hstack([1 - probs, probs]), np.hstack([1 - labels, labels])
    return probs, labels


def check_same_classes(members):
    """Raise ConfigError unless all LoadedModels in `members` share classes and size."""
    first = members[0]
    for other in members[1:]:
        if tuple(other.class_names) != tuple(first.class_names):
            raise ConfigError(f"Cannot ensemble {other.path} with {first.path}: class "
                              f"names differ ({list(other.class_names)} vs "
                              f"{list(first.class_names)}).")
        if tuple(other.image_size) != tuple(first.image_size):
            raise ConfigError(f"Cannot ensemble {other.path} with {first.path}: image "
                              f"sizes differ ({other.image_size} vs {first.image_size}); "
                              "every member scores the same decoded images.")


def classification_report(probs, labels, class_names, top_k=(1, 5)):
    """Accuracy, top-k, NLL, per-class precision/recall/F1 and the confusion matrix.

    labels: one-hot rows (or class indices). Rows of the matrix are true classes.
    """
    probs = np.asarray(probs, dtype=np.float64)
    true = np.asarray(labels)
    true = true.argmax(axis=1) if true.ndim == 2 else true.astype(int)
    num = probs.shape[1]
    pred = probs.argmax(axis=1)
    matrix = tf.math.confusion_matrix(true, pred, num_classes=num).numpy()
    out = {"num_images": int(len(true)), "accuracy": float(np.mean(pred == true)),
           "nll": nll(probs, true)}
    for k in top_k:
        if 1 < k < num:
            hits = tf.math.in_top_k(tf.constant(true), tf.constant(probs, tf.float32), k)
            out[f"top{k}"] = float(np.mean(hits.numpy()))
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(num), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(num), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num),
                   where=precision + recall > 0)
    names = list(class_names) or [str(i) for i in range(num)]
    out["per_class"] = {n: {"precision": float(p), "recall": float(r), "f1": float(f),
                            "support": int(s)}
                        for n, p, r, f, s in zip(names, precision, recall, f1, actual)}
    out["macro_f1"] = float(np.mean(f1))
    out["confusion_matrix"] = matrix.tolist()
    out["class_names"] = names
    return out


def format_report(report, top=20):
    """A few lines for the terminal: headline metrics, then per-class rows."""
    heads = [f"{k}={report[k]:.4f}" for k in ("accuracy", "top5", "top3", "nll", "macro_f1")
             if k in report]
    lines = [f"{report['num_images']} images: " + ", ".join(heads),
             f"{'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name, row in list(report["per_class"].items())[:top]:
        lines.append(f"{name[:19]:<20}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                     f"{row['f1']:>10.3f}{row['support']:>9d}")
    return "\n".join(lines)


def worst_predictions(probs, labels, n=16):
    """Indices of the `n` images whose true class got the lowest probability."""
    true = np.asarray(labels).argmax(axis=1)
    scores = np.asarray(probs)[np.arange(len(true)), true]
    return np.argsort(scores, kind="stable")[:n]


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
