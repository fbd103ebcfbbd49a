"""Localization: one object's class and bounding box per image, on a transferred
backbone.

The model has one output, [B, C + 4]: C softmax class probabilities, then one box as
sigmoid (xmin, ymin, xmax, ymax) normalised to the model input (`models.losses
.class_and_box`). One tensor keeps every generic path working with one array: the
feature and boundary caches, TTA, ensembles, export parity, predict. Label rows have
the same layout: one-hot class, then the normalised box (`data.boxes`). Images are
resized to the model input without keeping their aspect ratio, so a normalised box
maps back to any image by that image's own width and height.

Multi-object detection (several boxes per image, anchors, non-max suppression) is out
of scope: KerasHub's detectors (e.g. `keras_hub.models.RetinaNetObjectDetector`, YOLO
and D-FINE presets) are the route for it.
"""

import os

import keras
import numpy as np

from transferkit.core.errors import ConfigError, DataError
from transferkit.core.files import atomic_path
from transferkit.data import boxes as box_data
from transferkit.data.augment import augment_boxed, box_refusal
from transferkit.data.scan import scan, with_problems
from transferkit.models.losses import (BOX, LocalizationLoss, class_accuracy,
                                       class_and_box, correct_iou50, mean_box_iou)
from transferkit.tasks.base import EPSILON, Task, _mean, _names, output_layer

IOU_BINS = np.linspace(0.0, 1.0, 11)  # the IoU histogram's bin edges
HIT_IOU = 0.5  # a box counts as found at IoU >= this (Pascal VOC's criterion)
TRUE_COLOUR, PRED_COLOUR = (0, 220, 0), (255, 40, 40)


def box_ious(a, b):
    """Per-row IoU of two [N, 4] arrays of xyxy boxes (`keras.utils.bounding_boxes
    .compute_iou`, one box against one box)."""
    a = np.asarray(a, np.float32).reshape(-1, 1, BOX)
    b = _ordered(np.asarray(b, np.float32)).reshape(-1, 1, BOX)
    if not len(a):
        return np.zeros(0)
    iou = keras.utils.bounding_boxes.compute_iou(a, b, "xyxy")
    return np.asarray(keras.ops.convert_to_numpy(iou), np.float64).reshape(-1)


def _ordered(box):
    box = np.asarray(box)
    return np.concatenate([np.minimum(box[..., :2], box[..., 2:]),
                           np.maximum(box[..., :2], box[..., 2:])], axis=-1)


def draw_boxes(image, boxes, colours, labels=None):
    """`image` (RGB 0-255 [H, W, 3]) with `boxes` (normalised xyxy, one per colour)
    drawn (`keras.visualization.draw_bounding_boxes`; Pillow when OpenCV, which it
    needs, is missing). labels: a caption per box, or None."""
    image = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    scale = np.array([width, height, width, height], np.float32)
    thickness = max(1, round(min(height, width) / 64))
    for i, (box, colour) in enumerate(zip(boxes, colours)):
        pixels = _ordered(np.asarray(box, np.float32)) * scale
        try:
            drawn = keras.visualization.draw_bounding_boxes(
                image[None], {"boxes": pixels[None, None], "labels": np.zeros((1, 1))},
                "xyxy", class_mapping={0: labels[i]} if labels else None,
                color=colour, line_thickness=thickness,
                font_scale=max(0.3, min(height, width) / 256))
            image = np.asarray(keras.ops.convert_to_numpy(drawn))[0].astype(np.uint8)
        except ImportError:  # keras draws with OpenCV
            from PIL import Image, ImageDraw
            picture = Image.fromarray(image)
            ImageDraw.Draw(picture).rectangle([float(v) for v in pixels], outline=colour,
                                              width=thickness)
            image = np.asarray(picture)
    return image


class Localization(Task):
    """One object per image: its class (softmax) and its box (normalised xyxy).

    Loss: class cross-entropy + box_weight x (Huber + 1 - CIoU) (`LocalizationLoss`;
    box_weight 3.0: the class term converges well before the box at 1.0).
    Scored by accuracy, mean box IoU and `correct_iou50`, the fraction with the right
    class and a box at IoU >= 0.5 (the headline)."""

    name, headline = "localization", "correct_iou50"
    activation = staticmethod(class_and_box)  # a registered function, not a method
    calibration = None  # the box is no probability: temperature scaling is refused
    single_label = False  # rows are class + box: Keras's class_weight would misread them
    has_classes, min_classes = True, 1
    summary_metrics = ("accuracy", "mean_iou", "correct_iou50", "nll")
    per_class_columns = (("accuracy", "accuracy"), ("mean_iou", "mean IoU"),
                         ("support", "support"))
    writes_predictions = True
    box_output = True  # TTA mirrors a flipped view's box back

    def __init__(self, box_weight=3.0):
        if not float(box_weight) >= 0:
            raise ConfigError(f"The `box_weight` argument should be >= 0. Received: "
                              f"box_weight={box_weight!r}")
        self.box_weight = float(box_weight)

    def __repr__(self):
        return f"Localization(box_weight={self.box_weight})"

    def with_box_weight(self, weight):
        """This task with `weight` on the box loss (the recipe's `box_weight`)."""
        return self if float(weight) == self.box_weight else Localization(weight)

    # --- labels and the model ----------------------------------------------------------

    def output_units(self, num_classes):
        return super().output_units(num_classes) + BOX

    def matches_output(self, model):
        activation, rank, _ = output_layer(model)
        return rank == 2 and activation == class_and_box.__name__

    def build_model(self, config, num_outputs, *, image_size=None, trusted=False):
        """A head on the pooled features (`config.head`) with C + 4 outputs;
        num_outputs: the output width (`output_units`), as data splits give it."""
        if num_outputs <= BOX:
            raise ConfigError(f"task='localization' needs an output width of classes + "
                              f"{BOX}; received {num_outputs}.")
        return super().build_model(config, num_outputs - BOX, image_size=image_size,
                                   trusted=trusted)

    def label_parts(self, label):
        if isinstance(label, box_data.BoxLabel):
            return [label.label]
        return [str(label)]

    def stratum(self, raw_labels):
        return [r.label if isinstance(r, box_data.BoxLabel) else str(int(np.ravel(r)[0]))
                for r in raw_labels]

    def encode(self, raw, class_names):
        """BoxLabels or rows (class index, xmin, ymin, xmax, ymax normalised) ->
        float32 [N, C + 4]: one-hot class, then the box."""
        return box_data.encode_boxes(raw, class_names)

    def class_weight(self, labels, num_classes=None):
        raise DataError("class_weights=True needs task 'multiclass' or 'binary'; "
                        "task='localization' rows hold a box too. Received: "
                        "task='localization'")

    def loss(self, label_smoothing=0.0):
        return LocalizationLoss(self.box_weight, label_smoothing)

    def metrics(self, units):
        wrap = keras.metrics.MeanMetricWrapper
        return [wrap(class_accuracy, name="accuracy"), wrap(mean_box_iou, name="mean_iou"),
                wrap(correct_iou50, name="correct_iou50")]

    # --- data ---------------------------------------------------------------------

    def read_files(self, source, *, scanned=True, follow_links=False):
        """A boxes CSV (path,label,xmin,ymin,xmax,ymax in pixels) or a Pascal VOC
        folder (`data.boxes`): the raw labels are BoxLabels, boxes normalised."""
        return (*box_data.list_boxes(source, follow_links), None)

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
        raise DataError("task='localization' reads a boxes CSV, a Pascal VOC folder or "
                        "(x, y) arrays; tf.data and TFDS sources are not supported.")

    def check_augment(self, config):
        reason = box_refusal(config)
        if reason:
            raise DataError(reason)

    def augment_example(self, image, label, seed, config):
        """Crop and flips move the box with the image; colour leaves it alone."""
        return augment_boxed(image, label, seed, config)

    def check_tta(self, preset):
        """A horizontal flip is un-flipped on the box; crops are refused."""
        if preset != "flip":
            raise ConfigError(f"TTA {preset!r} crops the image, and a box predicted on a "
                              "crop covers only part of the object: averaged with the "
                              "whole image's it would shrink the box. Localization takes "
                              f"tta='flip' (--tta flip). Received: tta={preset!r}")

    # --- outputs ------------------------------------------------------------------

    def probabilities(self, outputs):
        """The class columns [N, C]."""
        return np.asarray(outputs, dtype=np.float64)[..., :-BOX]

    def boxes(self, outputs):
        """The boxes [N, 4], normalised xyxy (corners put in order)."""
        return _ordered(np.asarray(outputs, dtype=np.float64)[..., -BOX:])

    def predicted(self, outputs):
        return self.probabilities(outputs).argmax(axis=-1)

    def score(self, outputs, labels, class_names=()):
        """Accuracy, mean box IoU, correct_iou50 (right class, IoU >= 0.5), NLL, per
        class accuracy and mean IoU, the confusion matrix and the IoU histogram."""
        outputs, labels = np.asarray(outputs), np.asarray(labels)
        probs = self.probabilities(outputs)
        true, pred = self.predicted(labels), probs.argmax(axis=1)
        iou = box_ious(self.boxes(labels), self.boxes(outputs))
        num = probs.shape[1]
        names = _names(class_names, num)
        matrix = np.zeros((num, num), dtype=np.int64)
        np.add.at(matrix, (true, pred), 1)
        counts, _ = np.histogram(iou, bins=IOU_BINS)
        return {"num_images": int(len(true)), "accuracy": _mean(pred == true),
                "mean_iou": _mean(iou),
                "correct_iou50": _mean((pred == true) & (iou >= HIT_IOU)),
                "nll": self.nll(outputs, labels),
                "per_class": {n: {"accuracy": _mean(pred[true == i] == i),
                                  "mean_iou": _mean(iou[true == i]),
                                  "support": int((true == i).sum())}
                              for i, n in enumerate(names)},
                "class_names": names, "confusion_matrix": matrix.tolist(),
                "histograms": {"box IoU": {"edges": IOU_BINS.tolist(),
                                           "counts": counts.tolist()}}}

    def example_losses(self, outputs, labels):
        """Class NLL + (1 - box IoU): the worst are wrong or badly boxed."""
        iou = box_ious(self.boxes(labels), self.boxes(outputs))
        return self._class_nll(outputs, labels) + (1.0 - iou)

    def _class_nll(self, outputs, labels):
        probs = self.probabilities(outputs)
        picked = probs[np.arange(len(probs)), self.predicted(labels)]
        return -np.log(np.clip(picked, EPSILON, 1.0))

    def nll(self, outputs, labels):
        return float(np.mean(self._class_nll(outputs, labels))) if len(outputs) else 0.0

    def agreement(self, reference, outputs, tolerance):
        """Fraction with the same class and boxes at IoU >= 1 - 5 x tolerance (0.95 at
        the default 0.01) with each other."""
        same = self.predicted(reference) == self.predicted(outputs)
        iou = box_ious(self.boxes(reference), self.boxes(outputs))
        return _mean(same & (iou >= 1.0 - 5.0 * tolerance))

    def parity(self, reference, outputs, labels, tolerance):
        """The task's parity, plus the two models' mean box IoU with each other."""
        out = super().parity(reference, outputs, labels, tolerance)
        out["box_iou"] = _mean(box_ious(self.boxes(reference), self.boxes(outputs)))
        return out

    def describe(self, outputs_row, class_names, top_k=3):
        """{"label", "scores": top classes, "box_normalized": [xmin, ymin, xmax, ymax]
        in [0, 1]}."""
        row = np.asarray(outputs_row, dtype=np.float64)[None]
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

    # --- what people see ------------------------------------------------------------

    def caption(self, row, class_names):
        top = self.describe(row, class_names, top_k=1)["scores"][0]
        return top["class"] if top["probability"] >= 0.99 else \
            f"{top['class']} {top['probability']:.2f}"

    def picture(self, image, row):
        """The image with the box of `row` (label or output) drawn."""
        return draw_boxes(image, self.boxes(np.asarray(row)[None]), [PRED_COLOUR])

    def compare_picture(self, image, label_row, output_row):
        """The true box (green) and the predicted one (red) on the image."""
        both = self.boxes(np.stack([np.asarray(label_row), np.asarray(output_row)]))
        return draw_boxes(image, both, [TRUE_COLOUR, PRED_COLOUR])

    def write_predictions(self, outputs, images, paths, out_dir):
        """Each image file at its own size with its predicted box and class drawn."""
        from PIL import Image, ImageOps

        os.makedirs(out_dir, exist_ok=True)
        written = []
        for i, (row, path) in enumerate(zip(outputs, paths)):
            try:
                with Image.open(path) as img:  # upright, as the box was predicted
                    original = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
            except OSError:  # decoded by TF but not by Pillow: the model-size image
                original = np.asarray(images[i])
            drawn = draw_boxes(original, self.boxes(np.asarray(row)[None]), [PRED_COLOUR])
            name = f"{i:03d}_{os.path.splitext(os.path.basename(path))[0]}_box.png"
            target = os.path.join(out_dir, name)
            with atomic_path(target) as tmp:
                Image.fromarray(drawn).save(tmp, format="PNG")
            written.append(target)
        return f"boxes: {len(written)} images with their predicted box in {out_dir}"
