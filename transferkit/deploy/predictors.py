"""One callable per artifact format: images [B, H, W, 3] in, the model's outputs out.

    predict = load_predictor("exports/model_int8.tflite")   # LiteRT's interpreter
    probs = predict(images)
"""

import os

import numpy as np
import tensorflow as tf

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.models.saving import load_model


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


