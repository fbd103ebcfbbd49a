"""The `Task` base class: what every task type decides, with the defaults.

A `Task` owns what differs between task types: label encoding, the output layer's
width and activation, loss and metrics, turning outputs into per-class probabilities
and predicted labels, scoring, temperature calibration, averaging (ensembles, TTA),
the parity check of `export --check`; and, as hooks, how a source's labels are read,
checked and paired with images (`read_files`, `check_files`, `source_labels`,
`array_labels`, `read_tensors`), how the one pipeline decodes, augments and encodes
them (`decode_label`, `augment_example`, `encode_label`), the model on top of the
backbone (`build_model`), what reports show (`caption`, `picture`, `summary_metrics`,
`per_class_columns`), `predict --out` files, the `scan` command and what an exported
.tflite's metadata says of its output (`tflite_output`). Every command asks
the task; none branches on a task name. The defaults here are a classifier's.

    task = get_task("binary")
    y = task.encode(["cat", "dog"], ("cat", "dog"))       # [[0.], [1.]]
    report = task.score(outputs, y, ("cat", "dog"))       # accuracy, confusion matrix ...

Outputs are what a transferkit model returns: softmax probabilities (multiclass), one
sigmoid column (binary), one sigmoid per class (multilabel), raw values (regression)
or per-pixel scores (segmentation). Labels are the encoded float rows `encode` returns,
in the same layout.
"""

import numpy as np
import tensorflow as tf
from scipy.optimize import minimize_scalar

from transferkit.core.errors import ConfigError, DataError
from transferkit.core.task_registry import EPSILON, get_task, task_names
from transferkit.data import sources
from transferkit.data.augment import augment_image
from transferkit.data.files import list_source
from transferkit.data.scan import scan, with_problems
from transferkit.tasks.outputs import TfliteOutput
from transferkit.models.builder import build_model

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
    caches_features = True  # phase 1 may train on one cached feature tensor per image
    losses = ()  # loss choices `with_loss` accepts (empty: the task has one loss)
    # What `format_report` prints: the scalar metrics of `score`'s report, in order
    # (those present), and the per-class columns as (report key, header) pairs.
    summary_metrics = ()
    per_class_columns = (("precision", "precision"), ("recall", "recall"), ("f1", "f1"),
                         ("support", "support"))
    writes_predictions = False  # `predict --out` writes files per image (masks)
    # Whether a mirrored image's outputs, mapped back by `unflip`, predict the original's:
    # then flip TTA may be chosen at the end of training (`app.train`). A task whose
    # outputs name left and right (e.g. box coordinates) sets it False.
    flip_tta = True
    adds_classes = False  # add-class may grow its output layer (one unit per class)
    box_output = False  # outputs end in a normalised xyxy box: TTA un-mirrors it
    # The output layer is one softmax over the classes, so its pre-activation are logits
    # the energy novelty score can take (`models.novelty.head_logits`).
    softmax_logits = False
    # The default input side against the backbone's own (`models.resolve_input`).
    input_scale = 1.0

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
                          f"to tasks {[t for t in task_names() if get_task(t).losses]}. "
                          f"Received: loss={loss!r}")

    def with_box_weight(self, weight):
        """This task with `weight` on a box loss (tasks without a box: itself)."""
        return self

    def with_detection(self, config):
        """This task with a dense box head's settings (a `models.detection.
        DetectionConfig`; tasks without one: itself)."""
        return self

    def bind(self, model_config):
        """This task for the model `model_config` (a `models.ModelConfig`) describes:
        a dense task's target encoder assigns objects to that model's grid of
        locations. Default: itself (labels do not depend on the model)."""
        return self

    def settings(self):
        """What a saved model's metadata keeps of this task beyond its name (JSON-able;
        default none): e.g. detection's post-processing settings."""
        return {}

    def with_settings(self, settings):
        """This task with `settings` (what `settings` wrote) applied: default itself."""
        return self

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

    def class_weight(self, labels, num_classes=None):
        """Keras `class_weight` from encoded training labels (sklearn's "balanced");
        num_classes: how many classes the weights cover (default: the labels')."""
        raise DataError(f"class_weights=True needs task 'multiclass' or 'binary' (Keras "
                        f"applies class_weight to single-label targets). Received: "
                        f"task={self.name!r}")

    # --- the model -------------------------------------------------------------------

    def matches_output(self, model):
        """Whether `model`'s output is this task's kind (its output layer's activation
        and shape): how a model saved without metadata finds its task. Registered tasks
        are asked in registration order (`core.task_registry.task_for_model`)."""
        return False

    def build_model(self, config, num_outputs, *, image_size=None, trusted=False):
        """This task's model as `config` (a `models.ModelConfig`) describes it: by
        default a head (`config.head`) on the pooled features (`models.build_model`).
        image_size: an InputSpec (default: the config's; `build_model`'s input_shape).
        trusted: load a .keras weights file without Keras safe mode (`build_model`'s
        safe_mode=False)."""
        return build_model(config.backbone, num_outputs, task=self,
                           weights=config.weights_arg(),
                           input_shape=image_size or config.input_spec(self),
                           head=config.head, safe_mode=not trusted,
                           backbone_kwargs=dict(config.backbone_kwargs))

    # --- data: how a source's labels are read, paired with images and fed ------------

    def read_files(self, source, *, scanned=True, follow_links=False):
        """(paths, raw labels, listing problems, class names the source gives or None)
        of a file source: a folder of class subfolders or a CSV of `path,label` rows
        (`data.files.list_source`)."""
        return (*list_source(source, scanned=scanned, follow_links=follow_links), None)

    def check_files(self, paths, labels, *, scanned=True, splits=None, problems=(),
                    class_names=None, workers=None, normalized_dir=None):
        """(ScanReport or None, {path: file to decode} of the usable examples, the
        classes their labels hold). scanned: run the health scan (`data.scan.scan`,
        counting classes; `splits` finds duplicates across splits), adding the listing
        `problems`; else every path is kept (None for the report)."""
        if not scanned:
            return None, {p: p for p in paths}, self._classes_of(labels)
        report = with_problems(scan(paths, labels=labels if self.has_classes else None,
                                    splits=splits, workers=workers,
                                    normalized_dir=normalized_dir), problems)
        kept = report.decode_paths
        return report, kept, self._classes_of(
            lab for p, lab in zip(paths, labels) if p in kept)

    def _classes_of(self, labels):
        return {c for lab in labels for c in self.label_parts(lab)}

    def source_labels(self, labels, class_names):
        """A file source's raw labels as the pipeline reads them and `DataSplits`
        keeps them (`*_labels`): the encoded rows."""
        return self.encode(labels, class_names)

    def array_labels(self, x, y, class_names=None):
        """(class names, strata, labels) of an (x, y) arrays source: y as class
        indices, one-/multi-hot rows or targets; the labels encoded."""
        return sources.array_classes(self, y, class_names)

    def read_tensors(self, source, *, data_dir, val_split, test_split, seed, class_names,
                     class_weights):
        """({split: dataset of (image, raw label)}, class names, examples per split or
        None, class-weight basis of the training split or None) of a tf.data.Dataset of
        (image, label) or a "tfds:NAME[:SPLIT]" source (its supervised keys)."""
        return sources.class_tensors(self, source, data_dir=data_dir, val_split=val_split,
                                     test_split=test_split, seed=seed,
                                     class_names=class_names, class_weights=class_weights)

    def check_augment(self, config):
        """Raise DataError for an AugmentConfig this task's labels cannot take
        (default: every one works)."""

    def decode_label(self, label, image_size, num_classes=None):
        """One raw label in the pipeline (a tensor, before the cache): encoded rows pass
        through as float32; a class index (tensor sources) becomes one-hot."""
        if (self.single_label and num_classes and self.output_units(num_classes) > 1
                and label.shape.rank == 0):
            return tf.one_hot(tf.cast(label, tf.int32), num_classes)
        label = tf.cast(label, tf.float32)
        return label[None] if label.shape.rank == 0 else label

    def augment_example(self, image, label, seed, config):
        """One training example augmented (`data.augment`): the image; the label stays."""
        return augment_image(image, seed, config), label

    def encode_label(self, label, num_classes=None):
        """A decoded (and augmented) label as the model's target (default: as is)."""
        return label

    def label_encoding(self):
        """What, beyond the raw labels, decides the targets `encode_label` makes and
        the feature cache stores (a short string in its key): default "" (nothing)."""
        return ""

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

    def unflip(self, outputs):
        """Outputs of horizontally mirrored images mapped back onto the originals, to
        average with theirs (flip TTA), as `with_tta`'s ViewMean does: by default as
        they are (one row per image); a trailing xyxy box (`box_output`) spans
        1 - xmax .. 1 - xmin."""
        out = np.array(outputs, dtype=np.float64)
        if self.box_output:
            xmin, xmax = out[..., -4].copy(), out[..., -2].copy()
            out[..., -4], out[..., -2] = 1.0 - xmax, 1.0 - xmin
        return out

    def novelty_ids(self, labels):
        """Class id per training image for the novelty statistics (class means), or
        None where a novelty score does not apply (no single class per image)."""
        return None

    def single_label_ids(self, labels):
        """Class id per image of encoded `labels`, for tasks with one class per image;
        others refuse (what confident learning needs, see `evaluate --label-issues`)."""
        raise ConfigError(f"Label issues need one class per image (multiclass or "
                          f"binary). Received: a {self.name} model.")

    def describe(self, outputs_row, class_names, top_k=3):
        """One example's prediction as JSON-able {"label": ..., "scores": [...]}."""
        raise NotImplementedError

    def score(self, outputs, labels, class_names=()):
        """Metrics of `outputs` against encoded `labels`, as a JSON-able report dict."""
        raise NotImplementedError

    def describe_file(self, outputs_row, class_names, top_k, path):
        """`describe` of the prediction for the image file at `path` (`predict`): by
        default the file plays no part."""
        return self.describe(outputs_row, class_names, top_k)

    def prediction_line(self, row):
        """One line of `predict`'s text output for a `describe_file` row (default: the
        top classes and their probabilities, or the predicted values)."""
        return ", ".join(f"{s['class']} {s['probability']:.3f}" if isinstance(s, dict)
                         else f"{s:.4f}" for s in row["scores"])

    def example_losses(self, outputs, labels):
        """Per-example loss, to pick the worst-predicted examples."""
        raise NotImplementedError

    def agreement(self, reference, outputs, tolerance):
        """Fraction of examples on which two models' outputs agree."""
        raise NotImplementedError

    def parity(self, reference, outputs, labels, tolerance):
        """Does `outputs` (an exported artifact's) match `reference` (the source's)?

        ok when the headline metric moves by at most `tolerance` (the export's, see
        `deploy.config.ExportConfig`) and the two agree on at least 1 - `tolerance` of
        the examples.
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

    # --- serving ---------------------------------------------------------------------

    def serving_outputs(self, outputs, class_names):
        """The named outputs of the SavedModel's encoded-image signature, from the
        model's `outputs` tensor (graph ops; batch first in every one, as TF Serving's
        REST rows need). By default a classifier's: `scores` [B, C] per-class
        probabilities, `classes` [B, C] their class names, `label` [B] the top class."""
        scores = self.tf_probabilities(outputs)
        names = tf.constant(_names(class_names, scores.shape[-1]))
        return {"scores": scores, "classes": _per_row(names, scores),
                "label": tf.gather(names, tf.argmax(scores, axis=-1))}

    def tf_probabilities(self, outputs):
        """`probabilities` as graph ops (default: the outputs as float32)."""
        return tf.cast(outputs, tf.float32)

    # --- what people see -------------------------------------------------------------

    def caption(self, row, class_names):
        """A short caption for one label or output row (a mixed label shows its top
        two classes)."""
        described = self.describe(row, class_names, top_k=2)
        label = described["label"]
        if isinstance(label, list):  # several labels
            return " / ".join(label) or "(none)"
        top = described["scores"]
        if top[0]["probability"] < 0.99 and len(top) > 1:  # a soft (mixed) row
            return " / ".join(f"{s['class']} {s['probability']:.2f}" for s in top)
        return label

    def picture(self, image, row):
        """The picture of an example (RGB 0-255 [H, W, 3]) with its label or output
        `row`: by default the image itself (the caption says the rest)."""
        return image

    def compare_caption(self, label_row, output_row, class_names):
        """The caption of an example's label and the model's output side by side (the
        report's worst predictions)."""
        return (f"true {self.caption(label_row, class_names)}\n"
                f"pred {self.caption(output_row, class_names)}")

    def compare_picture(self, image, label_row, output_row):
        """An example's picture with its label and the model's output (the report's
        worst predictions): by default `picture` of the output."""
        return self.picture(image, output_row)

    def check_tta(self, preset):
        """Raise ConfigError for a TTA preset ("flip", "five_crop", "ten_crop") whose
        views this task's outputs cannot be averaged over (default: all work)."""

    def write_predictions(self, outputs, images, paths, out_dir, class_names=()):
        """Write per-image prediction files (`predict --out`); returns a line saying
        what was written. Only tasks with `writes_predictions` have any."""
        raise ConfigError(f"--out writes per-image prediction files, which "
                          f"task={self.name!r} does not have; use --json for its "
                          "predictions.")

    def scan_source(self, source, *, workers=None, follow_links=False):
        """The data health scan (`data.scan.ScanReport`) of a folder of this task's
        training data: by default class subfolders of images."""
        return scan(source, workers=workers, follow_links=follow_links)

    def tflite_output(self, class_names, units):
        """What an exported .tflite's output tensor (of `units` units) is, for its model
        metadata (`tasks.outputs.TfliteOutput`), so MediaPipe's
        ImageClassifier names the classes: by default one score per class, labelled in
        output order (class indices if `class_names` does not fit)."""
        return TfliteOutput("scores", f"Probabilities of the {units} classes (softmax), "
                            "in the order of the labels file.",
                            tuple(_names(class_names, units)))

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



def output_layer(model):
    """(activation name, output rank, units) of `model`'s last layer, looking into
    nested models (the head is one)."""
    out = model
    while getattr(out, "layers", None):  # nested models: their own last layer
        out = out.layers[-1]
    activation = getattr(getattr(out, "activation", None), "__name__", "linear")
    shape = model.output_shape
    return activation, len(shape), shape[-1]


def _names(class_names, n):
    names = [str(c) for c in class_names]
    return names if len(names) == n else [str(i) for i in range(n)]


def _per_row(names, scores):
    """The class names [C] repeated for every example of `scores` [B, ..., C]: [B, C]."""
    return tf.tile(names[None], [tf.shape(scores)[0], 1])


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
