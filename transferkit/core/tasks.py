"""One object per task type; every command asks it and none branches on a task name.

A `Task` owns what differs between multiclass, binary, multilabel and regression:
label encoding, the output layer's width and activation, loss and metrics, turning
outputs into per-class probabilities and predicted labels, scoring, temperature
calibration, averaging (ensembles, TTA) and the parity check of `export --check`.

    task = get_task("binary")
    y = task.encode(["cat", "dog"], ("cat", "dog"))       # [[0.], [1.]]
    report = task.score(outputs, y, ("cat", "dog"))       # accuracy, confusion matrix ...

Outputs are what a transferkit model returns: softmax probabilities (multiclass), one
sigmoid column (binary), one sigmoid per class (multilabel) or raw values (regression).
Labels are the encoded float rows `encode` returns, in the same layout.
"""

import keras
import numpy as np
from scipy.optimize import minimize_scalar

from transferkit.core.errors import ConfigError, DataError, check_choice

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] before any log
THRESHOLD = 0.5  # a sigmoid output above it predicts the class


class Task:
    """What a task type decides. Subclasses set the class attributes below."""

    name = ""
    activation = ""  # of the output layer
    headline = ""  # the metric evaluate prints first and export --check compares
    higher_is_better = True
    calibration = None  # "softmax" or "sigmoid": how a temperature rescales outputs
    single_label = False  # one class per example: class weights and stratified splits
    has_classes = True  # labels name classes (not regression targets)
    min_classes, max_classes = 0, None
    dense = False  # labels and outputs are per pixel ([N, H, W, C]), not per example
    caches_features = True  # phase 1 may train on one cached feature tensor per image
    losses = ()  # loss choices `with_loss` accepts (empty: the task has one loss)

    def __repr__(self):
        return f"get_task({self.name!r})"

    # --- labels ----------------------------------------------------------------------

    def label_parts(self, label):
        """The class names a raw label string holds ("a|b" holds two)."""
        parts = [p for p in str(label).split("|") if p]
        if len(parts) != 1:
            raise DataError(f"label {label!r} holds {len(parts)} classes but "
                            f"task={self.name!r}; use task='multilabel' for 'a|b' labels.")
        return parts

    def class_names(self, found, given=None, where="the data"):
        """The class order: `given` (checked to cover `found`), else `found` sorted."""
        names = tuple(str(n) for n in given) if given is not None else tuple(sorted(found))
        missing = sorted(set(found) - set(names))
        if missing:
            raise DataError(f"class_names={names} lacks classes found in the data: {missing}")
        n = len(names)
        if n < self.min_classes or (self.max_classes is not None and n > self.max_classes):
            need = (f"exactly {self.max_classes}" if self.max_classes == self.min_classes
                    else f"at least {self.min_classes}")
            raise DataError(f"{where}: found {n} class(es) {list(names)}; task={self.name!r} "
                            f"needs {need}. For a folder source, put each class's images "
                            "in its own subfolder.")
        return names

    def encode(self, raw, class_names):
        """Raw labels (names, "a|b", class indices, or numbers) -> float32 [N, units]."""
        index = {name: i for i, name in enumerate(class_names)}
        rows = []
        for r in raw:
            items = self.label_parts(r) if isinstance(r, str) else np.atleast_1d(r)
            try:
                rows.append([index[c] if isinstance(c, str) else int(c) for c in items])
            except KeyError as error:
                raise DataError(f"label {r!r} names class {error.args[0]!r}, which is not "
                                f"one of {list(class_names)}.") from None
        return self._encode_ids(rows, len(class_names))

    def _encode_ids(self, rows, num_classes):
        out = np.zeros((len(rows), num_classes), dtype=np.float32)
        for row, cols in enumerate(rows):
            if any(not 0 <= c < num_classes for c in cols):
                raise DataError(f"class index {cols} is outside 0..{num_classes - 1}.")
            out[row, cols] = 1.0
        return out

    def stratum(self, raw_labels):
        """What a split stratifies on, per example (default: the label itself)."""
        return [str(r) for r in raw_labels]

    def output_activation(self, units):
        """The output layer's activation for a head of `units` units."""
        return self.activation

    def with_loss(self, loss):
        """This task with loss `loss` (one of `losses`; tasks with one loss: itself)."""
        raise ConfigError(f"task={self.name!r} has a single loss; `loss` choices apply "
                          f"to tasks {[t for t, v in TASKS.items() if v.losses]}. "
                          f"Received: loss={loss!r}")

    def output_units(self, num_classes):
        """Width of the output layer for `num_classes` classes (or regression targets)."""
        if not num_classes or int(num_classes) < 1:
            raise ConfigError(f"The `num_classes` argument should be >= 1 for "
                              f"task={self.name!r}. Received: num_classes={num_classes!r}")
        return int(num_classes)

    def apply_class_weight(self, class_weight):
        """(task, Keras `class_weight`) to train with `class_weight` ({index: weight} or
        None): by default this task and the weights for Keras's `fit`."""
        return self, class_weight

    def class_weight(self, labels):
        """Keras `class_weight` from encoded training labels (sklearn's "balanced")."""
        raise DataError(f"class_weights=True needs task 'multiclass' or 'binary' (Keras "
                        f"applies class_weight to single-label targets). Received: "
                        f"task={self.name!r}")

    # --- training --------------------------------------------------------------------

    def loss(self, label_smoothing=0.0):
        raise NotImplementedError

    def metrics(self, units):
        raise NotImplementedError

    # --- outputs ---------------------------------------------------------------------

    def probabilities(self, outputs):
        """Per-class scores [N, C] (binary: two columns, not-class then class)."""
        return np.asarray(outputs, dtype=np.float64)

    def average(self, outputs):
        """The ensemble (or TTA) prediction: the mean of several outputs arrays."""
        arrays = [np.asarray(o, dtype=np.float64) for o in outputs]
        shapes = {a.shape for a in arrays}
        if not arrays or len(shapes) != 1:
            raise ConfigError(f"Ensemble members must predict the same shape; received "
                              f"shapes {sorted(shapes)}.")
        return np.mean(arrays, axis=0)

    def describe(self, outputs_row, class_names, top_k=3):
        """One example's prediction as JSON-able {"label": ..., "scores": [...]}."""
        raise NotImplementedError

    def score(self, outputs, labels, class_names=()):
        """Metrics of `outputs` against encoded `labels`, as a JSON-able report dict."""
        raise NotImplementedError

    def example_losses(self, outputs, labels):
        """Per-example loss, to pick the worst-predicted examples."""
        raise NotImplementedError

    def agreement(self, reference, outputs, tolerance):
        """Fraction of examples on which two models' outputs agree."""
        raise NotImplementedError

    def parity(self, reference, outputs, labels, tolerance=0.01):
        """Does `outputs` (an exported artifact's) match `reference` (the source's)?

        ok when the headline metric moves by at most `tolerance` and the two agree on
        at least 1 - `tolerance` of the examples.
        """
        ref = self.score(reference, labels)[self.headline]
        got = self.score(outputs, labels)[self.headline]
        agreement = self.agreement(reference, outputs, tolerance)
        diff = float(np.max(np.abs(np.asarray(outputs, np.float64)
                                   - np.asarray(reference, np.float64)), initial=0.0))
        ok = (self._metric_moved(ref, got) <= tolerance) and agreement >= 1 - tolerance
        return {self.headline: got, "agreement": agreement, "max_abs_diff": diff,
                "ok": bool(ok)}

    def _metric_moved(self, ref, got):
        return abs(got - ref)

    # --- calibration -----------------------------------------------------------------

    def apply_temperature(self, outputs, temperature):
        """Outputs with their logits divided by `temperature` (argmax unchanged)."""
        logits = self._logits(outputs) / float(temperature)
        if self.calibration == "softmax":
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            return exp / exp.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-logits))

    def fit_temperature(self, outputs, labels, bounds=(0.05, 20.0)):
        """The temperature in `bounds` minimising the NLL of `labels` (Guo et al. 2017).

        A bounded 1-D search on log T (scipy) is exact enough and has no learning rate.
        """
        self.check_calibratable()
        outputs = np.asarray(outputs, dtype=np.float64)
        if len(outputs) == 0:
            raise ConfigError("Temperature scaling needs at least one example.")
        result = minimize_scalar(
            lambda log_t: self.nll(self.apply_temperature(outputs, np.exp(log_t)), labels),
            bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
        return float(np.exp(result.x))

    def nll(self, outputs, labels):
        """Mean negative log-likelihood of `labels` under `outputs`."""
        raise NotImplementedError

    def confidences(self, outputs, labels):
        """(confidence, correct) per prediction, for a reliability diagram."""
        probs = self.probabilities(outputs)
        truth = self.probabilities(labels).argmax(axis=1)
        return probs.max(axis=1), probs.argmax(axis=1) == truth

    def check_calibratable(self):
        if self.calibration is None:
            raise ConfigError(f"Temperature calibration applies to classification tasks; "
                              f"this model's task is {self.name!r}.")

    def _logits(self, outputs):
        self.check_calibratable()
        p = np.clip(np.asarray(outputs, dtype=np.float64), EPSILON, 1.0 - EPSILON)
        return np.log(p) if self.calibration == "softmax" else np.log(p) - np.log1p(-p)


class _SingleLabel(Task):
    """Multiclass and binary: one class per example, scored on C probability columns."""

    headline = "accuracy"
    single_label = True

    def class_weight(self, labels):
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


class Multiclass(_SingleLabel):
    name, activation, calibration, min_classes = "multiclass", "softmax", "softmax", 2

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

    def loss(self, label_smoothing=0.0):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def metrics(self, units):
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]


class Multilabel(Task):
    """Any number of classes per example; each output an independent sigmoid."""

    name, activation, calibration, headline = "multilabel", "sigmoid", "sigmoid", "accuracy"
    min_classes = 1

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

    def predicted(self, outputs):
        """Multi-hot predictions [N, C]: outputs above THRESHOLD."""
        return np.asarray(outputs, dtype=np.float64) > THRESHOLD

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


class Regression(Task):
    """Real-valued targets ("1.5|2" in a CSV for two of them); lower MAE is better."""

    name, activation, headline, higher_is_better = "regression", "linear", "mae", False
    has_classes = False

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

    def describe(self, outputs_row, class_names, top_k=3):
        values = [float(v) for v in np.atleast_1d(outputs_row)]
        return {"label": values if len(values) > 1 else values[0], "scores": values}

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


@keras.saving.register_keras_serializable(package="transferkit")
class SegmentationLoss(keras.losses.Loss):
    """Per-pixel loss over [B, H, W, C] outputs: "crossentropy", "dice" or "both" (sum).

    Dice is the soft Dice of each class over the batch, averaged over classes, so a
    rare class counts as much as the background (Milletari et al. 2016, V-Net). One
    output channel is a sigmoid: binary cross-entropy and the Dice of that channel.
    """

    def __init__(self, mode="crossentropy", label_smoothing=0.0, class_weights=None,
                 name="segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.mode = check_choice("loss", mode, Segmentation.losses)
        self.label_smoothing = float(label_smoothing)
        # Per-class weights (rare classes count more): each pixel's cross-entropy is
        # scaled by its true class's weight, and the Dice mean over classes weighted.
        self.class_weights = None if class_weights is None else [
            float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, y_pred.dtype)
        weights = None if self.class_weights is None else ops.convert_to_tensor(
            self.class_weights, dtype=y_pred.dtype)
        per_pixel = 0.0
        if self.mode in ("crossentropy", "both"):
            fn = (keras.losses.binary_crossentropy if y_pred.shape[-1] == 1
                  else keras.losses.categorical_crossentropy)
            per_pixel = fn(y_true, y_pred, label_smoothing=self.label_smoothing)
            if weights is not None:
                per_pixel = per_pixel * self._pixel_weights(y_true, weights)
            per_pixel = ops.mean(per_pixel, axis=(1, 2))  # [B]
        if self.mode in ("dice", "both"):
            inter = ops.sum(y_true * y_pred, axis=(0, 1, 2))
            total = ops.sum(y_true + y_pred, axis=(0, 1, 2))
            dice = (2.0 * inter + 1.0) / (total + 1.0)
            if weights is not None and y_pred.shape[-1] > 1:
                dice = 1.0 - ops.sum(dice * weights) / ops.sum(weights)
            else:
                dice = 1.0 - ops.mean(dice)
            per_pixel = per_pixel + dice * ops.ones_like(y_pred[:, 0, 0, 0])
        return per_pixel

    @staticmethod
    def _pixel_weights(y_true, weights):
        """Each pixel's weight: its true class's ([B, H, W])."""
        ops = keras.ops
        if y_true.shape[-1] == 1:  # one sigmoid channel: classes 0 and 1
            return weights[0] + (weights[1] - weights[0]) * y_true[..., 0]
        return ops.sum(y_true * weights, axis=-1)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode,
                "label_smoothing": self.label_smoothing,
                "class_weights": self.class_weights}


class Segmentation(Task):
    """Per-pixel classes: masks [N, H, W] of class indices in, [N, H, W, C] softmax out
    (one sigmoid channel for a single foreground class). Scored by mean IoU."""

    name, activation, headline = "segmentation", "softmax", "miou"
    has_classes, min_classes = True, 1
    dense = True
    # The decoder reads the encoder's skip tensors too, not one feature tensor: phase 1
    # runs live on the frozen encoder.
    caches_features = False
    losses = ("crossentropy", "dice", "both")

    def __init__(self, loss="crossentropy", class_weights=None):
        self.loss_name = check_choice("loss", loss, self.losses)
        self.class_weights = None if class_weights is None else tuple(class_weights)

    def with_loss(self, loss):
        """This task with loss `loss` ("crossentropy", "dice" or "both")."""
        return self if loss == self.loss_name else Segmentation(loss, self.class_weights)

    def apply_class_weight(self, class_weight):
        """Keras's `class_weight` weighs whole examples and refuses [H, W] targets: the
        weights go into this task's loss instead (see `SegmentationLoss`)."""
        if not class_weight:
            return self, None
        weights = [float(class_weight.get(i, 1.0)) for i in range(max(class_weight) + 1)]
        return Segmentation(self.loss_name, weights), None

    def class_weight(self, labels):
        """{class: weight} from training masks' pixel counts (sklearn's "balanced":
        total / (classes present x count); classes absent get 1.0). labels: one-hot
        masks [N, H, W, C], or {class: pixel count}."""
        counts = labels if isinstance(labels, dict) else {
            i: int(c) for i, c in enumerate(self.probabilities(labels).reshape(
                -1, self.probabilities(labels[:1]).shape[-1]).sum(axis=0))}
        present = {i: c for i, c in counts.items() if c > 0}
        total = sum(present.values())
        return {i: (total / (len(present) * c) if c > 0 else 1.0)
                for i, c in sorted(counts.items())}

    def output_activation(self, units):
        return "sigmoid" if units == 1 else "softmax"

    def label_parts(self, label):
        return [str(label)]

    def class_names(self, found, given=None, where="the masks"):
        """`given`, else "0".."K" for the largest class index K found in the masks."""
        if given is not None:
            names = tuple(str(n) for n in given)
            if found and max(int(f) for f in found) >= max(len(names), 2):
                raise DataError(f"{where}: masks hold class index {max(found)} but "
                                f"class_names has {len(names)} entries {list(names)}.")
            return names
        top = max((int(f) for f in found), default=1)
        return tuple(str(i) for i in range(max(top + 1, 2)))

    def encode(self, raw, class_names):
        """Masks [N, H, W] (or [N, H, W, 1]) of class indices -> float32 one-hot
        [N, H, W, C] (C = 1: the 0/1 mask itself); one-hot masks pass through."""
        masks = np.asarray(raw)
        units = self.output_units(len(class_names))
        if masks.ndim == 4 and masks.shape[-1] == units and units > 1:
            return masks.astype(np.float32)
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.ndim != 3:
            raise DataError(f"task='segmentation' needs masks [N, H, W] of class indices "
                            f"(or one-hot [N, H, W, C]); received shape {masks.shape}.")
        ids = masks.astype(np.int64)
        limit = max(len(class_names), 2)
        if ids.size and (ids.min() < 0 or ids.max() >= limit):
            raise DataError(f"mask value {int(ids.max() if ids.max() >= limit else ids.min())}"
                            f" is outside the class range 0..{limit - 1} "
                            f"(class_names={list(class_names)}).")
        if units == 1:
            return ids[..., None].astype(np.float32)
        return np.eye(units, dtype=np.float32)[ids]

    def stratum(self, raw_labels):
        return [""] * len(raw_labels)

    def loss(self, label_smoothing=0.0):
        return SegmentationLoss(self.loss_name, label_smoothing, self.class_weights)

    def metrics(self, units):
        if units == 1:
            return [keras.metrics.BinaryAccuracy(name="pixel_accuracy"),
                    keras.metrics.BinaryIoU(target_class_ids=(0, 1), name="miou")]
        return [keras.metrics.CategoricalAccuracy(name="pixel_accuracy"),
                keras.metrics.OneHotMeanIoU(num_classes=units, name="miou")]

    def probabilities(self, outputs):
        """Per-pixel class scores [N, H, W, C] (one sigmoid channel: two columns)."""
        p = np.asarray(outputs, dtype=np.float64)
        return np.concatenate([1.0 - p, p], axis=-1) if p.shape[-1] == 1 else p

    def predicted(self, outputs):
        """The predicted mask [N, H, W] of class indices."""
        return self.probabilities(outputs).argmax(axis=-1)

    def confusion(self, outputs, labels):
        """Pixel confusion matrix [C, C]: rows true class, columns predicted."""
        num = self.probabilities(np.asarray(outputs)[:1]).shape[-1]
        true, pred = self.predicted(labels).ravel(), self.predicted(outputs).ravel()
        return np.bincount(true * num + pred, minlength=num * num).reshape(num, num)

    def score(self, outputs, labels, class_names=()):
        """Pixel accuracy, per-class IoU, mIoU (over classes present in the truth or
        the prediction) and the pixel confusion matrix."""
        matrix = self.confusion(outputs, labels)
        tp = np.diag(matrix).astype(np.float64)
        union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
        names = _names(class_names, len(tp))
        return {"num_images": int(len(outputs)),
                "pixel_accuracy": float(tp.sum() / max(matrix.sum(), 1)),
                "miou": float(iou[union > 0].mean()) if (union > 0).any() else 0.0,
                "per_class": {n: {"iou": float(i), "support": int(s)}
                              for n, i, s in zip(names, iou, matrix.sum(axis=1))},
                "class_names": names, "confusion_matrix": matrix.tolist()}

    def describe(self, outputs_row, class_names, top_k=3):
        """The classes the predicted mask holds, with the fraction of pixels of each."""
        pred = self.predicted(np.asarray(outputs_row)[None])[0]
        names = _names(class_names, self.probabilities(np.asarray(outputs_row)[None])
                       .shape[-1])
        share = np.bincount(pred.ravel(), minlength=len(names)) / max(pred.size, 1)
        top = np.argsort(share, kind="stable")[::-1][:max(1, top_k)]
        return {"label": [names[i] for i in np.flatnonzero(share)],
                "scores": [{"class": names[i], "probability": float(share[i])}
                           for i in top]}

    def example_losses(self, outputs, labels):
        probs = self.probabilities(outputs)
        picked = np.take_along_axis(probs, self.predicted(labels)[..., None], axis=-1)
        return -np.log(np.clip(picked[..., 0], EPSILON, 1.0)).mean(axis=(1, 2))

    def nll(self, outputs, labels):
        return float(np.mean(self.example_losses(outputs, labels))) if len(outputs) else 0.0

    def agreement(self, reference, outputs, tolerance):
        """Fraction of pixels on which the two predicted masks agree."""
        return _mean(self.predicted(reference) == self.predicted(outputs))


TASKS = {t.name: t for t in (Multiclass(), Binary(), Multilabel(), Regression(),
                             Segmentation())}


def get_task(task):
    """The `Task` named `task` ("multiclass", "binary", "multilabel", "regression",
    "segmentation")."""
    if isinstance(task, Task):
        return task
    return TASKS[check_choice("task", task, TASKS)]


def register_task(task):
    """Add a `Task` instance (e.g. segmentation); a second one with its name raises."""
    if task.name in TASKS:
        raise ConfigError(f"A task named {task.name!r} is already registered.")
    TASKS[task.name] = task
    return task


def _names(class_names, n):
    names = [str(c) for c in class_names]
    return names if len(names) == n else [str(i) for i in range(n)]


def _mean(values):
    values = np.asarray(values)
    return float(values.mean()) if values.size else 0.0


def _bce(outputs, labels):
    p = np.clip(np.asarray(outputs, dtype=np.float64), EPSILON, 1 - EPSILON)
    y = np.asarray(labels, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _per_class(tp, predicted, actual, names):
    """Per-class precision, recall, F1 and support, and their macro-F1."""
    tp, predicted, actual = (np.asarray(a, dtype=np.float64) for a in (tp, predicted, actual))
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=precision + recall > 0)
    return {"per_class": {n: {"precision": float(p), "recall": float(r), "f1": float(f),
                              "support": int(s)}
                          for n, p, r, f, s in zip(names, precision, recall, f1, actual)},
            "macro_f1": float(np.mean(f1)) if len(f1) else 0.0, "class_names": list(names)}
