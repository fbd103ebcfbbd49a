"""KerasHub backbones: `--backbone hub:PRESET`, a preset name or a local preset folder.

The backbone and its image converter come from KerasHub's own preset loading
(`keras_hub.models.Backbone.from_preset`, `keras_hub.layers.ImageConverter.from_preset`),
so whatever KerasHub can load, a Kaggle handle or a folder saved with `save_to_preset`,
works here. transferkit's in-model `Preprocess` takes the converter's place: the mode is
the one whose output equals the converter's on probe images (checked, not assumed), and
the input size is the converter's. A transformer's token sequence becomes a feature
vector by its class token (`ClassToken`); its transformer blocks, found inside it, are
the blocks `last_blocks:K` unfreezes and layer-wise LR decay counts (`models.blocks`).
Needs `pip install 'transferkit[hub]'`.
"""

import importlib.util
import re

import keras
import numpy as np

from transferkit.core.errors import ConfigError, WeightsError
from transferkit.models.layers import PREPROCESSING_MODES, ClassToken, Preprocess
from transferkit.models.registry import BackboneSpec, register_resolver

PREFIX = "hub:"
_SPECS: dict = {}  # preset -> spec, so a preset is probed once per process


def _keras_hub():
    if importlib.util.find_spec("keras_hub") is None:
        raise ConfigError("`hub:` backbones need KerasHub: pip install 'transferkit[hub]' "
                          "(or pip install keras-hub).")
    import keras_hub

    return keras_hub


def hub_spec(name):
    """The `BackboneSpec` of `name` = "hub:PRESET" (registered on first use)."""
    preset = name[len(PREFIX):]
    if not preset:
        raise ConfigError("The `backbone` argument `hub:PRESET` needs a preset name or "
                          f"folder after `hub:`. Received: backbone={name!r}")
    if preset not in _SPECS:
        _SPECS[preset] = _make_spec(preset)
    return _SPECS[preset]


def _load(preset, load_weights=True):
    keras_hub = _keras_hub()
    try:
        return (keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights),
                keras_hub.layers.ImageConverter.from_preset(preset))
    except Exception as error:  # KerasHub raises ValueError/OSError/... per source
        raise WeightsError(f"KerasHub could not load preset {preset!r} (a preset name or "
                           f"a folder saved with save_to_preset): {error}") from error


def _make_spec(preset):
    backbone, converter = _load(preset, load_weights=False)
    shape = tuple(backbone.input_shape)
    size = tuple(converter.image_size or ()) or shape[1:3]
    if len(shape) != 4 or shape[-1] != 3 or None in size or size[0] != size[1]:
        raise ConfigError(f"KerasHub preset {preset!r}: transferkit takes square RGB "
                          f"image backbones. Its input: {shape}, image size: {size}.")
    features = _features(backbone)
    if len(features.shape) not in (2, 4):
        raise ConfigError(f"KerasHub preset {preset!r} outputs {features.shape}; "
                          "transferkit needs feature maps, vectors or token sequences.")
    fixed = shape[1] is not None
    return BackboneSpec(
        name="hub_" + re.sub(r"\W", "_", preset.rstrip("/").split("/")[-1]),
        constructor=_constructor(preset, fixed), default_size=int(size[0]),
        min_size=int(size[0]) if fixed else 32,
        preprocessing=preprocessing_mode(converter, int(size[0])),
        feature_size=int(features.shape[-1]),
        # A transformer's blocks are found inside it (models.blocks); a CNN's layers
        # are each a block.
        block_pattern=r"^(.+)$", nested_blocks=True, family="keras_hub", imagenet=True,
        offline_weights=lambda: "preset", tags=("hub",),
        operations=len(backbone.operations),
        # A dense head reads a CNN's output map alone (its layers are nested inside
        # KerasHub's model, where no stride-16 map can be named); tokens: none.
        pyramid=((None, 32),) if len(features.shape) == 4 else ())


def _features(backbone, inputs=None):
    # A transformer outputs (batch, tokens, dim): its class token is the image feature.
    output = backbone.output if inputs is None else backbone(inputs)
    if len(output.shape) == 3:
        output = ClassToken(name="class_token")(output)
    return output


def _constructor(preset, fixed):
    # No arguments beyond these: a preset is built as saved (check_kwargs refuses any).
    def build(include_top=False, weights=None, input_shape=None):
        if include_top:
            raise WeightsError("KerasHub backbones load without a classifier: use "
                               "include_top=False.")
        if weights not in (None, "imagenet"):
            raise WeightsError("A `hub:` backbone builds with its preset's weights "
                               "('imagenet') or None; create_backbone loads weight files. "
                               f"Received: weights={weights!r}")
        backbone, _ = _load(preset, load_weights=weights is not None)
        if fixed and input_shape and tuple(input_shape) != tuple(backbone.input_shape[1:]):
            raise ConfigError(f"KerasHub preset {preset!r} takes "
                              f"{backbone.input_shape[1:]} images only. Received: "
                              f"input_shape={tuple(input_shape)}")
        if len(backbone.output.shape) == 4:
            return backbone  # its layers are the blocks
        # A transformer: its class token on top. The KerasHub backbone stays one nested
        # layer, because only its own from_config can rebuild its layers on load.
        inputs = keras.Input(backbone.input_shape[1:], name="image")
        return keras.Model(inputs, _features(backbone, inputs), name=backbone.name)

    return build


def preprocessing_mode(converter, size):
    """The `Preprocess` mode whose output equals `converter`'s on probe images.

    Raises ConfigError when none does (a converter transferkit cannot reproduce).
    """
    pixels = np.array([0.0, 64.0, 127.5, 200.0, 255.0], "float32")
    probe = np.stack([np.roll(pixels, c) for c in range(3)], -1)  # channels differ
    images = np.broadcast_to(probe[:, None, None, :], (len(pixels), size, size, 3))
    expected = keras.ops.convert_to_numpy(converter(np.array(images)))
    for mode in PREPROCESSING_MODES:
        got = keras.ops.convert_to_numpy(Preprocess(mode)(images))
        if got.shape == expected.shape and np.allclose(got, expected, atol=1e-4):
            return mode
    raise ConfigError(
        f"The preset's image converter ({type(converter).__name__}: scale="
        f"{converter.scale}, offset={converter.offset}) matches none of transferkit's "
        f"preprocessing modes {PREPROCESSING_MODES}.")


register_resolver(PREFIX, hub_spec)
