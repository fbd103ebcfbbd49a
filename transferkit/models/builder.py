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

from transferkit.core.config import section, setting
from transferkit.core.inputs import InputSpec, parse_size
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import HeadConfig, build_head, pooling_layer
from transferkit.models.layers import Preprocess
from transferkit.models.registry import get_spec


# Larger inputs are surely a typo (one batch would not fit in memory), refused up front.
MAX_IMAGE_SIDE = 4096


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model a run builds: backbone, its weights and input size, head or decoder."""

    backbone: str = setting("efficientnet_lite0", "registered backbone name (`transferkit "
                            "backbones` lists them), hub:PRESET, or a .keras model file")
    weights: str = setting("imagenet", "imagenet, none (random init) or the path of a "
                           "weights file or .keras model")
    image_size: int = setting(0, "input side in pixels (0: the backbone's default size)")
    backbone_kwargs: tuple = setting((), "extra backbone constructor arguments as "
                                     "key=value pairs, e.g. alpha=0.35")
    head: HeadConfig = section(HeadConfig())
    decoder_width: int = setting(32, "segmentation only: U-Net decoder filters at the "
                                 "shallowest skip (doubling at each deeper one)")

    def __post_init__(self):
        kwargs = self.backbone_kwargs
        kwargs = kwargs.items() if isinstance(kwargs, dict) else kwargs
        # Tuples, not lists or dicts, so the config stays hashable and truly frozen.
        object.__setattr__(self, "backbone_kwargs", tuple(tuple(kv) for kv in kwargs))
        if any(len(kv) != 2 for kv in self.backbone_kwargs):
            raise ConfigError("The `backbone_kwargs` setting should be key=value pairs. "
                              f"Received: backbone_kwargs={self.backbone_kwargs}")
        if self.image_size < 0 or self.decoder_width < 1:
            raise ConfigError("The `image_size` setting should be >= 0 (0: the backbone's "
                              "default) and `decoder_width` >= 1. Received: "
                              f"image_size={self.image_size}, "
                              f"decoder_width={self.decoder_width}")

    def input_spec(self):
        """The InputSpec of this model (its image_size, else the backbone's).

        Resolving the backbone also checks `backbone_kwargs` against it, so `train` and
        `tune`, which ask this first, refuse an unknown one before any slow work."""
        spec = get_spec(self.backbone)
        spec.check_kwargs(dict(self.backbone_kwargs))
        return resolve_input(spec, self.image_size or None)

    def weights_arg(self):
        """`weights` as `build_model` takes it (None for "none")."""
        return None if self.weights in ("", "none", "None") else self.weights


def resolve_input(backbone, image_size=None):
    """The `InputSpec` a model on `backbone` takes: `image_size` (an int or
    (height, width); None or 0: the spec's default size), checked against the spec's
    minimum size. Every entry point resolves the input size here, once."""
    spec = get_spec(backbone)
    height, width = parse_size(image_size or spec.default_size)
    if min(height, width) < spec.min_size or max(height, width) > MAX_IMAGE_SIDE:
        raise ConfigError(f"Backbone {spec.name!r} takes images of {spec.min_size} to "
                          f"{MAX_IMAGE_SIDE} pixels a side. Received: "
                          f"image_size={image_size!r}")
    return InputSpec(height, width, 3)


def build_model(backbone, num_classes=None, *, task="multiclass", weights="imagenet",
                image_size=None, resize=False, head=HeadConfig(), trusted=False,
                backbone_kwargs=None):
    """Build a transfer model on registered backbone `backbone` (e.g. "mobilenet_v2").

    num_classes: classes (or regression targets); the task decides the output width.
    weights: None, "imagenet" (default), a weights file or a saved `.keras` model
        (see `create_backbone`); `trusted=True` loads the latter without safe mode.
    image_size: an int, (height, width) or an `InputSpec`; default: the spec's size.
    resize: accept images of any size and resize them inside the model (default False:
        the input must already be `image_size`).
    task: the task name or `Task` ("multiclass"): the output's width and activation.
    head: a `HeadConfig` (pooling, hidden units, dropout, ...).
    backbone_kwargs: extra constructor arguments, e.g. {"alpha": 0.35}.
    """
    spec = get_spec(backbone)
    size = image_size if isinstance(image_size, InputSpec) else resolve_input(spec,
                                                                              image_size)
    inputs = keras.Input(shape=(None, None, 3) if resize else size.shape, name="image")
    x = layers.Resizing(size.height, size.width, name="resize")(inputs) if resize else inputs
    x = Preprocess(spec.preprocessing, name="preprocess")(x)
    base = create_backbone(spec, weights=weights, input_shape=size.shape, trusted=trusted,
                           **dict(backbone_kwargs or {}))
    # training=False documents intent, but Keras 3 functional models pass the outer
    # call's `training` down to nested models (functional.operation_fn), so BatchNorm
    # inference mode is really enforced by keeping BN layers non-trainable (freezing).
    x = base(x, training=False)
    x = pooling_layer(head.pooling)(x) if len(x.shape) == 4 else layers.Identity(name="pool")(x)
    units = get_task(task).output_units(num_classes)
    outputs = build_head(x.shape[-1], units, head, task)(x)
    return keras.Model(inputs, outputs, name=spec.name)
