"""`build_model`: raw RGB in, predictions out, with the backbone's preprocessing inside.

Layout of every transferkit model (the names are a contract other modules rely on):

    image -> [resize] -> preprocess -> backbone -> pool -> head

"backbone" and "head" are nested `keras.Model`s; "pool" outputs the feature vector the
head reads, which is what the feature cache stores. The model is named after its
backbone spec, so freezing and recipes can find the spec again after a save and load.
"""

import keras
from keras import layers

from transferkit.models.backbones import create_backbone, get_spec
from transferkit.core.errors import ConfigError
from transferkit.models.heads import HeadConfig, build_head, output_units, pooling_layer
from transferkit.models.layers import Preprocess


def build_model(backbone, num_classes=None, *, weights="imagenet", image_size=None,
                resize=False, head=HeadConfig(), trusted=False, backbone_kwargs=None):
    """Build a transfer model on registered backbone `backbone` (e.g. "mobilenet_v2").

    num_classes: outputs of the head (ignored for task="binary").
    weights: None, "imagenet" (default), a weights file or a saved `.keras` model
        (see `create_backbone`); `trusted=True` loads the latter without safe mode.
    image_size: an int or (height, width); default: the spec's `default_size`.
    resize: accept images of any size and resize them inside the model (default False:
        the input must already be `image_size`).
    head: a `HeadConfig` (task, pooling, hidden units, dropout, ...).
    backbone_kwargs: extra constructor arguments, e.g. {"alpha": 0.35}.
    """
    spec = get_spec(backbone)
    height, width = _size(image_size or spec.default_size)
    inputs = keras.Input(shape=(None, None, 3) if resize else (height, width, 3),
                         name="image")
    x = layers.Resizing(height, width, name="resize")(inputs) if resize else inputs
    x = Preprocess(spec.preprocessing, name="preprocess")(x)
    base = create_backbone(spec, weights=weights, input_shape=(height, width, 3),
                           trusted=trusted, **dict(backbone_kwargs or {}))
    # training=False documents intent, but Keras 3 functional models pass the outer
    # call's `training` down to nested models (functional.operation_fn), so BatchNorm
    # inference mode is really enforced by keeping BN layers non-trainable (freezing).
    x = base(x, training=False)
    x = pooling_layer(head.pooling)(x) if len(x.shape) == 4 else layers.Identity(name="pool")(x)
    outputs = build_head(x.shape[-1], output_units(head.task, num_classes), head)(x)
    return keras.Model(inputs, outputs, name=spec.name)


def spec_of(model):
    """The backbone spec a transferkit model was built on (from its name)."""
    return get_spec(model.name)


def feature_extractor(model):
    """A `keras.Model` from the raw image input to the pooled feature vector."""
    return keras.Model(model.inputs, model.get_layer("pool").output, name="features")


def _size(image_size):
    if isinstance(image_size, int):
        return image_size, image_size
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ConfigError("The `image_size` argument should be an int or (height, width). "
                          f"Received: image_size={image_size!r}") from None
    return height, width
