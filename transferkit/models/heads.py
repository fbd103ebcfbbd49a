"""Dense heads and the loss and metrics that go with each task.

A head is its own small `keras.Model` (named "head") on the pooled feature vector, so
the same head trains on cached features and on the live backbone.
"""

import dataclasses

import keras
from keras import layers

from transferkit.core.errors import ConfigError, check_choice

TASKS = ("multiclass", "binary", "multilabel", "regression")
POOLINGS = ("avg", "max", "flatten")
_OUTPUT_ACTIVATION = {"multiclass": "softmax", "binary": "sigmoid",
                      "multilabel": "sigmoid", "regression": "linear"}


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Head hyperparameters (defaults: avg pooling, no hidden layer, dropout 0.2).

    units: widths of hidden Dense layers, e.g. (256,) — empty for a linear probe.
    """

    task: str = "multiclass"
    pooling: str = "avg"
    units: tuple = ()
    activation: str = "relu"
    dropout: float = 0.2
    batch_norm: bool = False
    l2: float = 0.0

    def __post_init__(self):
        check_choice("task", self.task, TASKS)
        check_choice("pooling", self.pooling, POOLINGS)
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"The `dropout` argument should be in [0, 1). Received: dropout={self.dropout}"
            )
        if self.l2 < 0:
            raise ConfigError(f"The `l2` argument should be >= 0. Received: l2={self.l2}")


def output_units(task, num_classes):
    """Width of the output layer: 1 for binary, else `num_classes` (outputs)."""
    check_choice("task", task, TASKS)
    if task == "binary":
        return 1
    if not num_classes or num_classes < 1:
        raise ConfigError(f"The `num_classes` argument should be >= 1 for task={task!r}. "
                          f"Received: num_classes={num_classes!r}")
    return int(num_classes)


def pooling_layer(pooling):
    """The layer that turns backbone feature maps into a vector."""
    check_choice("pooling", pooling, POOLINGS)
    return {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
            "flatten": layers.Flatten}[pooling](name="pool")


def build_head(feature_size, num_outputs, config=HeadConfig()):
    """A `keras.Model` named "head": feature vector in, predictions out.

    The output layer computes in float32 so mixed precision never rounds the softmax.
    """
    regularizer = keras.regularizers.L2(config.l2) if config.l2 else None
    inputs = keras.Input(shape=(feature_size,), name="features")
    x = inputs
    for i, width in enumerate(config.units):
        x = layers.Dense(width, kernel_regularizer=regularizer, name=f"head_dense_{i}")(x)
        if config.batch_norm:
            x = layers.BatchNormalization(name=f"head_bn_{i}")(x)
        x = layers.Activation(config.activation, name=f"head_act_{i}")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name=f"head_dropout_{i}")(x)
    if config.dropout and not config.units:
        x = layers.Dropout(config.dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_outputs, activation=_OUTPUT_ACTIVATION[config.task],
                           kernel_regularizer=regularizer, dtype="float32",
                           name="head_predictions")(x)
    return keras.Model(inputs, outputs, name="head")


def task_of(model):
    """The task a transferkit model was built for, read off its output layer."""
    head = model.get_layer("head") if any(l.name == "head" for l in model.layers) else model
    out = head.layers[-1]
    activation = getattr(out.activation, "__name__", "")
    if activation == "softmax":
        return "multiclass"
    if activation == "sigmoid":
        return "binary" if out.units == 1 else "multilabel"
    return "regression"


def loss_and_metrics(task, num_outputs, label_smoothing=0.0):
    """(loss, metrics) matching `task`; labels are one-hot / multi-hot float vectors."""
    check_choice("task", task, TASKS)
    if task == "multiclass":
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_outputs > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing), metrics
    if task in ("binary", "multilabel"):
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"),
                   keras.metrics.AUC(name="auc", multi_label=task == "multilabel",
                                     num_labels=num_outputs if task == "multilabel" else None)]
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing), metrics
    return keras.losses.MeanSquaredError(), [keras.metrics.MeanAbsoluteError(name="mae")]
