"""Losses transferkit's tasks train with beyond Keras's own.

`SegmentationLoss` keeps its Keras registration name `transferkit>SegmentationLoss`,
so saved segmentation models load.
"""

import keras

from transferkit.core.errors import check_choice

LOSS_MODES = ("crossentropy", "dice", "both")  # SegmentationLoss's `mode` choices


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
        self.mode = check_choice("loss", mode, LOSS_MODES)
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



# --- localization: one class and one box per image, in one output tensor -----------
# The model's output is [B, C + 4]: C softmax class probabilities, then one box as
# sigmoid (xmin, ymin, xmax, ymax) normalised to the model input. One tensor keeps
# every generic path (caches, TTA, ensembles, export parity, predict) one array.

BOX = 4  # box columns at the end of a localization output or label row


@keras.saving.register_keras_serializable(package="transferkit")
def class_and_box(x):
    """Output activation of a localization head: softmax over all but the last 4
    columns (the classes), sigmoid on the last 4 (the normalised box)."""
    ops = keras.ops
    return ops.concatenate([ops.softmax(x[..., :-BOX], axis=-1),
                            ops.sigmoid(x[..., -BOX:])], axis=-1)


def _ordered(box):
    """(xmin, ymin, xmax, ymax) with min <= max: a prediction may cross its corners."""
    ops = keras.ops
    return ops.concatenate([ops.minimum(box[..., :2], box[..., 2:]),
                            ops.maximum(box[..., :2], box[..., 2:])], axis=-1)


def box_iou(y_true, y_pred):
    """Per-example IoU [B] of the true and predicted boxes of [B, C + 4] rows
    (`keras.utils.bounding_boxes.compute_iou` on one box each)."""
    ops = keras.ops
    true = ops.cast(y_true[..., -BOX:], "float32")[:, None, :]
    pred = _ordered(ops.cast(y_pred[..., -BOX:], "float32"))[:, None, :]
    iou = keras.utils.bounding_boxes.compute_iou(true, pred, "xyxy")
    return ops.reshape(iou, (-1,))


def _class_hit(y_true, y_pred):
    ops = keras.ops
    return ops.cast(ops.equal(ops.argmax(y_true[..., :-BOX], axis=-1),
                              ops.argmax(y_pred[..., :-BOX], axis=-1)), "float32")


@keras.saving.register_keras_serializable(package="transferkit")
def class_accuracy(y_true, y_pred):
    """1 where the predicted class (argmax of the class columns) is the true one."""
    return _class_hit(y_true, y_pred)


@keras.saving.register_keras_serializable(package="transferkit")
def mean_box_iou(y_true, y_pred):
    """Per-example IoU of the predicted box with the true one."""
    return box_iou(y_true, y_pred)


@keras.saving.register_keras_serializable(package="transferkit")
def correct_iou50(y_true, y_pred):
    """1 where the class is right and the box has IoU >= 0.5 with the true one."""
    hit = keras.ops.cast(box_iou(y_true, y_pred) >= 0.5, "float32")
    return hit * _class_hit(y_true, y_pred)


@keras.saving.register_keras_serializable(package="transferkit")
class LocalizationLoss(keras.losses.Loss):
    """Class cross-entropy + box_weight x (Huber of the normalised corners + 1 - CIoU)
    over [B, C + 4] rows. CIoU (`keras.utils.bounding_boxes.compute_ciou`, Zheng et al.
    2020) still has a gradient when the boxes do not overlap; the Huber term (delta
    0.1, 1/10 of the image) pulls each corner directly. box_weight: 1.0."""

    def __init__(self, box_weight=1.0, label_smoothing=0.0, name="localization_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.box_weight = float(box_weight)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, y_pred.dtype)
        ce = keras.losses.categorical_crossentropy(
            y_true[..., :-BOX], y_pred[..., :-BOX], label_smoothing=self.label_smoothing)
        true, pred = y_true[..., -BOX:], y_pred[..., -BOX:]
        huber = keras.losses.huber(true, pred, delta=0.1) * 10.0  # ~ |error| when large
        ciou = keras.utils.bounding_boxes.compute_ciou(true, _ordered(pred), "xyxy")
        return ce + self.box_weight * (huber + 1.0 - ciou)

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight,
                "label_smoothing": self.label_smoothing}
