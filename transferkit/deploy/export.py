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
A model with a novelty score (`models.novelty`) exports it everywhere: the .keras
file keeps it, the SavedModel's `serving_default` returns `novelty` and `unknown`, and
a .tflite file returns `novelty` [B, 1] as its second output, its threshold in the
file's metadata (`tflite_metadata`). Both compute it in the graph with
`novelty.novelty_model`.
A detector's .tflite (its task's TfliteOutput kind "detections") computes the
detections in the graph, for one image at a time (`Task.tflite_detections`: MediaPipe
ObjectDetector's four outputs); int8 keeps that post-processing and the layers the task
names (`TfliteOutput.float_layers`) in float32 (`tflite_bytes`).
Class names travel with every artifact: `labels.txt` (one per line, output order) and
`<artifact>.json` (class names, image size, input spec) are written beside it, inside
a SavedModel's `assets/` too, and inside the .keras file: the bundle `models.bundle`
writes for train and add-class too.
"""

import ctypes
import os
import re
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.compat import renamed
from transferkit.core.errors import ConfigError, TransferkitError, check_choice
from transferkit.core.files import atomic_path
from transferkit.core.rundir import MODEL_FILE
from transferkit.data.load import load_data
from transferkit.data.pipeline import make_dataset
from transferkit.data.splits import stratified_sample
# The choices live in the light `deploy.config`; importable from here as before.
from transferkit.deploy.config import ALL, FORMATS, QUANTIZE  # noqa: F401
from transferkit.deploy.serving import serving_archive, signature_summary
from transferkit.deploy.tflite_metadata import NOVELTY_OUTPUT, export_metadata
from transferkit.models.bundle import (bundle_metadata, save_bundle, write_assets,
                                      write_companions)
from transferkit.models.novelty import novelty_model

INPUT_SPEC = "float32 RGB 0-255, shape [batch, height, width, 3]"
FLOAT_SCOPE = "float_postprocess"  # graph ops an int8 .tflite keeps float (detections)


@renamed(fmt="format")
def artifact_name(format, quantize=None):
    """File or folder name of an export: model.keras, saved_model, model_int8.tflite."""
    if format == "keras":  # named as in a run directory, so `load_run` reads the folder too
        return MODEL_FILE
    if format == "savedmodel":
        return "saved_model"
    return f"model_{quantize}.tflite" if quantize else "model.tflite"


@renamed(fmt="format")
def export_plan(format, quantize=None, *, calibration_data=False):
    """The (format, quantize) pairs an export writes: `format` with `quantize`, or for
    format="all" keras, savedmodel, TFLite fp32 and fp16, and int8 if `calibration_data`
    (int8 calibrates on training images). Bad combinations raise ConfigError naming
    the argument and the allowed values."""
    check_choice("format", format, FORMATS + (ALL,))
    if quantize is not None:
        check_choice("quantize", quantize, QUANTIZE)
        if format != "tflite":
            raise ConfigError(
                f"The `--quantize` argument applies to --format tflite only (allowed: "
                f"{list(QUANTIZE)} with --format tflite; --format all writes fp32, fp16 "
                f"and, with --data, int8). Received: format={format!r}, "
                f"quantize={quantize!r}")
    if format != ALL:
        return [(format, quantize)]
    plan = [("keras", None), ("savedmodel", None), ("tflite", None), ("tflite", "fp16")]
    return plan + ([("tflite", "int8")] if calibration_data else [])


@renamed(fmt="format")
def export_model(loaded, format, out_dir, *, quantize=None, representative=None,
                 metadata=None):
    """Write `loaded.model` (a LoadedModel) as `format` into `out_dir`; returns the path.

    quantize: None, "fp16" or "int8" (TFLite only). representative: for int8, an
        iterable of [1, H, W, 3] float32 images from the training split.
    metadata: extra JSON-able keys for the artifact's metadata (e.g. {"tta": "flip"}).
    """
    check_choice("format", format, FORMATS)
    export_plan(format, quantize)
    if quantize == "int8" and representative is None:
        raise ConfigError("int8 quantization needs a representative dataset from the "
                          "training split: pass `--data DIR`.")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, artifact_name(format, quantize))
    meta = bundle_metadata(loaded.class_names, loaded.task, loaded.input,
                           novelty=loaded.novelty, input_format=INPUT_SPEC, format=format,
                           quantize=quantize, source=os.path.abspath(loaded.path),
                           **(metadata or {}))
    if format == "keras":
        # The bundle: the model with its metadata and novelty arrays, labels, sidecar.
        return save_bundle(loaded.model, path, meta, novelty=loaded.novelty,
                           companions=True)
    if format == "savedmodel":
        meta["signatures"] = _export_savedmodel(loaded, path, meta)
    else:
        output = loaded.task.tflite_output(loaded.class_names, loaded.model.output_shape[-1])
        with tempfile.TemporaryDirectory() as tmp:
            saved = os.path.join(tmp, "saved_model")
            _tflite_source(loaded, saved, output)
            content = tflite_bytes(saved, quantize, representative, float_names=(
                (FLOAT_SCOPE, *output.float_layers) if output.kind == "detections"
                else output.float_layers))
        # Model metadata + labels inside the file: MediaPipe Tasks load it as it is.
        content = export_metadata(content, output, meta, novelty=loaded.novelty)
        with atomic_path(path) as tmp_file:
            with open(tmp_file, "wb") as f:
                f.write(content)
    write_companions(path, meta)
    return path


def _tflite_source(loaded, folder, output):
    """The SavedModel the TFLite converter reads, for the task's TfliteOutput `output`:
    the model's `serve` signature; for "detections", the task's post-processing on it
    (`Task.tflite_detections`, batch 1: MediaPipe's ObjectDetector outputs); with a
    novelty score, a second output `novelty` [B, 1] (`novelty.novelty_model`, as the
    SavedModel's), after the model's own output. [B, 1], not [B]: MediaPipe's
    ImageClassifier takes every output as a classification head [B, classes], so a
    one-"class" head it reads like any other (see tflite_metadata)."""
    model, task = loaded.model, loaded.task
    if loaded.novelty is None and output.kind != "detections":
        model.export(folder, format="tf_saved_model", verbose=False)
        return
    if output.kind == "detections":
        if loaded.novelty is not None:
            raise ConfigError(f"A .tflite of task={task.name!r} has MediaPipe's four "
                              "detection outputs and no room for a novelty score; "
                              "export the model without one.")

        def serve(images):
            outputs = model(images, training=False)
            # Named (`DETECTION_OUTPUTS`): the metadata orders the graph's outputs by
            # these names, as the converter orders them as it likes. Scoped: an int8
            # file keeps the post-processing float (`tflite_bytes`).
            with tf.name_scope(FLOAT_SCOPE):
                return task.tflite_detections(outputs)
    else:
        both = novelty_model(model, task, loaded.novelty)

        def serve(images):
            outputs, score = both(images)
            # Named: the metadata puts the outputs in order by these names.
            return {"output_0": outputs, NOVELTY_OUTPUT: score[:, None]}

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The input as `model.export` writes it (the model's own input shape), at the
    # output's batch size where it has one.
    shape = model.inputs[0].shape
    archive.add_endpoint("serve", tf.function(serve), input_signature=[
        tf.TensorSpec([output.batch or shape[0], *shape[1:]], tf.float32, name="images")])
    archive.write_out(folder, verbose=False)


SAVED_MODEL_TEMP = ".saved_model."  # prefix of the folders an export builds in


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
        meta = {**meta, "signatures": signature_summary(endpoints)}
        os.makedirs(os.path.join(target, "assets"), exist_ok=True)
        write_assets(os.path.join(target, "assets"), meta)
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


def tflite_bytes(saved_model_dir, quantize=None, representative=None, float_names=()):
    """Convert a SavedModel with the TFLite converter; inputs and outputs stay float32.

    fp16 stores float16 weights; int8 quantizes weights and activations, calibrated on
    `representative`, and keeps float I/O so every artifact takes the same images.
    float_names: for int8, name scopes or Keras layer names whose operations (and all
    that follow them) stay float32 (default: none, all are quantized): a task's
    post-processing in the graph, where int8 would round class ids and counts
    (MediaPipe reads a category of 0.996 as class 0), and the layers the task's
    TfliteOutput names (`float_layers`).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        images = list(representative)
        converter.representative_dataset = lambda: ([image] for image in images)
        if float_names:
            return _quantized_outside(converter, images, float_names)
    return converter.convert()


def _quantized_outside(converter, images, names):
    """int8 but for the operations under `names` and those after them: TFLite's
    selective quantization (the QuantizationDebugger's denylisted nodes, named in the
    calibrated model). Their calibration statistics go too: with them the quantizer
    still puts int8 round trips on some denylisted tensors (a sigmoid's fixed [0, 1]
    range rounds every score to 1/256, which ties neighbouring locations; a slice of
    the boxes), and a tensor without statistics it cannot quantize."""
    def data():
        return ([image] for image in images)

    with warnings.catch_warnings():
        # The debugger checks its model on TF's own interpreter, which warns that it
        # is deprecated: nothing the person exporting can act on.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                             debug_dataset=data)
        nodes = _nodes_from(debugger.calibrated_model, names)
        debugger.calibrated_model = _without_statistics(debugger.calibrated_model, nodes)
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes)
        return debugger.get_nondebug_quantized_model()


def _without_statistics(content, names):
    """A calibrated .tflite (`content`) with the calibration ranges of the tensors
    named `names` removed."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as model_fb

    model = model_fb.ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = set(names)
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.name.decode() in names:
                tensor.quantization = None
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def _nodes_from(content, names):
    """The output tensor names of the operations of a .tflite (`content`) under one of
    `names` and of every operation that follows one (graph outputs, which the
    converter renames, included). A name matches a whole path component of a tensor's
    name, with the "_1" Keras adds per call: "head_boxes" matches
    "model_1/head_1/head_boxes_1/BiasAdd", not "head_boxes2/..."."""
    from tensorflow.lite.python import schema_py_generated as model_fb

    graph = model_fb.ModelT.InitFromPackedBuf(bytearray(content), 0).subgraphs[0]
    pattern = re.compile(r"(^|/|;)(" + "|".join(re.escape(n) for n in names) +
                         r")(_\d+)?/")
    after, found, matched = set(), set(), set()
    for op in graph.operators:  # in execution order: producers come first
        outs = [graph.tensors[t].name.decode() for t in op.outputs]
        hits = {m.group(2) for n in outs for m in pattern.finditer(n)}
        if hits or any(t in after for t in op.inputs if t >= 0):
            after.update(op.outputs)
            found.update(outs)
            matched |= hits
    missing = sorted(set(names) - matched)
    if missing:
        raise TransferkitError(f"No operation of the converted model is named under "
                               f"{missing}: nothing to keep in float there.")
    return sorted(found)


def representative_images(loaded, data, n=64):
    """Up to `n` [1, H, W, 3] images of the training split of `data` (the run's split
    seed), drawn round-robin across classes so int8 ranges see every class."""
    cfg = loaded.config
    splits = load_data(os.path.expanduser(os.fspath(data)), image_size=loaded.input,
                       task=loaded.task, class_names=loaded.class_names or None,
                       seed=cfg.get("seed", 0), val_split=cfg.get("val_split", 0.2),
                       test_split=cfg.get("test_split", 0.0), verbose=False)
    labels = splits.train_labels
    # A label's bytes: one stratum per distinct label, whatever its shape (a one-hot
    # row, a detection's object rows, a mask's path).
    strata = ([np.asarray(row).tobytes() for row in labels] if loaded.task.has_classes
              else [0] * len(labels))
    chosen = stratified_sample(strata, n, seed=cfg.get("seed", 0))
    dataset = make_dataset([splits.train_files[i] for i in chosen], labels[chosen],
                           image_size=loaded.input.size, batch_size=1, training=False,
                           task=loaded.task, num_classes=len(splits.class_names))
    return [images.numpy() for images, _ in dataset]


