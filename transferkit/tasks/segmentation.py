"""Segmentation: a class per pixel, from image+mask pairs, by a U-Net decoder."""

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import DataError, check_choice
from transferkit.data import masks
from transferkit.data.augment import augment_pair, mixup_refusal
from transferkit.data.mask_tensors import mask_pairs
from transferkit.data.masks import list_pairs, scan_pairs
from transferkit.tasks.masks import overlay, write_masks
from transferkit.tasks.outputs import TfliteOutput
from transferkit.models.losses import LOSS_MODES, SegmentationLoss
from transferkit.models.segmentation import build_segmenter
from transferkit.tasks.base import (EPSILON, THRESHOLD, Task, _mean, _names, _per_row,
                                   output_layer)


class Segmentation(Task):
    """Per-pixel classes: masks [N, H, W] of class indices in, [N, H, W, C] softmax out
    (one sigmoid channel for a single foreground class). Scored by mean IoU."""

    name, activation, headline = "segmentation", "softmax", "miou"
    has_classes, min_classes = True, 1
    summary_metrics = ("pixel_accuracy", "miou")
    per_class_columns = (("iou", "iou"), ("support", "pixels"))
    writes_predictions = True
    # The decoder reads the encoder's skip tensors too, not one feature tensor: phase 1
    # runs live on the frozen encoder.
    caches_features = False
    losses = LOSS_MODES

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

    def class_weight(self, labels, num_classes=None):
        """{class: weight} from training masks' pixel counts (sklearn's "balanced":
        total / (classes present x count); classes absent get 1.0). labels: one-hot
        masks [N, H, W, C], index masks [N, H, W], mask files, or {class: pixel
        count}. num_classes: classes to cover (absent ones get 1.0)."""
        if isinstance(labels, dict):
            counts = labels
        elif np.asarray(labels).dtype.kind in "OSUiu":  # mask files, or index masks
            counts = masks.pixel_counts(labels, max(num_classes or 0, 2))
        else:
            counts = {i: int(c) for i, c in enumerate(self.probabilities(labels).reshape(
                -1, self.probabilities(labels[:1]).shape[-1]).sum(axis=0))}
        present = {i: c for i, c in counts.items() if c > 0}
        total = sum(present.values())
        return {i: (total / (len(present) * c) if c > 0 else 1.0)
                for i, c in sorted(counts.items())}

    def matches_output(self, model):
        activation, rank, _ = output_layer(model)
        return rank == 4 and activation in ("softmax", "sigmoid")

    def build_model(self, config, num_outputs, *, image_size=None, trusted=False):
        """Per-pixel outputs: a U-Net decoder of `config.decoder_width` over the
        backbone (`models.build_segmenter`), not a head; `config.head` does not
        apply."""
        return build_segmenter(config.backbone, num_outputs,
                               weights=config.weights_arg(),
                               input_shape=image_size or config.input_spec(self),
                               decoder_width=config.decoder_width, task=self,
                               safe_mode=not trusted,
                               backbone_kwargs=dict(config.backbone_kwargs))

    def caption(self, row, class_names):
        """The classes a mask (label or prediction) holds."""
        return " / ".join(self.describe(row, class_names, top_k=3)["label"])

    def picture(self, image, row):
        """The image with the mask of `row` (label or output) tinted on it."""
        row = np.asarray(row)[None]
        return overlay(image, self.predicted(row)[0], self.probabilities(row).shape[-1])

    def write_predictions(self, outputs, images, paths, out_dir, class_names=()):
        """Each image's predicted mask (class-index palette PNG) and an overlay."""
        written = write_masks(self, outputs, images, paths, out_dir)
        return f"masks: {len(written)} mask PNGs and overlays in {out_dir}"

    def tflite_output(self, class_names, units):
        """Per-pixel class scores [1, H, W, C], labelled: MediaPipe's ImageSegmenter
        takes their argmax as its category mask. One sigmoid channel is labelled with
        the foreground class alone: MediaPipe reads a single channel as that one
        category's confidence (category 0 above THRESHOLD, else 255: none)."""
        if units == 1:
            background, foreground = ([None, None] + [str(c) for c in class_names])[-2:]
            return TfliteOutput("mask", f"Per-pixel probability of {foreground!r} "
                                f"(sigmoid); below {THRESHOLD} the pixel is "
                                f"{background or 'background'!r}.", (foreground or "1",))
        return TfliteOutput("mask", f"Per-pixel probabilities of the {units} classes "
                            "(softmax), in the order of the labels file.",
                            tuple(_names(class_names, units)))

    def scan_source(self, source, *, workers=None, follow_links=False):
        """The image scan plus the mask checks of a folder with images/ and masks/."""
        images, found, names, problems = list_pairs(source, follow_links)
        return scan_pairs(images, found, problems, len(names) if names else None,
                          workers=workers)[0]

    # --- data: images paired with masks (`data.masks`, `data.mask_tensors`) ----------

    def read_files(self, source, *, scanned=True, follow_links=False):
        """A folder with images/ and masks/ (and classes.txt), or a CSV of image,mask
        rows: the raw labels are the mask files."""
        images, found, names, problems = list_pairs(source, follow_links)
        return images, found, problems, names

    def check_files(self, paths, labels, *, scanned=True, splits=None, problems=(),
                    class_names=None, workers=None, normalized_dir=None):
        """The image scan plus the mask checks (readable, the image's size, values in
        the class range of `class_names`); unscanned, every mask is read for its
        classes."""
        if not scanned:
            return None, {p: p for p in paths}, masks.classes_in(labels)
        limit = None if class_names is None else max(len(class_names), 2)
        return scan_pairs(paths, labels, problems, limit, workers, normalized_dir,
                          splits=splits)

    def source_labels(self, labels, class_names):
        """The mask files themselves: the pipeline reads them (`decode_label`)."""
        return np.asarray(labels, dtype=object)

    def array_labels(self, x, y, class_names=None):
        """y: masks [N, H, W(, 1)] of class indices (or one-hot [N, H, W, C])."""
        return masks.array_masks(self, x, y, class_names)

    def read_tensors(self, source, *, data_dir, val_split, test_split, seed, class_names,
                     class_weights):
        """(image, mask) pairs of a tf.data.Dataset, or a TFDS dataset's image and
        mask features, every pair checked first (`data.mask_tensors`)."""
        return mask_pairs(self, source, data_dir=data_dir, val_split=val_split,
                          test_split=test_split, seed=seed, class_names=class_names,
                          class_weights=class_weights)

    def check_augment(self, config):
        """Mixup would give a pixel two masks' classes at once: refused (cutmix pastes
        the same box into image and mask, and is kept)."""
        if config is not None and config.mixup_alpha > 0:
            raise DataError(mixup_refusal(config))

    def decode_label(self, label, image_size, num_classes=None):
        """A mask file path or mask tensor -> uint8 [h, w, 1] class indices."""
        return masks.decode_mask(label, image_size)

    def augment_example(self, image, label, seed, config):
        """The same crop, flips and affine for image and mask (nearest for the mask);
        colour on the image only."""
        return augment_pair(image, label, seed, config)

    def encode_label(self, label, num_classes=None):
        """uint8 class indices [H, W, 1] -> float32 one-hot [H, W, C] (C = 1: as is)."""
        return masks.encode_mask(label, self.output_units(num_classes))

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

    def serving_outputs(self, outputs, class_names):
        """`class_ids` [B, H, W] int32 (the predicted mask), `scores` [B, H, W, C]
        per-pixel class probabilities and `classes` [B, C] their class names."""
        p = tf.cast(outputs, tf.float32)
        scores = tf.concat([1.0 - p, p], axis=-1) if p.shape[-1] == 1 else p
        names = tf.constant(_names(class_names, scores.shape[-1]))
        return {"class_ids": tf.argmax(scores, axis=-1, output_type=tf.int32),
                "scores": scores, "classes": _per_row(names, scores)}

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

    def unflip(self, outputs):
        """Per-pixel outputs [N, H, W, C] of mirrored images, mirrored back (width)."""
        return np.flip(np.asarray(outputs), axis=2)

    def example_losses(self, outputs, labels):
        probs = self.probabilities(outputs)
        picked = np.take_along_axis(probs, self.predicted(labels)[..., None], axis=-1)
        return -np.log(np.clip(picked[..., 0], EPSILON, 1.0)).mean(axis=(1, 2))

    def nll(self, outputs, labels):
        return float(np.mean(self.example_losses(outputs, labels))) if len(outputs) else 0.0

    def agreement(self, reference, outputs, tolerance):
        """Fraction of pixels on which the two predicted masks agree."""
        return _mean(self.predicted(reference) == self.predicted(outputs))

