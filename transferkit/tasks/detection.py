"""Detection: every object in the image, its class and box, from a dense head on the
backbone's feature pyramid (`models.detection`).

The model's output is [B, L, C + 4]: per location of its grid the C class scores
(sigmoids) and a decoded box (normalised xyxy). What a person or a client gets is the
post-processing contract, `Detection.postprocess(outputs)`:

    {"boxes": [B, N, 4] normalised xyxy, "classes": [B, N] int32, "scores": [B, N],
     "count": [B] int32}            (N = max_detections; rows past count are padding)

in graph ops (TFLite builtin), so predict, evaluate, the SavedModel's bytes signature
and an exported .tflite all return the same detections.

Labels: each image's objects as rows (class id, xmin, ymin, xmax, ymax), padded to
`max_objects` rows with class id -1 (`data.annotations.pad_objects`); the pipeline's
`encode_label` turns them into [max_objects + L, C + 4]: the object rows (what scoring
reads), then the dense targets of the grid (`models.detection.targets`, what the loss
reads). The grid comes from the model the task is bound to (`bind`): the recipe's
backbone and input size. Unbound (evaluation, prediction), labels are the object rows
alone.

Why anchor-free (FCOS-style centre sampling) rather than KerasHub's anchors: with the
objects this task is judged on (8-48 px in 120-160 px images, resized to the model
input) IoU matching against anchors at strides 16 and 32 leaves small objects without
a positive anchor, while centre sampling gives every object at least the cell holding
its centre; `python benchmarks/detection.py --part assignment` measures it (figures
in docs/detection.md).
"""

import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError, DataError
from transferkit.data.annotations import MAX_BOXES, PAD_CLASS, pad_objects, read_objects
from transferkit.data.box_augment import augment_rows, object_refusal
from transferkit.data.scan import scan, with_problems
from transferkit.models.detection import (BOX_WEIGHT, EVAL_SCORE_THRESHOLD, INPUT_SCALE,
                                          OUTPUT, DetectionConfig, DetectionLoss, build_detector,
                                          detect_one, feature_grid, positive_iou,
                                          postprocess)
from transferkit.models.detection import targets
from transferkit.tasks.base import Task, _mean, _names
from transferkit.tasks.boxes import (PRED_COLOUR, TRUE_COLOUR, draw_boxes, iou_matrix,
                                     save_drawing, upright_image)
from transferkit.tasks.coco import coco_eval, match
from transferkit.tasks.outputs import DETECTION_OUTPUTS, TfliteOutput

# `export --check`: an artifact's detection is the source's at this IoU (same class), as
# the MediaPipe client's detections are judged against predict's.
PARITY_IOU = 0.9
# The dense head's per-location class and box predictors (`models.detection.head`),
# which an int8 .tflite keeps float: their int8 rounding moves which of neighbouring,
# near-tied locations survives non-max suppression, and so the box reported.
PREDICTORS = ("head_classes", "head_boxes")


class Detection(Task):
    """Any number of objects per image: class and box of each (see the module
    docstring). Scored by COCO mAP@[.5:.95] (the headline), AP50, AP75 and per-class
    AP (pycocotools), and precision and recall at the score threshold."""

    name, headline = "detection", "map"
    calibration = None  # scores of many locations: no temperature
    single_label = False
    has_classes, min_classes = True, 1
    summary_metrics = ("map", "ap50", "ap75", "precision", "recall")
    per_class_columns = (("ap", "AP"), ("ap50", "AP50"), ("support", "objects"))
    writes_predictions = True
    # A mirrored image's outputs sit at mirrored locations: averaging them location by
    # location with the original's would mix different places.
    flip_tta = False
    input_scale = INPUT_SCALE  # boxes of small objects need more cells than classes
    max_objects = MAX_BOXES  # object rows per label (COCO's and MediaPipe's 100)

    def __init__(self, config=DetectionConfig(), grid=None, box_weight=BOX_WEIGHT):
        self.config, self.grid = config, grid
        if not float(box_weight) >= 0:
            raise ConfigError(f"The `box_weight` argument should be >= 0. Received: "
                              f"box_weight={box_weight!r}")
        self.box_weight = float(box_weight)

    def __repr__(self):
        return (f"{type(self).__name__}({self.config}, grid={self.grid}, "
                f"box_weight={self.box_weight})")

    def _replace(self, **changes):
        args = {"config": self.config, "grid": self.grid, "box_weight": self.box_weight,
                **changes}
        return type(self)(**args)

    def with_box_weight(self, weight):
        """This task with `weight` on the box (CIoU) loss (the recipe's `box_weight`)."""
        return self if float(weight) == self.box_weight else self._replace(
            box_weight=weight)

    def with_detection(self, config):
        """This task with the head and post-processing of `config` (a DetectionConfig:
        the recipe's detection settings)."""
        return self if config == self.config else self._replace(config=config)

    def bind(self, model_config):
        """This task on the grid of a model as `model_config` (a `models.ModelConfig`)
        builds it: what `encode_label` assigns objects to."""
        grid = feature_grid(model_config.backbone, model_config.input_spec(self))
        return self if grid == self.grid else self._replace(grid=grid)

    def settings(self):
        """What travels in a saved model's metadata: the post-processing settings."""
        return {"score_threshold": self.config.score_threshold,
                "max_detections": self.config.max_detections,
                "nms_iou": self.config.nms_iou, "detection_width": self.config.width}

    def with_settings(self, settings):
        """This task with `settings` (as `settings` wrote them) applied."""
        if not settings:
            return self
        import dataclasses

        return self.with_detection(dataclasses.replace(
            self.config, score_threshold=float(settings["score_threshold"]),
            max_detections=int(settings["max_detections"]),
            nms_iou=float(settings["nms_iou"]),
            width=int(settings.get("detection_width", self.config.width))))

    # --- the model and its training ---------------------------------------------------

    def output_units(self, num_classes):
        return super().output_units(num_classes) + 4

    def matches_output(self, model):
        return len(model.output_shape) == 3 and _last_layer_name(model) == OUTPUT

    def build_model(self, config, num_outputs, *, image_size=None, trusted=False):
        """The dense head on `config.backbone`'s pyramid (`models.build_detector`);
        num_outputs: classes + 4 (`output_units`), as data splits give it."""
        if num_outputs <= 4:
            raise ConfigError(f"task={self.name!r} needs an output width of classes + 4; "
                              f"received {num_outputs}.")
        return build_detector(config.backbone, num_outputs - 4, weights=config.weights_arg(),
                              input_shape=image_size or config.input_spec(self),
                              width=self.config.width, task=self, safe_mode=not trusted,
                              backbone_kwargs=dict(config.backbone_kwargs))

    def output_activation(self, units):
        """No pooled head fits (`models.build_model`): the dense head is the model."""
        raise ConfigError(f"task={self.name!r} is a dense head on the backbone's feature "
                          "maps, not a head on pooled features: build it with "
                          "`models.detection.build_detector` (or the task's "
                          "`build_model`, as `train` does).")

    def loss(self, label_smoothing=0.0):
        return DetectionLoss(self.box_weight)

    def metrics(self, units):
        import keras

        return [keras.metrics.MeanMetricWrapper(positive_iou, name="box_iou")]

    def class_weight(self, labels, num_classes=None):
        raise DataError(f"class_weights=True needs task 'multiclass' or 'binary'. "
                        f"Received: task={self.name!r}")

    # --- data: objects per image (`data.annotations`) ---------------------------------

    def label_parts(self, label):
        objects = getattr(label, "objects", None)
        return [o.label for o in objects] if objects is not None else [str(label)]

    def stratum(self, raw_labels):
        """Each image's most frequent class ("" without objects)."""
        out = []
        for label in raw_labels:
            parts = self.label_parts(label) if hasattr(label, "objects") else [
                str(int(c)) for c in np.asarray(label)[:, 0] if c >= 0]
            out.append(max(sorted(set(parts)), key=parts.count) if parts else "")
        return out

    def encode(self, raw, class_names):
        """ImageObjects, or arrays [N, m, 5] of (class id, box) rows (class id -1:
        none) -> float32 [N, max_objects, 5] (`pad_objects`)."""
        if len(raw) and hasattr(raw[0], "objects"):
            return pad_objects(raw, class_names, self.max_objects)
        rows = np.asarray(raw, np.float32)
        if rows.ndim != 3 or rows.shape[-1] != 5:
            raise DataError(f"task={self.name!r} needs labels as (class id, xmin, ymin, "
                            "xmax, ymax) rows per image, [N, objects, 5], boxes "
                            f"normalised; received shape {rows.shape}.")
        if rows.shape[1] > self.max_objects:
            raise DataError(f"task={self.name!r} takes at most {self.max_objects} "
                            f"objects per image; received {rows.shape[1]}.")
        out = np.zeros((len(rows), self.max_objects, 5), np.float32)
        out[:, :, 0] = PAD_CLASS
        out[:, :rows.shape[1]] = rows
        ids = out[..., 0][out[..., 0] >= 0]
        if ids.size and ids.max() >= len(class_names):
            raise DataError(f"class id {int(ids.max())} is outside 0.."
                            f"{len(class_names) - 1} (class_names={list(class_names)}).")
        return out

    def source_labels(self, labels, class_names):
        return self.encode(labels, class_names)

    def read_files(self, source, *, scanned=True, follow_links=False):
        """(paths, ImageObjects, problems, class names) of an annotation source: a
        boxes CSV, Pascal VOC, COCO JSON or YOLO folder (`data.annotations`)."""
        return read_objects(source, follow_links=follow_links)

    def check_files(self, paths, labels, *, scanned=True, splits=None, problems=(),
                    class_names=None, workers=None, normalized_dir=None):
        """The image scan plus the annotation problems of the listing."""
        if not scanned:
            return None, {p: p for p in paths}, self._classes_of(labels)
        report = with_problems(scan(paths, splits=splits, workers=workers,
                                    normalized_dir=normalized_dir), problems)
        kept = report.decode_paths
        return report, kept, self._classes_of(
            lab for p, lab in zip(paths, labels) if p in kept)

    def scan_source(self, source, *, workers=None, follow_links=False):
        paths, labels, problems, _ = read_objects(source, follow_links=follow_links)
        return self.check_files(paths, labels, problems=problems, workers=workers)[0]

    def array_labels(self, x, y, class_names=None):
        """y: [N, objects, 5] rows (class id, xmin, ymin, xmax, ymax), boxes
        normalised, class id -1 for none."""
        rows = np.asarray(y, np.float32)
        if rows.ndim != 3 or rows.shape[-1] != 5 or len(rows) != len(x):
            raise DataError(f"task={self.name!r} needs y as [N, objects, 5] rows (class "
                            "id, xmin, ymin, xmax, ymax), boxes normalised to [0, 1], "
                            f"class id -1 for none; received shape {rows.shape} for "
                            f"{len(x)} images.")
        top = int(rows[..., 0].max()) if rows.size else 0
        names = (tuple(str(n) for n in class_names) if class_names is not None
                 else tuple(str(i) for i in range(max(top + 1, 1))))
        return names, self.stratum(rows), self.encode(rows, names)

    def read_tensors(self, source, **_):
        raise DataError(f"task={self.name!r} reads a boxes CSV, a Pascal VOC, COCO or "
                        "YOLO folder, or (x, y) arrays; tf.data and TFDS sources are not "
                        "supported.")

    def check_augment(self, config):
        reason = object_refusal(config)
        if reason:
            raise DataError(reason)

    def decode_label(self, label, image_size, num_classes=None):
        return tf.cast(label, tf.float32)

    def augment_example(self, image, label, seed, config):
        """Crops, flips, zoom and translation move the boxes with the image; an object
        cropped out drops out; colour leaves them alone (`data.box_augment`)."""
        return augment_rows(image, label, seed, config)

    def encode_label(self, label, num_classes=None):
        """Object rows [max_objects, 5] -> [max_objects + L, C + 4] on the bound grid
        (unbound: the object rows alone, padded to C + 4 columns)."""
        return targets.encode(label, self.grid, int(num_classes))

    def label_encoding(self):
        """The grid, the encoder's constants and the object rows kept: the targets."""
        return (f"{self.name}:{self.grid}:{targets.RADIUS}:{targets.CELLS_PER_OBJECT}:"
                f"{self.max_objects}:augment-v1")

    # --- outputs: the post-processing contract ----------------------------------------

    def postprocess(self, outputs, score_threshold=None):
        """The detections of outputs [B, L, C + 4] (TF ops; see the module docstring);
        score_threshold: default the setting's."""
        config = self.config
        threshold = config.score_threshold if score_threshold is None else score_threshold
        return postprocess(outputs, score_threshold=threshold,
                           max_detections=config.max_detections,
                           iou_threshold=config.nms_iou)

    def detections(self, outputs, score_threshold=None, batch=256):
        """Per image (boxes [n, 4], class ids [n], scores [n]) as numpy arrays."""
        outputs = np.asarray(outputs, np.float32)
        found = []
        for start in range(0, len(outputs), batch):
            d = {k: v.numpy() for k, v in self.postprocess(
                outputs[start:start + batch], score_threshold).items()}
            for i, n in enumerate(d["count"]):
                found.append((d["boxes"][i, :n], d["classes"][i, :n], d["scores"][i, :n]))
        return found

    def objects(self, labels):
        """Per image (boxes [m, 4], class ids [m]) of labels (object rows first)."""
        rows = np.asarray(labels, np.float32)[:, :self.max_objects]
        return [(r[r[:, 0] >= 0, 1:5], r[r[:, 0] >= 0, 0].astype(int)) for r in rows]

    def probabilities(self, outputs):
        """The per-location class scores [N, L, C]."""
        return np.asarray(outputs, np.float64)[..., :-4]

    def score(self, outputs, labels, class_names=()):
        """COCO mAP, AP50, AP75 and per-class AP (every detection above
        EVAL_SCORE_THRESHOLD), precision and recall at the score threshold (IoU 0.5,
        same class), and the precision-recall curves at IoU 0.5."""
        outputs = np.asarray(outputs)
        num = outputs.shape[-1] - 4
        names = _names(class_names, num)
        objects = self.objects(labels)
        coco = coco_eval(self.detections(outputs, min(EVAL_SCORE_THRESHOLD,
                                                      self.config.score_threshold)),
                         objects, num)
        shown = self.detections(outputs)
        pairs = [match(d, o) for d, o in zip(shown, objects)]
        found = sum(int(d.sum()) for d, _ in pairs)
        said = sum(len(d) for d, _ in pairs)
        total = sum(len(o) for _, o in pairs)

        def zero(value):  # no objects to score: 0, not NaN (JSON and plots take it)
            return 0.0 if np.isnan(value) else float(value)

        curve = coco["pr_curve"]
        return {"num_images": int(len(outputs)), "num_objects": int(total),
                "map": zero(coco["map"]), "ap50": zero(coco["ap50"]),
                "ap75": zero(coco["ap75"]),
                "precision": found / said if said else 0.0,
                "recall": found / total if total else 0.0,
                "score_threshold": float(self.config.score_threshold),
                "per_class": {names[k]: {"ap": zero(v["ap"]), "ap50": zero(v["ap50"]),
                                         "support": v["support"]}
                              for k, v in coco["per_class"].items()},
                "class_names": names,
                "curves": {"precision-recall (IoU 0.5)": {
                    "x": curve["recall"], "xlabel": "recall", "ylabel": "precision",
                    "series": {names[k]: v for k, v in curve["precision"].items()}}}}

    def example_losses(self, outputs, labels):
        """Errors per image at the score threshold: objects missed plus detections
        that match none (IoU 0.5, same class)."""
        pairs = [match(d, o) for d, o in zip(self.detections(outputs),
                                             self.objects(labels))]
        return np.array([float((~d).sum() + (~o).sum()) for d, o in pairs])

    def nll(self, outputs, labels):
        return float(np.mean(self.example_losses(outputs, labels))) if len(outputs) else 0.0

    def agreement(self, reference, outputs, tolerance):
        """The share of the detections of either side (at the score threshold) that
        pair with one of the other's: same class, IoU >= PARITY_IOU, scores within
        `tolerance` (1.0 when neither has any)."""
        return self._paired(reference, outputs, tolerance)[0]

    def parity(self, reference, outputs, labels, tolerance=0.01):
        """`export --check` on what every artifact reports, the detections at the
        score threshold (a .tflite file keeps no others): ok when their COCO mAP
        moves by at most `tolerance` and `agreement` is at least 1 - `tolerance`;
        max_abs_diff is the largest score difference of two detections paired by
        class and IoU alone."""
        agreement, worst = self._paired(reference, outputs, tolerance)
        objects, num = self.objects(labels), np.asarray(reference).shape[-1] - 4
        before, after = (coco_eval(self.detections(o), objects, num)[self.headline]
                         for o in (reference, outputs))
        moved = 0.0 if np.isnan(before) and np.isnan(after) else abs(after - before)
        return {self.headline: after, "agreement": agreement, "max_abs_diff": worst,
                "ok": bool(moved <= tolerance and agreement >= 1 - tolerance)}

    def _paired(self, reference, outputs, tolerance):
        """(share of detections paired, largest score difference of a class-and-IoU
        pair) of two outputs' detections at the score threshold (`_pair`)."""
        paired = total = 0
        worst = 0.0
        for ref, out in zip(self.detections(reference), self.detections(outputs)):
            n, diff = _pair(ref, out, PARITY_IOU, tolerance)
            paired, total = paired + n, total + len(ref[1]) + len(out[1]) - n
            worst = max(worst, diff)
        return (paired / total if total else 1.0), worst

    def describe(self, outputs_row, class_names, top_k=3):
        """{"label": the classes found, "detections": [{"class", "score",
        "box_normalized"}] best first}."""
        boxes, ids, scores = self.detections(np.asarray(outputs_row)[None])[0]
        names = _names(class_names, np.asarray(outputs_row).shape[-1] - 4)
        found = [{"class": names[int(c)], "score": round(float(s), 6),
                  "box_normalized": [round(float(v), 6) for v in b]}
                 for b, c, s in zip(boxes, ids, scores)]
        return {"label": sorted({d["class"] for d in found}), "detections": found}

    def describe_file(self, outputs_row, class_names, top_k, path):
        """`describe` with each detection's "box" in the pixels of the image file at
        `path` (its own width and height)."""
        out = self.describe(outputs_row, class_names, top_k)
        size = _image_size(path)
        if size is not None:
            scale = [size[0], size[1], size[0], size[1]]
            for d in out["detections"]:
                d["box"] = [round(v * s, 2) for v, s in zip(d["box_normalized"], scale)]
        return out

    def prediction_line(self, row):
        found = row.get("detections", [])
        return f"{len(found)} object(s): " + ", ".join(
            f"{d['class']} {d['score']:.2f} {d.get('box', d['box_normalized'])}"
            for d in found)

    def unflip(self, outputs):
        raise ConfigError(f"task={self.name!r} does not take flip TTA: a mirrored "
                          "image's detections sit at mirrored locations.")

    def check_tta(self, preset):
        raise ConfigError(f"task={self.name!r} takes no TTA: its outputs are per "
                          "location, and another view's locations are elsewhere. "
                          f"Received: tta={preset!r}")

    def serving_outputs(self, outputs, class_names):
        """The detections (`postprocess`) and `class_names` [B, N], the class name of
        each detection ("" past `count`)."""
        found = self.postprocess(outputs)
        names = tf.constant(_names(class_names, outputs.shape[-1] - 4) + [""])
        ids = tf.where(found["classes"] < 0, len(names) - 1, found["classes"])
        return {**found, "class_names": tf.gather(names, ids)}

    def tflite_output(self, class_names, units):
        """MediaPipe ObjectDetector's four outputs (`tflite_detections`), the class
        names as the categories' labels and the score threshold."""
        return TfliteOutput(
            "detections", f"Scores of the detections (classes of {units - 4}), above "
            f"{self.config.score_threshold}, best first, after non-max suppression.",
            tuple(_names(class_names, units - 4)),
            score_threshold=self.config.score_threshold, float_layers=PREDICTORS)

    def tflite_detections(self, outputs):
        """What an exported .tflite returns for one image's outputs [1, L, C + 4]
        (graph ops): {`DETECTION_OUTPUTS` name: tensor}, MediaPipe ObjectDetector's
        locations [1, N, 4] (normalised xyxy), categories [1, N], scores [1, N] and
        number of detections [1], float32 as it reads them (N = max_detections): the
        detections `postprocess` gives. Kept from the score threshold in the graph:
        MediaPipe's own score_threshold option (0 unless set) overrides the one the
        metadata holds, so only the graph makes a plain client report what predict
        does."""
        n = self.config.max_detections
        found = detect_one(outputs[0], score_threshold=self.config.score_threshold,
                           max_detections=n, iou_threshold=self.config.nms_iou)
        # Static shapes: MediaPipe and LiteRT's output details see [1, N, 4].
        values = (tf.reshape(found["boxes"], [1, n, 4]),
                  tf.reshape(tf.cast(found["classes"], tf.float32), [1, n]),
                  tf.reshape(found["scores"], [1, n]),
                  tf.reshape(tf.cast(found["count"], tf.float32), [1]))
        return dict(zip(DETECTION_OUTPUTS, values))

    # --- what people see ----------------------------------------------------------------

    def caption(self, row, class_names):
        """A label row's objects: "2 ring, 1 cross" ("no objects")."""
        found = [_names(class_names, max(len(class_names), 1))[int(c)]
                 for c in np.asarray(row)[:self.max_objects, 0] if c >= 0]
        return ", ".join(f"{found.count(c)} {c}" for c in sorted(set(found))) or \
            "no objects"

    def compare_caption(self, label_row, output_row, class_names):
        found = self.describe(output_row, class_names)["detections"]
        said = [d["class"] for d in found]
        return (f"true {self.caption(label_row, class_names)}\npred "
                + (", ".join(f"{said.count(c)} {c}" for c in sorted(set(said)))
                   or "no objects"))

    def picture(self, image, row):
        """The image with a label row's objects drawn."""
        boxes, _ = self.objects(np.asarray(row)[None])[0]
        return draw_boxes(image, boxes, [TRUE_COLOUR] * len(boxes))

    def compare_picture(self, image, label_row, output_row):
        """True boxes (green) and detections at the score threshold (red)."""
        boxes, _ = self.objects(np.asarray(label_row)[None])[0]
        found = self.detections(np.asarray(output_row)[None])[0][0]
        return draw_boxes(image, [*boxes, *found],
                          [TRUE_COLOUR] * len(boxes) + [PRED_COLOUR] * len(found))

    def write_predictions(self, outputs, images, paths, out_dir, class_names=()):
        """Each image file at its own size with its detections drawn and named."""
        names = _names(class_names, np.asarray(outputs).shape[-1] - 4)
        written = []
        for i, (row, path) in enumerate(zip(outputs, paths)):
            boxes, ids, scores = self.detections(np.asarray(row)[None])[0]
            labels = [f"{names[c]} {s:.2f}" for c, s in zip(ids, scores)]
            drawn = draw_boxes(upright_image(path, images[i]), boxes,
                               [PRED_COLOUR] * len(boxes), labels)
            written.append(save_drawing(drawn, out_dir, i, path, "boxes"))
        return f"detections: {len(written)} images with their boxes drawn in {out_dir}"


def _pair(reference, outputs, iou, tolerance):
    """(pairs, largest score difference of a pair by class and IoU) of one image's
    detections (boxes, class ids, scores) of two models: each of `reference`'s, best
    first, takes the unpaired one of `outputs` of its class with the highest IoU at
    >= `iou`; a pair counts when the scores are within `tolerance` too."""
    (r_boxes, r_ids, r_scores), (o_boxes, o_ids, o_scores) = reference, outputs
    if not len(r_ids) or not len(o_ids):
        return 0, 0.0
    ious = iou_matrix(r_boxes, o_boxes)
    ious[np.asarray(r_ids)[:, None] != np.asarray(o_ids)[None]] = -1.0
    taken = np.zeros(len(o_ids), bool)
    pairs, worst = 0, 0.0
    for i in np.argsort(-np.asarray(r_scores), kind="stable"):
        candidates = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            taken[j] = True
            diff = abs(float(r_scores[i]) - float(o_scores[j]))
            worst = max(worst, diff)
            pairs += diff <= tolerance
    return pairs, worst


def _last_layer_name(model):
    out = model
    while getattr(out, "layers", None):
        out = out.layers[-1]
    return out.name


def _image_size(path):
    from transferkit.data.boxes import image_size

    return image_size(path)

