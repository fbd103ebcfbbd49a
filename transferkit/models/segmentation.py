"""`build_segmenter`: a U-Net decoder over any registered backbone.

Layout (the same named parts as `build_model`, so freezing, the two-phase loop,
saving and loading work unchanged):

    image -> preprocess -> backbone -> pool (identity on the deepest map) -> decoder
                              |  skips (`skip_layers`) -----------------------^

"backbone" is the registered backbone as a nested model that also returns the outputs
of its skip layers; everything after it is the decoder (the "head"): per skip,
deepest first, a stride-k transposed convolution up to the skip's resolution,
concatenation, and two 3x3 conv-BN-ReLU; then one transposed convolution back to the
input resolution and a 1x1 convolution to the classes (Ronneberger et al. 2015).
Where a backbone's maps are not an integer factor apart ("valid"-padded networks such
as Inception), bilinear resizing and a 3x3 convolution replace the transposed one.
"""

import keras
from keras import layers

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError
from transferkit.core.inputs import InputSpec
from transferkit.core.task_registry import get_task
from transferkit.models.backbones import create_backbone
from transferkit.models.builder import resolve_input
from transferkit.models.config import ModelConfig
from transferkit.models.layers import Preprocess
from transferkit.models.registry import get_spec


@renamed(image_size="input_shape", **TRUSTED)
def build_segmenter(backbone, num_classes, *, weights=ModelConfig.weights, input_shape=None,
                    decoder_width=ModelConfig.decoder_width, task="segmentation",
                    safe_mode=True, backbone_kwargs=None):
    """A segmentation model on registered backbone `backbone` (e.g. "mobilenet_v2").

    num_classes: classes per pixel, background included (1: one sigmoid channel).
    weights, input_shape, safe_mode, backbone_kwargs: as in `build_model`.
    decoder_width: filters of the decoder stage at the shallowest skip (32); each
        deeper stage doubles it. Output: [B, H, W, C] at the input's resolution.
    """
    spec = get_spec(backbone)
    if int(decoder_width) < 1:
        raise ConfigError(f"The `decoder_width` argument should be >= 1. Received: "
                          f"decoder_width={decoder_width!r}")
    size = input_shape if isinstance(input_shape, InputSpec) else resolve_input(spec,
                                                                                input_shape)
    task = get_task(task)
    units = task.output_units(num_classes)
    base = create_backbone(spec, weights=weights, input_shape=size.shape,
                           safe_mode=safe_mode, **dict(backbone_kwargs or {}))
    # One nested model returning the deepest map first, then the skips: the parts
    # contract takes the backbone's first output as its output.
    by_name = {op.name: op for op in base.operations}  # layers and bare ops (x + y)
    encoder = keras.Model(base.inputs, [base.outputs[0]] + [
        by_name[name].output for name in reversed(skip_layers(spec, base))],
        name="backbone")
    inputs = keras.Input(shape=size.shape, name="image")
    x = Preprocess(spec.preprocessing, name="preprocess")(inputs)
    deep, *skips = encoder(x, training=False)  # BN inference mode: see build_model
    x = layers.Identity(name="pool")(deep)
    for i, skip in enumerate(skips):
        stage = len(skips) - 1 - i  # 0 at the shallowest skip
        x = _up(x, skip.shape[1], skip.shape[2], decoder_width * 2 ** stage,
                f"decoder{stage}_up")
        x = layers.Concatenate(name=f"decoder{stage}_concat")([x, skip])
        for j in (1, 2):
            x = layers.Conv2D(decoder_width * 2 ** stage, 3, padding="same",
                              use_bias=False, name=f"decoder{stage}_conv{j}")(x)
            # momentum 0.9: the decoder starts from scratch on small sets, and its
            # moving statistics must catch up within a few hundred steps.
            x = layers.BatchNormalization(momentum=0.9, name=f"decoder{stage}_bn{j}")(x)
            x = layers.ReLU(name=f"decoder{stage}_relu{j}")(x)
    x = _up(x, size.height, size.width, decoder_width, "decoder_out_up")
    # float32 output so mixed precision never rounds the softmax (as in build_head).
    outputs = layers.Conv2D(units, 1, activation=task.output_activation(units),
                            dtype="float32", name="segmentation")(x)
    return keras.Model(inputs, outputs, name=spec.name)


def skip_layers(spec, base):
    """Names of the operations of built backbone `base` whose outputs the decoder joins,
    shallow to deep: the spec's own `skips` when it names them, else read off the graph.

    Read off the graph: at each resolution between the input's and the output's, the
    last of the operations every input-to-output path passes through (the main path,
    not inside a residual or Inception branch; where no operation is, as between
    NASNet's two-input cells, the ones fewest connections bypass), i.e. the map just
    before each downsampling; levels less than twice the area of the next deeper one are dropped,
    so "valid"-padded networks (45 then 47 pixels) keep one level per stride.
    Raises ConfigError when the output is not a [B, H, W, C] feature map.
    """
    out = base.outputs[0].shape
    if len(base.outputs) != 1 or len(out) != 4 or None in out[1:3]:
        raise ConfigError(f"Backbone {spec.name!r} outputs {tuple(out)}, not one "
                          "[batch, height, width, channels] feature map, so a "
                          "segmentation decoder cannot sit on it; pick a convolutional "
                          "backbone (`transferkit backbones`).")
    if spec.skips:
        return tuple(spec.skips)
    ops = base.operations  # topological; bare ops (ConvNeXt's `x + y`) included
    order = {id(op): i for i, op in enumerate(ops)}
    jumped = [0] * (len(ops) + 1)  # edges passing over each position
    for op in ops:
        for parent in _parents(op):
            lo, hi = order.get(id(parent), -1) + 1, order[id(op)]
            if lo < hi:
                jumped[lo] += 1
                jumped[hi] -= 1
    area = lambda s: s[0] * s[1]  # noqa: E731
    levels, passing = {}, 0  # side -> (edges passing over it, -position, name)
    for i, op in enumerate(ops):
        passing += jumped[i]
        side = _side(op)
        # A map larger than its input (zero padding) is no resolution of its own.
        grown = side and any(area(_side(p) or side) < area(side) for p in _parents(op))
        if side and not grown:  # fewest bypassing edges, then the latest, wins
            levels[side] = min(levels.get(side, (passing, -i, op.name)),
                               (passing, -i, op.name))
    levels = {side: best[2] for side, best in levels.items()}
    top, deepest = area(tuple(base.inputs[0].shape[1:3])), area(tuple(out[1:3]))
    chosen, last = [], deepest
    for side, name in sorted(levels.items(), key=lambda kv: area(kv[0])):
        if 2 * last <= area(side) < top:
            chosen.append(name)
            last = area(side)
    return tuple(reversed(chosen))


def _parents(op):
    # Node 0: the call that built the backbone (later calls belong to other graphs).
    node = op._inbound_nodes[0] if op._inbound_nodes else None
    return [t._keras_history.operation for t in (node.input_tensors if node else ())]


def _side(op):
    """(height, width) of an operation's single 4-D output, or None."""
    try:
        shape = op.output.shape
    except (AttributeError, ValueError):  # several outputs, or never called
        return None
    return tuple(shape[1:3]) if len(shape) == 4 and None not in shape[1:3] else None


def _up(x, height, width, filters, name):
    """Up from x's resolution to (height, width): a transposed convolution by an
    integer factor, else bilinear resizing and a 3x3 convolution."""
    sh, sw = height // x.shape[1], width // x.shape[2]
    if (sh, sw) == (1, 1) and (height, width) == tuple(x.shape[1:3]):
        return x
    if sh * x.shape[1] == height and sw * x.shape[2] == width:
        return layers.Conv2DTranspose(filters, (sh, sw), strides=(sh, sw),
                                      padding="same", name=name)(x)
    x = layers.Resizing(height, width, interpolation="bilinear", name=f"{name}_resize")(x)
    return layers.Conv2D(filters, 3, padding="same", name=name)(x)
