"""Dense heads on the pooled feature vector.

A head is its own small `keras.Model` (named "head"), so the same head trains on cached
features and on the live backbone. Its output layer's width and activation come from
the task (a `tasks.Task`).
"""

import dataclasses

import keras
from keras import layers

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError, check_choice
from transferkit.core.task_registry import get_task

POOLINGS = ("avg", "max", "flatten")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Head hyperparameters (defaults: avg pooling, no hidden layer, dropout 0.2)."""

    pooling: str = setting("avg", "how the backbone's feature maps become the feature "
                           f"vector: {', '.join(POOLINGS)}")
    units: tuple = setting((), "widths of hidden Dense layers before the output, e.g. "
                           "256,128 (empty: a linear probe)", key="head_units")
    activation: str = setting("relu", "activation of the hidden Dense layers",
                              key="head_activation")
    dropout: float = setting(0.2, "dropout rate in [0, 1) before the output layer "
                             "(and after each hidden layer)")
    batch_norm: bool = setting(False, "BatchNorm after each hidden Dense layer",
                               key="head_batch_norm")
    l2: float = setting(0.0, "L2 penalty on the head's kernels (0: off)")

    def __post_init__(self):
        check_choice("pooling", self.pooling, POOLINGS)
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        if any(u < 1 for u in self.units):
            raise ConfigError(f"The `head_units` setting should hold widths >= 1. "
                              f"Received: head_units={self.units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"The `dropout` argument should be in [0, 1). Received: dropout={self.dropout}"
            )
        if self.l2 < 0:
            raise ConfigError(f"The `l2` argument should be >= 0. Received: l2={self.l2}")


def pooling_layer(pooling):
    """The layer that turns backbone feature maps into a vector."""
    check_choice("pooling", pooling, POOLINGS)
    return {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
            "flatten": layers.Flatten}[pooling](name="pool")


def build_head(feature_size, num_outputs, config=HeadConfig(), task="multiclass"):
    """A `keras.Model` named "head": feature vector in, predictions out, the output
    layer's activation the task's (`task`, default "multiclass").

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
    outputs = layers.Dense(num_outputs, activation=get_task(task).activation,
                           kernel_regularizer=regularizer, dtype="float32",
                           name="head_predictions")(x)
    return keras.Model(inputs, outputs, name="head")
