"""The loss of a dense box head: focal classification + IoU box regression.

Classification is the sigmoid focal loss of every location and class (Lin et al. 2017,
alpha 0.25, gamma 2: the many easy background locations count little), summed and
divided by the image's positive locations; the box term is 1 - CIoU (Zheng et al.
2020, `keras.utils.bounding_boxes.compute_ciou`) of each positive location's decoded
box against its object's plus the mean absolute error of its corners relative to the
object's width and height, averaged over the positives and weighted by `box_weight`.
`y_true` is the target encoder's [M + L, C + 4] (object rows, then dense targets,
`targets.encode`); `y_pred` the model's [L, C + 4].
"""

import keras

from transferkit.core.errors import ConfigError

ALPHA, GAMMA = 0.25, 2.0


def dense_part(y_true, y_pred):
    """The dense targets [B, L, C + 4] of training labels: their last L rows. Labels
    holding object rows alone (read without the model's grid) cannot train."""
    rows, locations = y_true.shape[1], y_pred.shape[1]
    if rows is not None and locations is not None and rows <= locations:
        raise ConfigError(
            f"Detection labels hold {rows} rows, the model predicts {locations} "
            "locations: the labels were encoded without the model's grid. Load the "
            "data with the task bound to the model (`RecipeConfig.task_config()`, or "
            "`task.bind(model_config)`).")
    return y_true[:, -locations:] if locations else y_true


@keras.saving.register_keras_serializable(package="transferkit")
class DetectionLoss(keras.losses.Loss):
    """Focal loss over every location and class + box_weight x (1 - CIoU) over the
    positive ones, per image (see the module docstring). box_weight: 1.0."""

    def __init__(self, box_weight=1.0, name="detection_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.box_weight = float(box_weight)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_pred = ops.cast(y_pred, "float32")
        dense = ops.cast(dense_part(y_true, y_pred), "float32")
        classes = y_pred.shape[-1] - 4
        target, scores = dense[..., :classes], y_pred[..., :classes]
        positive = ops.cast(ops.max(target, axis=-1) > 0, "float32")  # [B, L]
        count = ops.maximum(ops.sum(positive, axis=-1), 1.0)  # [B]
        ciou = keras.utils.bounding_boxes.compute_ciou(
            dense[..., classes:], y_pred[..., classes:], "xyxy")  # [B, L]
        focal = keras.losses.binary_focal_crossentropy(
            target[..., None], scores[..., None], apply_class_balancing=True,
            alpha=ALPHA, gamma=GAMMA)  # [B, L, C]
        focal = ops.sum(focal, axis=(1, 2)) / count
        true_box, pred_box = dense[..., classes:], y_pred[..., classes:]
        # Each corner's error relative to the object's side: unlike (1 - CIoU), it
        # still pulls a box that has shrunk to nothing (no overlap, no IoU gradient).
        side = ops.maximum(ops.concatenate([true_box[..., 2:] - true_box[..., :2]] * 2,
                                           axis=-1), 1e-3)
        relative = ops.mean(ops.abs(pred_box - true_box) / side, axis=-1)
        box = ops.sum((1.0 - ciou + relative) * positive, axis=-1) / count
        return focal + self.box_weight * box

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight}


@keras.saving.register_keras_serializable(package="transferkit")
def positive_iou(y_true, y_pred):
    """Per image, the mean IoU of the boxes predicted at positive locations with their
    objects' (a training metric: how well the assigned locations box)."""
    ops = keras.ops
    y_pred = ops.cast(y_pred, "float32")
    dense = ops.cast(dense_part(y_true, y_pred), "float32")
    classes = y_pred.shape[-1] - 4
    positive = ops.cast(ops.max(dense[..., :classes], axis=-1) > 0, "float32")
    iou = paired_iou(dense[..., classes:], y_pred[..., classes:])
    return ops.sum(iou * positive, axis=-1) / ops.maximum(ops.sum(positive, axis=-1), 1.0)


def paired_iou(a, b):
    """IoU of each box of `a` with the box at the same index of `b` ([..., 4] xyxy,
    corners in order) -> [...]. (Keras's `compute_iou` pairs every box with every
    other: [N, M] where this needs the diagonal.)"""
    ops = keras.ops
    w = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0)
    h = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0)
    inter = w * h
    area = lambda x: ops.maximum(x[..., 2] - x[..., 0], 0) * ops.maximum(  # noqa: E731
        x[..., 3] - x[..., 1], 0)
    return inter / ops.maximum(area(a) + area(b) - inter, 1e-9)
