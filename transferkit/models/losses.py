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

