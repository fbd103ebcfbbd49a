"""Classification tasks: one class per image (multiclass, binary) or several
(multilabel), scored per image."""

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import DataError
from transferkit.tasks.outputs import TfliteOutput
from transferkit.tasks.base import (EPSILON, THRESHOLD, Task, _bce, _mean, _names,
                                    _per_class, _per_row, output_layer)


class _SingleLabel(Task):
    """Multiclass and binary: one class per example, scored on C probability columns."""

    headline = "accuracy"
    single_label = True
    summary_metrics = ("accuracy", "top5", "nll", "macro_f1")

    def class_weight(self, labels, num_classes=None):
        ids = self.predicted(labels)
        counts = np.bincount(ids, minlength=self.probabilities(labels[:1]).shape[1])
        present = counts > 0
        weights = np.ones(len(counts))
        weights[present] = counts.sum() / (present.sum() * counts[present])
        # Classes absent from train get weight 1.0: Keras needs every index present.
        return {i: float(w) for i, w in enumerate(weights)}

    def predicted(self, outputs):
        """Predicted class index per example."""
        return self.probabilities(outputs).argmax(axis=1)

    def describe(self, outputs_row, class_names, top_k=3):
        probs = self.probabilities(np.asarray(outputs_row)[None])[0]
        names = _names(class_names, len(probs))
        top = np.argsort(probs, kind="stable")[::-1][:max(1, top_k)]
        return {"label": names[int(probs.argmax())],
                "scores": [{"class": names[i], "probability": float(probs[i])}
                           for i in top]}

    def score(self, outputs, labels, class_names=(), top_k=(5,)):
        probs = self.probabilities(outputs)
        true, pred = self.predicted(labels), probs.argmax(axis=1)
        num = probs.shape[1]
        matrix = np.zeros((num, num), dtype=np.int64)
        np.add.at(matrix, (true, pred), 1)
        out = {"num_images": int(len(true)), "accuracy": _mean(pred == true),
               "nll": self.nll(outputs, labels)}
        for k in top_k:
            if 1 < k < num:
                ranks = (probs > probs[np.arange(len(true)), true][:, None]).sum(axis=1)
                out[f"top{k}"] = _mean(ranks < k)
        out.update(_per_class(np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1),
                              _names(class_names, num)))
        out["confusion_matrix"] = matrix.tolist()
        return out

    def example_losses(self, outputs, labels):
        probs = self.probabilities(outputs)
        picked = probs[np.arange(len(probs)), self.predicted(labels)]
        return -np.log(np.clip(picked, EPSILON, 1.0))

    def nll(self, outputs, labels):
        return float(np.mean(self.example_losses(outputs, labels))) if len(outputs) else 0.0

    def agreement(self, reference, outputs, tolerance):
        return _mean(self.predicted(reference) == self.predicted(outputs))

    def single_label_ids(self, labels):
        return self.predicted(labels)

    def novelty_ids(self, labels):
        return self.predicted(labels)


class Multiclass(_SingleLabel):
    name, activation, calibration, min_classes = "multiclass", "softmax", "softmax", 2
    adds_classes = True
    softmax_logits = True

    def matches_output(self, model):
        activation, rank, _ = output_layer(model)
        return rank == 2 and activation == "softmax"

    def loss(self, label_smoothing=0.0):
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def metrics(self, units):
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if units > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
        return metrics


class Binary(_SingleLabel):
    name, activation, calibration = "binary", "sigmoid", "sigmoid"
    min_classes = max_classes = 2

    def matches_output(self, model):
        return output_layer(model)[:3] == ("sigmoid", 2, 1)

    def _encode_ids(self, rows, num_classes):
        if any(len(r) != 1 or r[0] not in (0, 1) for r in rows):
            raise DataError("task='binary' needs labels 0 or 1 (or one of two class "
                            f"names). Received: {rows[:3]}...")
        return np.asarray(rows, dtype=np.float32).reshape(-1, 1)

    def output_units(self, num_classes=None):
        return 1  # one sigmoid unit: P(second class)

    def probabilities(self, outputs):
        p = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)[:, :1]
        return np.hstack([1.0 - p, p])

    def tflite_output(self, class_names, units):
        """One sigmoid unit: the score of the second class, its one label (a labels
        file must match the output's width); below THRESHOLD the image is the first."""
        negative, positive = _names(class_names, 2)
        return TfliteOutput("scores", f"Probability that the image is {positive!r} "
                            f"(sigmoid); below {THRESHOLD} it is {negative!r}.", (positive,))

    def tf_probabilities(self, outputs):
        p = tf.cast(outputs, tf.float32)[:, :1]
        return tf.concat([1.0 - p, p], axis=-1)

    def loss(self, label_smoothing=0.0):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def metrics(self, units):
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]


class Multilabel(Task):
    """Any number of classes per example; each output an independent sigmoid."""

    name, activation, calibration, headline = "multilabel", "sigmoid", "sigmoid", "accuracy"
    adds_classes = True
    min_classes = 1
    summary_metrics = ("accuracy", "exact_match", "nll", "macro_f1")

    def matches_output(self, model):
        activation, rank, units = output_layer(model)
        return rank == 2 and activation == "sigmoid" and units > 1

    def label_parts(self, label):
        return [p for p in str(label).split("|") if p]

    def stratum(self, raw_labels):
        # Exact label sets are often unique: stratify on each row's rarest label.
        parts = [self.label_parts(lab) for lab in raw_labels]
        freq = {}
        for p in parts:
            for c in p:
                freq[c] = freq.get(c, 0) + 1
        return [min(p, key=lambda c: (freq[c], c)) if p else "" for p in parts]

    def loss(self, label_smoothing=0.0):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def metrics(self, units):
        return [keras.metrics.BinaryAccuracy(name="accuracy"),
                keras.metrics.AUC(name="auc", multi_label=True, num_labels=units)]

    def tflite_output(self, class_names, units):
        """Independent sigmoid scores; the score threshold makes MediaPipe report the
        classes an image has (those above THRESHOLD), as `describe`'s label does."""
        return TfliteOutput("scores", f"Independent probability of each of the {units} "
                            f"classes (sigmoid); an image has the classes scoring above "
                            f"{THRESHOLD}.", tuple(_names(class_names, units)),
                            score_threshold=THRESHOLD)

    def predicted(self, outputs):
        """Multi-hot predictions [N, C]: outputs above THRESHOLD."""
        return np.asarray(outputs, dtype=np.float64) > THRESHOLD

    def serving_outputs(self, outputs, class_names):
        """`scores` [B, C], `classes` [B, C], and `label` [B]: the classes above
        THRESHOLD joined by "|" (a CSV label's form; "" for none)."""
        scores = tf.cast(outputs, tf.float32)
        names = _per_row(tf.constant(_names(class_names, scores.shape[-1])), scores)
        chosen = tf.ragged.boolean_mask(names, scores > THRESHOLD)
        return {"scores": scores, "classes": names,
                "label": tf.strings.reduce_join(chosen, axis=-1, separator="|")}

    def describe(self, outputs_row, class_names, top_k=3):
        probs = np.asarray(outputs_row, dtype=np.float64)
        names = _names(class_names, len(probs))
        top = np.argsort(probs, kind="stable")[::-1][:max(1, top_k)]
        return {"label": [names[i] for i in np.flatnonzero(probs > THRESHOLD)],
                "scores": [{"class": names[i], "probability": float(probs[i])}
                           for i in top]}

    def score(self, outputs, labels, class_names=()):
        pred, true = self.predicted(outputs), np.asarray(labels) > THRESHOLD
        tp = (pred & true).sum(axis=0)
        out = {"num_images": int(len(true)), "accuracy": _mean(pred == true),
               "exact_match": _mean((pred == true).all(axis=1)),
               "nll": self.nll(outputs, labels)}
        out.update(_per_class(tp, pred.sum(axis=0), true.sum(axis=0),
                              _names(class_names, true.shape[1])))
        return out

    def example_losses(self, outputs, labels):
        return _bce(outputs, labels).mean(axis=1)

    def nll(self, outputs, labels):
        return float(np.mean(_bce(outputs, labels))) if len(outputs) else 0.0

    def confidences(self, outputs, labels):
        # Every (example, class) entry is one binary prediction.
        p = np.asarray(outputs, dtype=np.float64).ravel()
        return np.maximum(p, 1 - p), (p > THRESHOLD) == (np.asarray(labels).ravel() > THRESHOLD)

    def agreement(self, reference, outputs, tolerance):
        return _mean((self.predicted(reference) == self.predicted(outputs)).all(axis=1))

