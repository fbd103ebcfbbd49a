"""`export --check`: the source model and every artifact scored side by side.

    rows = check_parity(loaded, [path], eval_data(loaded, "data/pets", split="val"))
    print(format_parity(rows, ExportConfig.tolerance, loaded.task))

Parity is the model's task's (`Task.parity`): the headline metric within the tolerance,
and the artifact agreeing with the source model's predictions on all but that fraction
of the images.
"""

import os
import time

import numpy as np

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import TransferkitError
from transferkit.deploy.config import ExportConfig
from transferkit.deploy.predictors import load_predictor
from transferkit.models.bundle import read_sidecar

@renamed(**TRUSTED)
def check_parity(loaded, artifacts, data, tolerance=ExportConfig.tolerance, safe_mode=True):
    """Score the source model and every artifact on `data` (an EvalData) side by side
    (tolerance: default `ExportConfig`'s, 0.01).

    Returns one row per model: {"artifact", "format", "size_mb", <headline metric>,
    "agreement", "max_abs_diff", "ms_per_image", "ok"}; the source's row is first and
    always ok. `ok` is the task's verdict (`Task.parity`) against the source's outputs.
    """
    task = loaded.task
    candidates = [("source " + os.path.basename(loaded.path), loaded.path,
                   loaded.model.predict_on_batch)]
    candidates += [(os.path.basename(os.fspath(a).rstrip("/")), a,
                    load_predictor(a, safe_mode=safe_mode)) for a in artifacts]
    first = next(iter(data.dataset))[0].numpy()
    # Warm-up on both batch sizes the pass sees (full, and the last one's remainder):
    # tracing a Keras predict function or resizing an interpreter is not latency.
    warm_up = [first] + ([first[:len(data.files) % len(first)]]
                         if len(data.files) % len(first) else [])
    rows, reference = [], None
    for name, path, predict in candidates:
        for batch in warm_up:
            predict(batch)
        outputs, labels, seconds = _timed_predictions(predict, data.dataset)
        reference = outputs if reference is None else reference
        row = {"artifact": name, "format": artifact_format(path),
               "size_mb": size_bytes(path) / 2 ** 20,
               **task.parity(reference, outputs, labels, tolerance),
               "ms_per_image": 1000 * seconds / max(len(outputs), 1)}
        rows.append(row)
    return rows


def artifact_format(path):
    """What an artifact is, read off its metadata file (else its name): "keras",
    "savedmodel", "tflite fp32", "tflite int8"."""
    path = os.fspath(path).rstrip("/")
    meta = read_sidecar(path) or {}
    fmt = meta.get("format") or ("tflite" if path.endswith(".tflite") else
                                 "savedmodel" if os.path.isdir(path) else "keras")
    return f"tflite {meta.get('quantize') or 'fp32'}" if fmt == "tflite" else fmt


def size_bytes(path):
    """Bytes on disk of a file, or of every file under a folder (a SavedModel)."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def _timed_predictions(predict, dataset):
    """(probs, labels, seconds spent in `predict` only, not in decoding the files)."""
    probs, labels, seconds = [], [], 0.0
    for images, y in dataset:
        batch = images.numpy()
        start = time.perf_counter()
        probs.append(np.asarray(predict(batch)))
        seconds += time.perf_counter() - start
        labels.append(y.numpy())
    return np.concatenate(probs), np.concatenate(labels), seconds


def format_parity(rows, tolerance, task):
    """The parity table as text."""
    metric = task.headline
    width = max(10, len(metric) + 2)  # e.g. correct_iou50
    lines = [f"{'artifact':<24}{'format':<13}{'MB':>8}{metric:>{width}}{'agree':>8}"
             f"{'ms/image':>10}{'max|d|':>10}  (tolerance {tolerance})"]
    lines += [f"{r['artifact'][:23]:<24}{r.get('format', '')[:12]:<13}"
              f"{r.get('size_mb', float('nan')):>8.2f}{r[metric]:>{width}.4f}"
              f"{r['agreement']:>8.3f}{r['ms_per_image']:>10.2f}{r['max_abs_diff']:>10.4f}"
              f"  {'ok' if r['ok'] else 'FAIL'}" for r in rows]
    return "\n".join(lines)


def raise_on_mismatch(rows, tolerance, task):
    """TransferkitError naming the artifacts that do not match the source model."""
    bad = [r for r in rows if not r["ok"]]
    if bad:
        metric = task.headline
        raise TransferkitError(
            "Export parity check failed: " + ", ".join(
                f"{r['artifact']} {metric} {r[metric]:.4f}, agreement {r['agreement']:.3f}"
                for r in bad) +
            f" vs source {metric} {rows[0][metric]:.4f} (allowed: a {metric} difference of "
            f"--tolerance {tolerance} and agreement >= {1 - tolerance:.3f}).")
