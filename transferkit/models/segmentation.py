"""`build_segmenter`: a U-Net decoder over any registered backbone with `skips`.

Layout (the same named parts as `build_model`, so freezing, the two-phase loop,
saving and loading work unchanged):

    image -> preprocess -> backbone -> pool (identity on the deepest map) -> decoder
                              |  skips (spec.skips) --------------------------^

"backbone" is the registered backbone as a nested model that also returns the outputs
of the spec's skip layers; everything after it is the decoder (the "head"): per skip,
deepest first, a stride-k transposed convolution up to the skip's resolution,
concatenation, and two 3x3 conv-BN-ReLU; then one transposed convolution back to the
input resolution and a 1x1 convolution to the classes (Ronneberger et al. 2015).
"""

import keras
from keras import layers

from transferkit.core.errors import ConfigError
from transferkit.core.inputs import InputSpec
from transferkit.core.tasks import get_task
from transferkit.models.backbones import create_backbone
from transferkit.models.builder import resolve_input
from transferkit.models.layers import Preprocess
from transferkit.models.registry import get_spec, list_backbones


def segmentation_backbones():
    """Names of the registered backbones a U-Net decoder can sit on (non-empty skips)."""
    return [n for n in list_backbones() if get_spec(n).skips]


def build_segmenter(backbone, num_classes, *, weights="imagenet", image_size=None,
                    decoder_width=32, task="segmentation", trusted=False,
                    backbone_kwargs=None):
    """A segmentation model on registered backbone `backbone` (e.g. "mobilenet_v2").

    num_classes: classes per pixel, background included (1: one sigmoid channel).
    weights, image_size, trusted, backbone_kwargs: as in `build_model`.
    decoder_width: filters of the decoder stage at the shallowest skip (32); each
        deeper stage doubles it. Output: [B, H, W, C] at the input's resolution.
    """
    spec = get_spec(backbone)
    if not spec.skips:
        raise ConfigError(f"Backbone {spec.name!r} names no skip layers for a "
                          f"segmentation decoder. Backbones that do: "
                          f"{segmentation_backbones()}")
    if int(decoder_width) < 1:
        raise ConfigError(f"The `decoder_width` argument should be >= 1. Received: "
                          f"decoder_width={decoder_width!r}")
    size = image_size if isinstance(image_size, InputSpec) else resolve_input(spec,
                                                                              image_size)
    task = get_task(task)
    units = task.output_units(num_classes)
    base = create_backbone(spec, weights=weights, input_shape=size.shape, trusted=trusted,
                           **dict(backbone_kwargs or {}))
    # One nested model returning the deepest map first, then the skips: the parts
    # contract takes the backbone's first output as its output.
    encoder = keras.Model(base.inputs, [base.outputs[0]] + [
        base.get_layer(name).output for name in reversed(spec.skips)], name="backbone")
    inputs = keras.Input(shape=size.shape, name="image")
    x = Preprocess(spec.preprocessing, name="preprocess")(inputs)
    deep, *skips = encoder(x, training=False)  # BN inference mode: see build_model
    x = layers.Identity(name="pool")(deep)
    for i, skip in enumerate(skips):
        stage = len(skips) - 1 - i  # 0 at the shallowest skip
        x = _up(x, skip.shape[1], skip.shape[2], decoder_width * 2 ** stage,
                f"decoder{stage}_up", size)
        x = layers.Concatenate(name=f"decoder{stage}_concat")([x, skip])
        for j in (1, 2):
            x = layers.Conv2D(decoder_width * 2 ** stage, 3, padding="same",
                              use_bias=False, name=f"decoder{stage}_conv{j}")(x)
            # momentum 0.9: the decoder starts from scratch on small sets, and its
            # moving statistics must catch up within a few hundred steps.
            x = layers.BatchNormalization(momentum=0.9, name=f"decoder{stage}_bn{j}")(x)
            x = layers.ReLU(name=f"decoder{stage}_relu{j}")(x)
    x = _up(x, size.height, size.width, decoder_width, "decoder_out_up", size)
    # float32 output so mixed precision never rounds the softmax (as in build_head).
    outputs = layers.Conv2D(units, 1, activation=task.output_activation(units),
                            dtype="float32", name="segmentation")(x)
    return keras.Model(inputs, outputs, name=spec.name)


def _up(x, height, width, filters, name, size):
    """A transposed convolution from x's resolution to (height, width)."""
    sh, sw = height // x.shape[1], width // x.shape[2]
    if sh * x.shape[1] != height or sw * x.shape[2] != width:
        raise ConfigError(f"image_size={size.size} does not divide into the backbone's "
                          f"feature maps ({x.shape[1]}x{x.shape[2]} -> {height}x{width}); "
                          "use an image size that is a multiple of 32.")
    if (sh, sw) == (1, 1):
        return x
    return layers.Conv2DTranspose(filters, (sh, sw), strides=(sh, sw), padding="same",
                                  name=name)(x)
