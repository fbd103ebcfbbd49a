"""Regression: real-valued targets per image."""

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import DataError
from transferkit.tasks.outputs import TfliteOutput
from transferkit.tasks.base import Task, _mean, output_layer


class Regression(Task):
    """Real-valued targets ("1.5|2" in a CSV for two of them); lower MAE is better."""

    name, activation, headline, higher_is_better = "regression", "linear", "mae", False
    has_classes = False
    summary_metrics = ("mae", "rmse", "r2")
    per_class_columns = ()

    def matches_output(self, model):
        # Asked after the classification tasks: any other per-image output is values.
        return output_layer(model)[1] == 2

    def label_parts(self, label):
        return []  # targets, not classes

    def class_names(self, found, given=None, where="the data"):
        return ()

    def encode(self, raw, class_names=()):
        try:
            rows = [[float(v) for v in r.split("|")] if isinstance(r, str)
                    else np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in raw]
            return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
        except ValueError as error:
            raise DataError(f"task='regression' needs numeric targets ('1.5' or '1.5|2' "
                            f"for two): {error}") from None

    def stratum(self, raw_labels):
        return [""] * len(raw_labels)

    def loss(self, label_smoothing=0.0):
        return keras.losses.MeanSquaredError()

    def metrics(self, units):
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def tflite_output(self, class_names, units):
        """The predicted values, unlabelled: not scores of classes, so no labels file
        and no score range (a classifier client has nothing to name)."""
        return TfliteOutput("values", "Predicted regression value(s), one per target.")

    def caption(self, row, class_names):
        return ", ".join(f"{v:.2f}" for v in np.atleast_1d(np.asarray(row, np.float64)))

    def describe(self, outputs_row, class_names, top_k=3):
        values = [float(v) for v in np.atleast_1d(outputs_row)]
        return {"label": values if len(values) > 1 else values[0], "scores": values}

    def serving_outputs(self, outputs, class_names):
        """`values` [B, T]: the predicted targets."""
        return {"values": tf.cast(outputs, tf.float32)}

    def score(self, outputs, labels, class_names=()):
        pred = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
        true = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        err = pred - true
        spread = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
        r2 = 1 - (err ** 2).sum(axis=0) / np.where(spread > 0, spread, np.nan)
        return {"num_images": int(len(true)), "mae": float(np.mean(np.abs(err))),
                "rmse": float(np.sqrt(np.mean(err ** 2))),
                "r2": float(np.nanmean(r2)) if np.isfinite(r2).any() else float("nan")}

    def example_losses(self, outputs, labels):
        err = np.asarray(outputs, np.float64) - np.asarray(labels, np.float64)
        return np.abs(err.reshape(len(err), -1)).mean(axis=1)

    def agreement(self, reference, outputs, tolerance):
        # Within `tolerance` of the reference outputs' own spread (or of 1 if flat).
        reference = np.asarray(reference, np.float64)
        scale = float(np.std(reference)) or 1.0
        close = np.abs(np.asarray(outputs, np.float64) - reference) <= tolerance * scale
        return _mean(close.reshape(len(close), -1).all(axis=1))

    def _metric_moved(self, ref, got):
        return abs(got - ref) / max(abs(ref), 1e-12)  # relative: MAE has units

