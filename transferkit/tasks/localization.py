"""Localization: one object's class and bounding box per image, found on the
backbone's feature maps: detection (`tasks.detection`) with one object per image.

The model is the detection model (`models.detection`): per location of its grid C
class scores and a decoded box, [B, L, C + 4]. The image's prediction is its best
location: the class scores there and its box (`rows` gives them as [N, C + 4], the
layout of the pooled-feature localization this replaces, whose boxes collapsed
towards the whole image once objects were small: mean IoU 0.24 on 12-32 px objects).
Labels are one object row (class index, xmin, ymin, xmax, ymax) per image, the box
normalised (`data.boxes`); the pipeline adds the dense targets of the grid.
Images are resized to the model input without keeping their aspect ratio, so a
normalised box maps back to any image by that image's own width and height.
"""

import keras
import numpy as np

from transferkit.core.errors import DataError
from transferkit.data import boxes as box_data
from transferkit.data.scan import scan, with_problems
from transferkit.models.losses import class_and_box
from transferkit.tasks.base import EPSILON, Task, _mean, _names, output_layer
from transferkit.tasks.boxes import (HIT_IOU, IOU_BINS, PRED_COLOUR, TRUE_COLOUR,
                                     box_ious, draw_boxes, ordered, save_drawing,
                                     upright_image)
from transferkit.tasks.detection import PREDICTORS, Detection
from transferkit.tasks.outputs import TfliteOutput

BOX = 4


class Localization(Detection):
    """One object per image: its class and its box (normalised xyxy), from the best
    location of a dense head. Loss: the detection loss (focal + box_weight x (1 -
    CIoU) at the object's locations). Scored by accuracy, mean box IoU and
    `correct_iou50`, the fraction with the right class and a box at IoU >= 0.5 (the
    headline)."""

    name, headline = "localization", "correct_iou50"
    summary_metrics = ("accuracy", "mean_iou", "correct_iou50", "nll")
    per_class_columns = (("accuracy", "accuracy"), ("mean_iou", "mean IoU"),
                         ("support", "support"))
    max_objects = 1

    # --- labels and the model ----------------------------------------------------------

    def matches_output(self, model):
        """The pooled-feature layout of earlier versions ([B, C + 4], `class_and_box`):
        a dense model without metadata is taken for detection."""
        activation, rank, _ = output_layer(model)
        return rank == 2 and activation == class_and_box.__name__

    def label_parts(self, label):
        if isinstance(label, box_data.BoxLabel):
            return [label.label]
        return [str(label)]

    def stratum(self, raw_labels):
        return [r.label if isinstance(r, box_data.BoxLabel)
                else str(int(np.ravel(r)[0])) for r in raw_labels]

    def encode(self, raw, class_names):
        """BoxLabels or rows (class index, xmin, ymin, xmax, ymax normalised) ->
        float32 object rows [N, 1, 5]."""
        return box_data.encode_boxes(raw, class_names)

    def metrics(self, units):
        wrap = keras.metrics.MeanMetricWrapper
        return [wrap(top_accuracy, name="accuracy"), wrap(top_iou, name="mean_iou"),
                wrap(top_correct_iou50, name="correct_iou50")]

    # --- data ---------------------------------------------------------------------

    def read_files(self, source, *, scanned=True, follow_links=False):
        """Any annotation source detection reads (boxes CSV, Pascal VOC, COCO, YOLO;
        `data.boxes.read_boxes`), one object per image: the raw labels are BoxLabels,
        boxes normalised; the class names those the source declares, if any."""
        return box_data.read_boxes(source, follow_links)

    def check_files(self, paths, labels, *, scanned=True, splits=None, problems=(),
                    class_names=None, workers=None, normalized_dir=None):
        """The image scan (classes counted) plus the box problems of the listing."""
        if not scanned:
            return None, {p: p for p in paths}, self._classes_of(labels)
        report = with_problems(scan(paths, labels=[b.label for b in labels],
                                    splits=splits, workers=workers,
                                    normalized_dir=normalized_dir), problems)
        kept = report.decode_paths
        return report, kept, self._classes_of(
            lab for p, lab in zip(paths, labels) if p in kept)

    def scan_source(self, source, *, workers=None, follow_links=False):
        paths, labels, problems = box_data.list_boxes(source, follow_links)
        return self.check_files(paths, labels, problems=problems, workers=workers)[0]

    def array_labels(self, x, y, class_names=None):
        """y: rows (class index, xmin, ymin, xmax, ymax), the box normalised."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != 1 + BOX or len(y) != len(x):
            raise DataError("task='localization' needs y as rows (class index, xmin, "
                            "ymin, xmax, ymax) [N, 5], the box normalised to [0, 1]; "
                            f"received shape {y.shape} for {len(x)} images.")
        ids = y[:, 0].astype(int)
        names = (tuple(str(n) for n in class_names) if class_names is not None
                 else tuple(str(i) for i in range(int(ids.max()) + 1)))
        return names, ids, self.encode(y, names)

    def read_tensors(self, source, **_):
        raise DataError("task='localization' reads annotation files (a boxes CSV, Pascal "
                        "VOC, COCO or YOLO) or (x, y) arrays; tf.data and TFDS sources "
                        "are not supported.")

    # --- outputs: the best location of each image -------------------------------------

    def rows(self, outputs):
        """Each image's prediction [N, C + 4]: the class scores and box of its best
        location (the highest class score); [N, C + 4] outputs pass as they are."""
        outputs = np.asarray(outputs, dtype=np.float64)
        if outputs.ndim == 2:
            return outputs
        best = outputs[..., :-BOX].max(axis=-1).argmax(axis=-1)
        return outputs[np.arange(len(outputs)), best]

    def truth(self, labels):
        """Labels as rows [N, C + 4]: one-hot class, then the box."""
        labels = np.asarray(labels, dtype=np.float64)
        if labels.ndim == 2:  # a row already
            return labels
        first = labels[:, 0]
        out = np.zeros((len(labels), labels.shape[-1]))
        out[np.arange(len(labels)), first[:, 0].astype(int)] = 1.0
        out[:, -BOX:] = first[:, 1:5]
        return out

    def probabilities(self, outputs):
        """The class scores of each image's best location [N, C]."""
        return self.rows(outputs)[..., :-BOX]

    def boxes(self, outputs):
        """The box of each image's best location [N, 4], normalised xyxy."""
        return ordered(self.rows(outputs)[..., -BOX:])

    def predicted(self, outputs):
        return self.probabilities(outputs).argmax(axis=-1)

    def score(self, outputs, labels, class_names=()):
        """Accuracy, mean box IoU, correct_iou50 (right class, IoU >= 0.5), NLL, per
        class accuracy and mean IoU, the confusion matrix and the IoU histogram."""
        rows, truth = self.rows(outputs), self.truth(labels)
        probs = self.probabilities(rows)
        true, pred = self.predicted(truth), probs.argmax(axis=1)
        iou = box_ious(self.boxes(truth), self.boxes(rows))
        num = probs.shape[1]
        names = _names(class_names, num)
        matrix = np.zeros((num, num), dtype=np.int64)
        np.add.at(matrix, (true, pred), 1)
        counts, _ = np.histogram(iou, bins=IOU_BINS)
        return {"num_images": int(len(true)), "accuracy": _mean(pred == true),
                "mean_iou": _mean(iou),
                "correct_iou50": _mean((pred == true) & (iou >= HIT_IOU)),
                "nll": self.nll(rows, truth),
                "per_class": {n: {"accuracy": _mean(pred[true == i] == i),
                                  "mean_iou": _mean(iou[true == i]),
                                  "support": int((true == i).sum())}
                              for i, n in enumerate(names)},
                "class_names": names, "confusion_matrix": matrix.tolist(),
                "histograms": {"box IoU": {"edges": IOU_BINS.tolist(),
                                           "counts": counts.tolist()}}}

    def example_losses(self, outputs, labels):
        """Class NLL + (1 - box IoU): the worst are wrong or badly boxed."""
        rows, truth = self.rows(outputs), self.truth(labels)
        iou = box_ious(self.boxes(truth), self.boxes(rows))
        return self._class_nll(rows, truth) + (1.0 - iou)

    def _class_nll(self, rows, truth):
        probs = self.probabilities(rows)
        picked = probs[np.arange(len(probs)), self.predicted(truth)]
        return -np.log(np.clip(picked, EPSILON, 1.0))

    def nll(self, outputs, labels):
        """Mean -log of the true class's score at the best location."""
        if not len(outputs):
            return 0.0
        return float(np.mean(self._class_nll(self.rows(outputs), self.truth(labels))))

    def agreement(self, reference, outputs, tolerance):
        """Fraction with the same class and boxes at IoU >= 1 - 5 x tolerance (0.95 at
        the default 0.01) with each other."""
        same = self.predicted(reference) == self.predicted(outputs)
        iou = box_ious(self.boxes(reference), self.boxes(outputs))
        return _mean(same & (iou >= 1.0 - 5.0 * tolerance))

    def parity(self, reference, outputs, labels, tolerance=0.01):
        """The task's parity on the best locations (`Task.parity`, not detection's:
        every artifact returns the dense outputs), plus the two models' mean box IoU
        with each other."""
        out = Task.parity(self, reference, outputs, labels, tolerance)
        out["box_iou"] = _mean(box_ious(self.boxes(reference), self.boxes(outputs)))
        return out

    def describe(self, outputs_row, class_names, top_k=3):
        """{"label", "scores": top classes at the best location, "box_normalized":
        [xmin, ymin, xmax, ymax] in [0, 1]}."""
        row = self.rows(np.asarray(outputs_row, dtype=np.float64)[None])
        probs = self.probabilities(row)[0]
        names = _names(class_names, len(probs))
        top = np.argsort(probs, kind="stable")[::-1][:max(1, top_k)]
        return {"label": names[int(probs.argmax())],
                "scores": [{"class": names[i], "probability": float(probs[i])}
                           for i in top],
                "box_normalized": [float(v) for v in self.boxes(row)[0]]}

    def describe_file(self, outputs_row, class_names, top_k, path):
        """`describe` plus "box": [xmin, ymin, xmax, ymax] in the pixels of the image
        file at `path` (its own width and height)."""
        out = self.describe(outputs_row, class_names, top_k)
        size = box_data.image_size(path)
        if size is not None:
            scale = [size[0], size[1], size[0], size[1]]
            out["box"] = [round(v * s, 2) for v, s in zip(out["box_normalized"], scale)]
        return out

    def prediction_line(self, row):
        return Task.prediction_line(self, row)

    def serving_outputs(self, outputs, class_names):
        """`scores` [B, C] (the class scores at the best location), `classes` [B, C]
        their names, `label` [B] the top class and `box` [B, 4] normalised xyxy."""
        import tensorflow as tf

        outputs = tf.cast(outputs, tf.float32)
        best = tf.argmax(tf.reduce_max(outputs[..., :-BOX], axis=-1), axis=-1)
        row = tf.gather(outputs, best, batch_dims=1)
        scores, box = row[:, :-BOX], row[:, -BOX:]
        names = tf.constant(_names(class_names, scores.shape[-1]))
        return {"scores": scores, "classes": tf.tile(names[None], [tf.shape(scores)[0], 1]),
                "label": tf.gather(names, tf.argmax(scores, axis=-1)),
                "box": tf.concat([tf.minimum(box[:, :2], box[:, 2:]),
                                  tf.maximum(box[:, :2], box[:, 2:])], axis=-1)}

    def tflite_output(self, class_names, units):
        """The dense output [1, L, C + 4]: per location C class scores, then the box
        (normalised xyxy); the image's prediction is its best location. int8 keeps the
        predictors float (`detection.PREDICTORS`): near-tied locations' order moves
        with their rounding, and with it the box."""
        return TfliteOutput("values", f"Per location the scores of the {units - BOX} "
                            "classes, then the box (xmin, ymin, xmax, ymax) normalised; "
                            "the prediction is the location with the highest score.",
                            float_layers=PREDICTORS)

    # --- what people see ------------------------------------------------------------

    def caption(self, row, class_names):
        """A label's class (outputs: `compare_caption`)."""
        names = _names(class_names, max(len(class_names), 1))
        return names[int(np.asarray(row)[0, 0])]

    def compare_caption(self, label_row, output_row, class_names):
        truth = self.truth(np.asarray(label_row)[None])
        names = _names(class_names, truth.shape[-1] - BOX)
        top = self.describe(output_row, class_names, top_k=1)["scores"][0]
        return f"true {names[int(truth[0, :-BOX].argmax())]}\npred {top['class']} " \
               f"{top['probability']:.2f}"

    def picture(self, image, row):
        """The image with the box of a label row drawn."""
        return draw_boxes(image, self.boxes(self.truth(np.asarray(row)[None])),
                          [TRUE_COLOUR])

    def compare_picture(self, image, label_row, output_row):
        """The true box (green) and the predicted one (red) on the image."""
        both = [self.boxes(self.truth(np.asarray(label_row)[None]))[0],
                self.boxes(np.asarray(output_row)[None])[0]]
        return draw_boxes(image, both, [TRUE_COLOUR, PRED_COLOUR])

    def write_predictions(self, outputs, images, paths, out_dir, class_names=()):
        """Each image file at its own size with its predicted box drawn."""
        written = []
        for i, (row, path) in enumerate(zip(outputs, paths)):
            drawn = draw_boxes(upright_image(path, images[i]),
                               self.boxes(np.asarray(row)[None]), [PRED_COLOUR])
            written.append(save_drawing(drawn, out_dir, i, path, "box"))
        return f"boxes: {len(written)} images with their predicted box in {out_dir}"


# --- training metrics on the best location (Keras ops) ------------------------------

def _best(y_true, y_pred):
    """(true class [B], predicted class [B], IoU of the best location's box with the
    object's [B]) of localization targets and outputs."""
    from transferkit.models.detection import paired_iou

    ops = keras.ops
    y_pred = ops.cast(y_pred, "float32")
    classes = y_pred.shape[-1] - BOX
    best = ops.argmax(ops.max(y_pred[..., :classes], axis=-1), axis=-1)
    row = ops.take_along_axis(y_pred, best[:, None, None], axis=1)[:, 0]
    obj = ops.cast(y_true[:, 0], "float32")  # the object row
    box = ops.concatenate([ops.minimum(row[:, -BOX:-2], row[:, -2:]),
                           ops.maximum(row[:, -BOX:-2], row[:, -2:])], axis=-1)
    iou = paired_iou(obj[:, 1:5], box)
    return ops.cast(obj[:, 0], "int32"), ops.cast(ops.argmax(row[:, :classes], axis=-1),
                                                  "int32"), iou


@keras.saving.register_keras_serializable(package="transferkit")
def top_accuracy(y_true, y_pred):
    """1 where the best location's class is the object's."""
    true, pred, _ = _best(y_true, y_pred)
    return keras.ops.cast(keras.ops.equal(true, pred), "float32")


@keras.saving.register_keras_serializable(package="transferkit")
def top_iou(y_true, y_pred):
    """IoU of the best location's box with the object's."""
    return _best(y_true, y_pred)[2]


@keras.saving.register_keras_serializable(package="transferkit")
def top_correct_iou50(y_true, y_pred):
    """1 where the best location has the right class and a box at IoU >= 0.5."""
    true, pred, iou = _best(y_true, y_pred)
    return keras.ops.cast(keras.ops.equal(true, pred) & (iou >= HIT_IOU), "float32")
