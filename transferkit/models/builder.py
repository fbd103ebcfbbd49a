"""`build_model`: raw RGB in, predictions out, with the backbone's preprocessing inside.

Layout of every transferkit model (named by `parts.ModelParts()`):

    image -> [resize] -> preprocess -> backbone -> pool -> head

"backbone" and "head" are nested `keras.Model`s; "pool" outputs the feature vector the
head reads, which is what the feature cache stores. The model is named after its
backbone spec, so freezing by block finds the spec again after a save and load.
"""

import dataclasses

import keras
from keras import layers

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.inputs import InputSpec
from transferkit.core.task_registry import DEFAULT_TASK, get_task
from transferkit.models.backbones import create_backbone
# The configs live in the light `models.config`, the input size is resolved by the
# registry's `resolve_input`; both importable from here as before.
from transferkit.models.config import HeadConfig, ModelConfig  # noqa: F401
from transferkit.models.heads import build_head, pooling_layer
from transferkit.models.layers import Preprocess
from transferkit.models.registry import MAX_IMAGE_SIDE, get_spec, resolve_input  # noqa: F401


@renamed(image_size="input_shape", **TRUSTED)
def build_model(backbone, num_classes=None, *, task=DEFAULT_TASK, weights=ModelConfig.weights,
                input_shape=None, pooling=None, resize=False, head=HeadConfig(),
                safe_mode=True, backbone_kwargs=None):
    """Build a transfer model on registered backbone `backbone` (e.g. "mobilenet_v2").

    num_classes: classes (or regression targets); the task decides the output width.
    weights: None, "imagenet" (default), a weights file or a saved `.keras` model
        (see `create_backbone`), loaded with Keras `safe_mode` unless `safe_mode=False`.
    input_shape: the image size the model takes: an int, (height, width), (height,
        width, 3) or an `InputSpec`; default: the spec's size.
    pooling: how the feature maps become the head's vector, as Keras Applications'
        `pooling`: "avg", "max" or "flatten" (default None: the head's, avg).
    resize: accept images of any size and resize them inside the model (default False:
        the input must already be `input_shape`).
    task: the task name or `Task` (default DEFAULT_TASK, "multiclass"): the output's
        width and activation.
    head: a `HeadConfig` (pooling, hidden units, dropout, ...).
    backbone_kwargs: extra constructor arguments, e.g. {"alpha": 0.35}.
    """
    spec = get_spec(backbone)
    if pooling is not None:
        head = dataclasses.replace(head, pooling=pooling)
    size = input_shape if isinstance(input_shape, InputSpec) else resolve_input(spec,
                                                                                input_shape)
    inputs = keras.Input(shape=(None, None, 3) if resize else size.shape, name="image")
    x = layers.Resizing(size.height, size.width, name="resize")(inputs) if resize else inputs
    x = Preprocess(spec.preprocessing, name="preprocess")(x)
    base = create_backbone(spec, weights=weights, input_shape=size.shape,
                           safe_mode=safe_mode, **dict(backbone_kwargs or {}))
    # training=False documents intent, but Keras 3 functional models pass the outer
    # call's `training` down to nested models (functional.operation_fn), so BatchNorm
    # inference mode is really enforced by keeping BN layers non-trainable (freezing).
    x = base(x, training=False)
    x = pooling_layer(head.pooling)(x) if len(x.shape) == 4 else layers.Identity(name="pool")(x)
    units = get_task(task).output_units(num_classes)
    outputs = build_head(x.shape[-1], units, head, task)(x)
    return keras.Model(inputs, outputs, name=spec.name)
