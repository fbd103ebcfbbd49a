"""One callable per artifact format: images [B, H, W, 3] in, the model's outputs out.

    predict = load_predictor("exports/model_int8.tflite")   # LiteRT's interpreter
    probs = predict(images)

A detector's .tflite returns its own detections (non-max suppression in its graph), as
the model's output layout with one row per detection (`tasks.outputs.
detections_as_outputs`), so the task's post-processing reads them as they are;
`load_predictor(path).detections(images)` gives the file's four outputs.
"""

import os
import zipfile

import numpy as np
import tensorflow as tf

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.deploy.tflite_metadata import LABELS_FILE
from transferkit.models.saving import load_model
from transferkit.tasks.outputs import DETECTION_OUTPUTS, detections_as_outputs



@renamed(**TRUSTED)
def load_predictor(path, *, safe_mode=True):
    """A callable numpy images [B, H, W, 3] -> probabilities, for any artifact."""
    path = os.fspath(path)
    if path.endswith(".tflite"):
        return _TFLitePredictor(path)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        # Keep the loaded object alive: `serve` alone does not own the variables.
        saved = tf.saved_model.load(path)
        return lambda images: saved.serve(tf.constant(images, tf.float32)).numpy()
    if path.endswith(".keras"):
        return load_model(path, safe_mode=safe_mode, compile=False).predict_on_batch
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
    reallocate on every call. A file built for batch 1 (a detector's: MediaPipe's
    ObjectDetector outputs) runs image by image. A detector's four outputs
    (`tasks.outputs.DETECTION_OUTPUTS`) come back in the model's dense layout
    (`detections_as_outputs`: one row per detection), which the task's
    post-processing reads as the file's own detections; `detections` gives them as
    they are."""

    MAX_SIZES = 4

    def __init__(self, path):
        self.path = os.fspath(path)
        self.spare = tflite_interpreter(self.path)  # not yet sized for a batch
        details = self.spare.get_input_details()[0]
        self.input = details["index"]
        signature = details.get("shape_signature", details["shape"])
        self.fixed_batch = int(signature[0]) if int(signature[0]) > 0 else None
        by_name = _signature_outputs(self.spare)
        self.num_classes = None
        if set(DETECTION_OUTPUTS) <= set(by_name):
            self.detection_outputs = {n: by_name[n] for n in DETECTION_OUTPUTS}
            self.num_classes = len(_labels(self.path))
            self.output, self.novelty_output = None, None
        else:
            self.detection_outputs = None
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

    def _run(self, images, indices):
        """[output `i` [B, ...] for i in `indices`] of the file on `images`; a file
        built for one batch size runs its batches of that size one after the other."""
        images = np.asarray(images, dtype=np.float32)
        step = self.fixed_batch or max(len(images), 1)
        parts = []
        for start in range(0, len(images), step):
            batch = images[start:start + step]
            interpreter = self._interpreter(batch.shape)
            interpreter.set_tensor(self.input, batch)
            interpreter.invoke()
            parts.append([interpreter.get_tensor(i).copy() for i in indices])
        return [np.concatenate(column) for column in zip(*parts)]

    def __call__(self, images):
        if self.detection_outputs is not None:
            return detections_as_outputs(self.detections(images), self.num_classes)
        return self._run(images, [self.output])[0]

    def detections(self, images):
        """A detector file's outputs {`DETECTION_OUTPUTS` name: [B, ...]} as it
        returns them, image by image."""
        if self.detection_outputs is None:
            raise TransferkitError(f"{self.path} has no detection outputs "
                                   f"{list(DETECTION_OUTPUTS)}.")
        return dict(zip(self.detection_outputs, self._run(
            images, list(self.detection_outputs.values()))))

    def novelty(self, images):
        """The file's novelty output [B] (a second output; see `_tflite_source`)."""
        if self.novelty_output is None:
            raise TransferkitError(f"{self.path} has no novelty output; export it again "
                                   "from a model with a novelty score.")
        return self._run(images, [self.novelty_output])[0].reshape(-1)

    predict_on_batch = __call__  # as a Keras model's: evaluate and predict call this


def _signature_outputs(interpreter):
    """{output name: tensor index} over the file's signatures ({} without any)."""
    found = {}
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        found.update({name: d["index"] for name, d in runner.get_output_details().items()})
    return found


def _labels(path):
    """The labels file zip-appended to a .tflite (`tflite_metadata`); TransferkitError
    when it has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(LABELS_FILE).decode("utf-8")
    except (zipfile.BadZipFile, KeyError):
        raise TransferkitError(f"{path} has no {LABELS_FILE} inside: export it with "
                               "transferkit, which writes the class names into the "
                               "file.") from None
    return [line for line in text.splitlines() if line]
