"""Dense heads on the pooled feature vector.

A head is its own small `keras.Model` (named "head"), so the same head trains on cached
features and on the live backbone. Its output layer's width and activation come from
the task (a `tasks.Task`).
"""

import keras
from keras import layers

from transferkit.core.errors import check_choice
from transferkit.core.task_registry import DEFAULT_TASK, get_task
# The config lives in the light `models.config`; importable from here as before.
from transferkit.models.config import POOLINGS, HeadConfig  # noqa: F401

def pooling_layer(pooling):
    """The layer that turns backbone feature maps into a vector."""
    check_choice("pooling", pooling, POOLINGS)
    return {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
            "flatten": layers.Flatten}[pooling](name="pool")


def build_head(feature_size, num_outputs, config=HeadConfig(), task=DEFAULT_TASK):
    """A `keras.Model` named "head": feature vector in, predictions out, the output
    layer's activation the task's (`task`, default DEFAULT_TASK: "multiclass").

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
    activation = get_task(task).output_activation(num_outputs)
    outputs = layers.Dense(num_outputs, activation=activation,
                           kernel_regularizer=regularizer, dtype="float32",
                           name="head_predictions")(x)
    return keras.Model(inputs, outputs, name="head")
