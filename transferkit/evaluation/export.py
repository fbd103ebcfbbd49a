"""Export to .keras, SavedModel and TFLite (fp32, fp16, int8), and check parity.

    path = export_model(loaded, "tflite", "exports/", quantize="int8",
                        representative=representative_images(loaded, "data/pets"))
    rows = check_parity(loaded, [path], eval_data(loaded, "data/pets", split="val"))

Parity is the model's task's (`Task.parity`): the headline metric (accuracy, or MAE for
regression) within the tolerance, and the artifact agreeing with the source model's
predictions on all but that fraction of the images.

Every artifact takes raw RGB 0-255 float32 images [B, H, W, 3]: resizing and the
backbone's preprocessing are layers inside the model, so nothing is lost on export. A
SavedModel's default signature takes encoded image files instead (`serving_archive`),
for TF Serving. `export_plan("all", ...)` lists every format; TFLite files run on
LiteRT's interpreter (`tflite_interpreter`).
A model with a novelty score (`evaluation.novelty`) exports it everywhere: the .keras
file keeps it, the SavedModel's `serving_default` returns `novelty` and `unknown`, and
a .tflite file returns `novelty` [B, 1] as its second output, its threshold in the
file's metadata (`tflite_metadata`). Both compute it in the graph with
`novelty.novelty_model`.
Class names travel with every artifact: `labels.txt` (one per line, output order) and
`<artifact>.json` (class names, image size, input spec) are written beside it, inside
a SavedModel's `assets/` too, and inside the .keras file (see saving.save_model).
"""

import ctypes
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError, TransferkitError, check_choice
from transferkit.core.files import atomic_path, write_json, write_text
from transferkit.data.load import load_data
from transferkit.data.pipeline import decode_bytes, make_dataset
from transferkit.data.splits import stratified_sample
from transferkit.evaluation.novelty import ARRAYS_NAME, novelty_model
from transferkit.evaluation.tflite_metadata import NOVELTY_OUTPUT, export_metadata
from transferkit.models.saving import load_model, save_model

FORMATS = ("keras", "savedmodel", "tflite")
ALL = "all"  # every format: keras, savedmodel, TFLite fp32 and fp16, int8 with data
QUANTIZE = ("fp16", "int8")
INPUT_SPEC = "float32 RGB 0-255, shape [batch, height, width, 3]"


def artifact_name(fmt, quantize=None):
    """File or folder name of an export: model.keras, saved_model, model_int8.tflite."""
    if fmt == "keras":
        return "model.keras"
    if fmt == "savedmodel":
        return "saved_model"
    return f"model_{quantize}.tflite" if quantize else "model.tflite"


def export_plan(fmt, quantize=None, *, calibration_data=False):
    """The (format, quantize) pairs an export writes: `fmt` with `quantize`, or for
    fmt="all" keras, savedmodel, TFLite fp32 and fp16, and int8 if `calibration_data`
    (int8 calibrates on training images). Bad combinations raise ConfigError naming
    the argument and the allowed values."""
    check_choice("format", fmt, FORMATS + (ALL,))
    if quantize is not None:
        check_choice("quantize", quantize, QUANTIZE)
        if fmt != "tflite":
            raise ConfigError(
                f"The `--quantize` argument applies to --format tflite only (allowed: "
                f"{list(QUANTIZE)} with --format tflite; --format all writes fp32, fp16 "
                f"and, with --data, int8). Received: format={fmt!r}, quantize={quantize!r}")
    if fmt != ALL:
        return [(fmt, quantize)]
    plan = [("keras", None), ("savedmodel", None), ("tflite", None), ("tflite", "fp16")]
    return plan + ([("tflite", "int8")] if calibration_data else [])


def export_model(loaded, fmt, out_dir, *, quantize=None, representative=None,
                 metadata=None):
    """Write `loaded.model` (a LoadedModel) as `fmt` into `out_dir`; returns the path.

    quantize: None, "fp16" or "int8" (TFLite only). representative: for int8, an
        iterable of [1, H, W, 3] float32 images from the training split.
    metadata: extra JSON-able keys for the artifact's metadata (e.g. {"tta": "flip"}).
    """
    check_choice("format", fmt, FORMATS)
    export_plan(fmt, quantize)
    if quantize == "int8" and representative is None:
        raise ConfigError("int8 quantization needs a representative dataset from the "
                          "training split: pass `--data DIR`.")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, artifact_name(fmt, quantize))
    meta = {"class_names": list(loaded.class_names), "task": loaded.task.name,
            "input": loaded.input.to_json(), "input_format": INPUT_SPEC,
            "format": fmt, "quantize": quantize,
            "source": os.path.abspath(loaded.path), **(metadata or {})}
    if loaded.novelty is not None:
        meta["novelty"] = loaded.novelty.to_json()
    if fmt == "keras":
        extras = None if loaded.novelty is None else {
            ARRAYS_NAME: loaded.novelty.arrays_bytes()}
        save_model(loaded.model, path, metadata=meta, extras=extras)
    elif fmt == "savedmodel":
        meta["signatures"] = _export_savedmodel(loaded, path, meta)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            saved = os.path.join(tmp, "saved_model")
            _tflite_source(loaded, saved)
            content = tflite_bytes(saved, quantize, representative)
        # Model metadata + labels inside the file: MediaPipe Tasks load it as it is.
        content = export_metadata(content, loaded.task.tflite_output(
            loaded.class_names, loaded.model.output_shape[-1]), meta,
            novelty=loaded.novelty)
        with atomic_path(path) as tmp_file:
            with open(tmp_file, "wb") as f:
                f.write(content)
    _write_labels(os.path.join(out_dir, "labels.txt"), loaded.class_names)
    write_json(path + ".json", meta)
    return path


def _tflite_source(loaded, folder):
    """The SavedModel the TFLite converter reads: the model's `serve` signature; with a
    novelty score, a second output `novelty` [B, 1] (`novelty.novelty_model`, as the
    SavedModel's), after the model's own output. [B, 1], not [B]: MediaPipe's
    ImageClassifier takes every output as a classification head [B, classes], so a
    one-"class" head it reads like any other (see tflite_metadata)."""
    model = loaded.model
    if loaded.novelty is None:
        model.export(folder, format="tf_saved_model", verbose=False)
        return
    both = novelty_model(model, loaded.task, loaded.novelty)

    def serve(images):
        outputs, score = both(images)
        # Named: the converter orders the graph's outputs as it likes, and the metadata
        # puts them back in order by these names (`with_metadata`).
        return {"output_0": outputs, NOVELTY_OUTPUT: score[:, None]}

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The input as `model.export` writes it (the model's own input shape).
    archive.add_endpoint("serve", tf.function(serve), input_signature=[
        tf.TensorSpec(model.inputs[0].shape, tf.float32, name="images")])
    archive.write_out(folder, verbose=False)


SAVED_MODEL_TEMP = ".saved_model."  # prefix of the folders an export builds in


BYTES_SIGNATURE = "serving_default"  # encoded JPEG/PNG/... bytes in: TF Serving's default
FLOAT_SIGNATURE = "serve"  # float32 RGB 0-255 images in: `load_predictor`, Keras's name
BYTES_INPUT = "image_bytes"


def serving_archive(loaded):
    """(Keras ExportArchive of `loaded.model`, {name: tf.function}): two signatures,

    `serving_default`: `image_bytes` [B] strings of encoded images (JPEG, PNG, GIF,
        BMP, WebP; what TF Serving's REST API sends as {"b64": ...}), decoded and
        resized in the graph by the pipeline's own decoder (`data.pipeline.
        decode_bytes`); outputs are the task's (`Task.serving_outputs`), e.g. a
        classifier's `scores`, `classes` and `label`; with a novelty score in the
        model, also `novelty` [B] (higher: more unusual) and `unknown` [B] (above its
        threshold).
    `serve`: float32 RGB 0-255 images [B, H, W, 3] -> the model's output, as
        `model.export` writes it.
    """
    model, task, names = loaded.model, loaded.task, tuple(loaded.class_names)
    size, novelty = loaded.input.size, loaded.novelty
    archive = keras.export.ExportArchive()
    archive.track(model)
    # With a novelty score: one pass gives the output and the novelty.
    both = None if novelty is None else novelty_model(model, task, novelty)

    def from_bytes(image_bytes):
        images = tf.map_fn(lambda data: decode_bytes(data, size), image_bytes,
                           fn_output_signature=tf.TensorSpec([*size, 3], tf.float32))
        if both is None:
            return task.serving_outputs(model(images, training=False), names)
        outputs, score = both(images)
        return {**task.serving_outputs(outputs, names), "novelty": score,
                "unknown": score > novelty.threshold}

    endpoints = {
        BYTES_SIGNATURE: archive.add_endpoint(
            BYTES_SIGNATURE, tf.function(from_bytes),
            input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)]),
        FLOAT_SIGNATURE: archive.add_endpoint(
            FLOAT_SIGNATURE, tf.function(lambda images: model(images, training=False)),
            input_signature=[tf.TensorSpec([None, *size, 3], tf.float32, name="images")])}
    return archive, endpoints


def _signature_summary(endpoints):
    """{signature: {"inputs": {name: [dtype, shape]}, "outputs": {...}}} for the
    metadata and the model card."""
    def specs(structure):
        flat = structure if isinstance(structure, dict) else {"output_0": structure}
        return {k: [v.dtype.name, [None if d is None else int(d) for d in v.shape]]
                for k, v in sorted(flat.items())}

    out = {}
    for name, fn in endpoints.items():
        concrete = fn.get_concrete_function()
        args = concrete.structured_input_signature[0]
        out[name] = {"inputs": specs({a.name: a for a in args}),
                     "outputs": specs(concrete.structured_outputs)}
    return out


def _export_savedmodel(loaded, path, meta):
    # Export beside the target, then swap it in: a failed or killed export never
    # leaves a half-written folder where a good one was.
    folder = os.path.dirname(path) or "."
    _remove_stale_exports(folder)
    tmp = tempfile.mkdtemp(prefix=SAVED_MODEL_TEMP, dir=folder)
    try:
        target = os.path.join(tmp, "model")
        archive, endpoints = serving_archive(loaded)
        archive.write_out(target, verbose=False)
        meta = {**meta, "signatures": _signature_summary(endpoints)}
        os.makedirs(os.path.join(target, "assets"), exist_ok=True)
        _write_labels(os.path.join(target, "assets", "labels.txt"), meta["class_names"])
        write_json(os.path.join(target, "assets", "transferkit.json"), meta)
        os.chmod(target, 0o755)
        if not (os.path.isdir(path) and _exchange(target, path)):
            if os.path.exists(path):  # no atomic exchange here: a short window
                os.replace(path, os.path.join(tmp, "old"))
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta["signatures"]


def _exchange(a, b):
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if the
    system cannot, so the caller renames twice instead."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                              rename_exchange) == 0
    except (AttributeError, OSError):
        return False


def _remove_stale_exports(folder):
    # The build folders a killed export left: ours by name, never read by anything.
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(SAVED_MODEL_TEMP) and os.path.isdir(path) \
                and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def tflite_bytes(saved_model_dir, quantize=None, representative=None):
    """Convert a SavedModel with the TFLite converter; inputs and outputs stay float32.

    fp16 stores float16 weights; int8 quantizes weights and activations, calibrated on
    `representative`, and keeps float I/O so every artifact takes the same images.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        images = list(representative)
        converter.representative_dataset = lambda: ([image] for image in images)
    return converter.convert()


def representative_images(loaded, data, n=64):
    """Up to `n` [1, H, W, 3] images of the training split of `data` (the run's split
    seed), drawn round-robin across classes so int8 ranges see every class."""
    cfg = loaded.config
    splits = load_data(os.path.expanduser(os.fspath(data)), image_size=loaded.input,
                       task=loaded.task, class_names=loaded.class_names or None,
                       seed=cfg.get("seed", 0), val_split=cfg.get("val_split", 0.2),
                       test_split=cfg.get("test_split", 0.0), verbose=False)
    labels = splits.train_labels
    strata = [tuple(row) for row in labels] if loaded.task.has_classes else [0] * len(labels)
    chosen = stratified_sample(strata, n, seed=cfg.get("seed", 0))
    dataset = make_dataset([splits.train_files[i] for i in chosen], labels[chosen],
                           image_size=loaded.input.size, batch_size=1, training=False,
                           task=loaded.task, num_classes=len(splits.class_names))
    return [images.numpy() for images, _ in dataset]


def _write_labels(path, class_names):
    write_text(path, "".join(f"{name}\n" for name in class_names))


def load_predictor(path, *, trusted=False):
    """A callable numpy images [B, H, W, 3] -> probabilities, for any artifact."""
    path = os.fspath(path)
    if path.endswith(".tflite"):
        return _TFLitePredictor(path)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        # Keep the loaded object alive: `serve` alone does not own the variables.
        saved = tf.saved_model.load(path)
        return lambda images: saved.serve(tf.constant(images, tf.float32)).numpy()
    if path.endswith(".keras"):
        return load_model(path, trusted=trusted, compile=False).predict_on_batch
    raise ConfigError(f"Cannot load {path}: expected a .keras file, a SavedModel folder "
                      "or a .tflite file.")


def tflite_interpreter(path):
    """A TFLite interpreter for the file `path`: LiteRT's (`ai_edge_litert`, the
    `deploy` extra), which TF 2.21 deprecates `tf.lite.Interpreter` in favour of; TF's
    own only where LiteRT is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=os.fspath(path))


class _TFLitePredictor:
    """Runs a .tflite file batch by batch: one interpreter sized for each batch size
    met (a few: full batches and a last, smaller one), so alternating sizes do not
    reallocate on every call."""

    MAX_SIZES = 4

    def __init__(self, path):
        self.path = os.fspath(path)
        self.spare = tflite_interpreter(self.path)  # not yet sized for a batch
        self.input = self.spare.get_input_details()[0]["index"]
        # The model's output first; a novelty score, when the file has one, second.
        self.output, *more = [d["index"] for d in self.spare.get_output_details()]
        self.novelty_output = more[0] if more else None
        self.by_batch = {}

    def _interpreter(self, shape):
        if shape[0] not in self.by_batch:
            if len(self.by_batch) >= self.MAX_SIZES:
                self.by_batch.pop(next(iter(self.by_batch)))
            interpreter, self.spare = self.spare or tflite_interpreter(self.path), None
            interpreter.resize_tensor_input(self.input, shape)
            interpreter.allocate_tensors()
            self.by_batch[shape[0]] = interpreter
        return self.by_batch[shape[0]]

    def _invoke(self, images):
        images = np.asarray(images, dtype=np.float32)
        interpreter = self._interpreter(images.shape)
        interpreter.set_tensor(self.input, images)
        interpreter.invoke()
        return interpreter

    def __call__(self, images):
        return self._invoke(images).get_tensor(self.output).copy()

    def novelty(self, images):
        """The file's novelty output [B] (a second output; see `_tflite_source`)."""
        if self.novelty_output is None:
            raise TransferkitError(f"{self.path} has no novelty output; export it again "
                                   "from a model with a novelty score.")
        return self._invoke(images).get_tensor(self.novelty_output).reshape(-1).copy()

    predict_on_batch = __call__  # as a Keras model's: evaluate and predict call this


def check_parity(loaded, artifacts, data, tolerance=0.01, trusted=False):
    """Score the source model and every artifact on `data` (an EvalData) side by side.

    Returns one row per model: {"artifact", "format", "size_mb", <headline metric>,
    "agreement", "max_abs_diff", "ms_per_image", "ok"}; the source's row is first and
    always ok. `ok` is the task's verdict (`Task.parity`) against the source's outputs.
    """
    task = loaded.task
    candidates = [("source " + os.path.basename(loaded.path), loaded.path,
                   loaded.model.predict_on_batch)]
    candidates += [(os.path.basename(os.fspath(a).rstrip("/")), a,
                    load_predictor(a, trusted=trusted)) for a in artifacts]
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
    meta = {}
    if os.path.exists(path + ".json"):
        with open(path + ".json", encoding="utf-8") as f:
            meta = json.load(f)
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
    lines = [f"{'artifact':<24}{'format':<13}{'MB':>8}{metric:>10}{'agree':>8}"
             f"{'ms/image':>10}{'max|d|':>10}  (tolerance {tolerance})"]
    lines += [f"{r['artifact'][:23]:<24}{r.get('format', '')[:12]:<13}"
              f"{r.get('size_mb', float('nan')):>8.2f}{r[metric]:>10.4f}"
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
