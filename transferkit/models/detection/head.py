"""`build_detector`: a dense head on a backbone's feature pyramid, per location class
scores and a box.

Layout (the named parts of `build_model`, so freezing, both caches, saving and
loading work unchanged):

    image -> preprocess -> backbone -> pool -> head
                              |                 |
       the pyramid's maps, flattened and   unpacked into the maps again; per level a
       joined in ONE tensor (what phase 1  1x1 lateral, the coarser level added on top
       caches: both scales per image)      (a light FPN), a shared tower of 3x3 convs,
                                           class scores (sigmoid) and a box decoded at
                                           the location (`GridBoxes`) -> [B, L, C + 4]

The output's L rows are the grid's locations (`grid.Grid`, level by level, row-major),
each C class scores then the box (xmin, ymin, xmax, ymax) normalised to the input: the
box is decoded in the model, so every consumer (the loss, post-processing, an exported
file) reads boxes, never offsets.
"""

import math

import keras
from keras import layers

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError
from transferkit.core.inputs import InputSpec
from transferkit.models.backbones import create_backbone
from transferkit.models.builder import resolve_input
from transferkit.models.detection.config import INPUT_SCALE
from transferkit.models.detection.grid import feature_grid, pyramid_of
from transferkit.models.layers import Preprocess
from transferkit.models.registry import get_spec
from transferkit.models.segmentation import skip_layers

OUTPUT = "detections"  # the output layer's name: how a dense box model is recognised
PRIOR = 0.01  # initial class score everywhere (RetinaNet's prior: stable focal loss)
MAX_LOG_DISTANCE = 8.0  # exp() of at most this (e^8 cells): no overflow early on


@keras.saving.register_keras_serializable(package="transferkit")
class UnpackMaps(keras.layers.Layer):
    """The flat [B, D] pyramid vector back into its maps, [B, h, w, c] each."""

    def __init__(self, shapes, **kwargs):
        super().__init__(**kwargs)
        self.shapes = [tuple(int(v) for v in shape) for shape in shapes]

    def call(self, x):
        maps, start = [], 0
        for h, w, c in self.shapes:
            size = h * w * c
            maps.append(keras.ops.reshape(x[:, start:start + size], (-1, h, w, c)))
            start += size
        return maps

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], *shape) for shape in self.shapes]

    def get_config(self):
        return {**super().get_config(), "shapes": [list(s) for s in self.shapes]}


@keras.saving.register_keras_serializable(package="transferkit")
class GridBoxes(keras.layers.Layer):
    """Box regressions [B, h, w, 4] of one level -> boxes normalised xyxy: each
    location's (left, top, right, bottom) distances, exp(raw) cells, from its centre
    (FCOS, Tian et al. 2019). level: (height, width, stride); image: (H, W)."""

    def __init__(self, level, image, **kwargs):
        super().__init__(**kwargs)
        self.level = tuple(int(v) for v in level)
        self.image = tuple(int(v) for v in image)

    def call(self, raw):
        ops = keras.ops
        h, w, s = self.level
        height, width = self.image
        xs = (ops.arange(w, dtype="float32") + 0.5) * (s / width)
        ys = (ops.arange(h, dtype="float32") + 0.5) * (s / height)
        cx = ops.broadcast_to(xs[None, :], (h, w))
        cy = ops.broadcast_to(ys[:, None], (h, w))
        d = ops.exp(ops.minimum(ops.cast(raw, "float32"), MAX_LOG_DISTANCE))
        dx, dy = s / width, s / height
        return ops.stack([cx - d[..., 0] * dx, cy - d[..., 1] * dy,
                          cx + d[..., 2] * dx, cy + d[..., 3] * dy], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "level": list(self.level),
                "image": list(self.image)}


@renamed(image_size="input_shape", **TRUSTED)
def build_detector(backbone, num_classes, *, weights="imagenet", input_shape=None,
                   width=64, task="detection", safe_mode=True, backbone_kwargs=None):
    """A dense detection model on registered backbone `backbone`: [B, L, C + 4] out.

    num_classes: C, the object classes (no background class: scores are sigmoids).
    width: filters of the head's lateral, tower and top-down convolutions (64).
    input_shape: default the backbone's size times `INPUT_SCALE` (320 px on Lite0).
    weights, safe_mode, backbone_kwargs: as in `build_model`.
    """
    spec = get_spec(backbone)
    if int(width) < 1 or int(num_classes) < 1:
        raise ConfigError(f"A detection head needs `width` >= 1 and `num_classes` >= 1. "
                          f"Received: width={width!r}, num_classes={num_classes!r}")
    size = input_shape if isinstance(input_shape, InputSpec) else resolve_input(
        spec, input_shape, INPUT_SCALE)
    grid = feature_grid(spec, size)
    base = create_backbone(spec, weights=weights, input_shape=size.shape,
                           safe_mode=safe_mode, **dict(backbone_kwargs or {}))
    inputs = keras.Input(shape=size.shape, name="image")
    x = Preprocess(spec.preprocessing, name="preprocess")(inputs)
    encoder, channels = pyramid_backbone(spec, base, grid)
    x = encoder(x, training=False)  # BN inference mode: see build_model
    x = layers.Identity(name="pool")(x)
    head = detection_head(x.shape[-1], grid, channels, num_classes, width)
    return keras.Model(inputs, head(x), name=spec.name)


def pyramid_backbone(spec, base, grid):
    """(`base` as a nested model named "backbone" whose one output is its pyramid's
    maps (resized to the grid's sizes where they differ), flattened and joined: one
    tensor per image, so both caches hold every scale; each map's channels)."""
    by_name = {op.name: op for op in base.operations}  # layers and bare ops (x + y)
    maps, channels = [], []
    for i, (name, _) in enumerate(_pyramid_names(spec, base, grid)):
        x = by_name[name].output if name else base.outputs[0]
        h, w, _ = grid.levels[i]
        if tuple(x.shape[1:3]) != (h, w):  # e.g. "valid" padding: 8x8 where 7x7 is due
            x = layers.Resizing(h, w, name=f"pyramid_resize{i}")(x)
        channels.append(int(x.shape[-1]))
        maps.append(layers.Reshape((-1,), name=f"pyramid_flatten{i}")(x))
    packed = maps[0] if len(maps) == 1 else layers.Concatenate(name="pyramid")(maps)
    return keras.Model(base.inputs, packed, name="backbone"), channels


def _pyramid_names(spec, base, grid):
    """(operation name or None for the output, stride) per level of `spec.pyramid`."""
    out = base.outputs[0]
    if len(base.outputs) != 1 or len(out.shape) != 4:
        raise ConfigError(f"Backbone {spec.name!r} outputs {tuple(out.shape)}, not one "
                          "[batch, height, width, channels] feature map, so a dense head "
                          "cannot sit on it; pick a convolutional backbone.")
    levels = pyramid_of(spec)
    found = []
    for i, (name, stride) in enumerate(levels):
        if name is None and i < len(levels) - 1:
            name = _map_at(spec, base, grid.levels[i])
        found.append((name, stride))
    return found


def _map_at(spec, base, level):
    """The graph's map nearest the size of `level` among the levels a segmentation
    decoder would join (`skip_layers`: the last operation at each resolution)."""
    h, w, stride = level
    by_name = {op.name: op for op in base.operations}
    candidates = skip_layers(spec, base)
    if not candidates:
        raise ConfigError(f"Backbone {spec.name!r} has no map at stride {stride} to read "
                          "off its graph; name the layer in `BackboneSpec.pyramid`.")
    return min(candidates, key=lambda n: abs(math.log(
        by_name[n].output.shape[1] * by_name[n].output.shape[2] / (h * w))))


def detection_head(feature_size, grid, channels, num_classes, width=64):
    """The head as its own `keras.Model` named "head": the packed pyramid [D] in,
    [L, C + 4] out (see the module docstring). channels: each level's map depth."""
    shapes = [(h, w, c) for (h, w, _), c in zip(grid.levels, channels)]
    if sum(h * w * c for h, w, c in shapes) != feature_size:
        raise ConfigError(f"The pyramid's maps {shapes} do not add up to its "
                          f"{feature_size} features.")
    inputs = keras.Input(shape=(feature_size,), name="features")
    maps = UnpackMaps(shapes, name="unpack")(inputs)
    maps = maps if isinstance(maps, (list, tuple)) else [maps]
    laterals = [layers.Conv2D(width, 1, name=f"head_lateral{i}")(m)
                for i, m in enumerate(maps)]
    # Top-down: each level gets the coarser one's (upsampled) semantics (Lin et al.
    # 2017); nearest upsampling to the exact size, as odd sizes do not halve evenly.
    levels = [laterals[-1]]
    for i in range(len(laterals) - 2, -1, -1):
        h, w, _ = grid.levels[i]
        up = layers.Resizing(h, w, interpolation="nearest", name=f"head_up{i}")(levels[0])
        levels.insert(0, layers.Add(name=f"head_merge{i}")([laterals[i], up]))
    # One tower and one pair of predictors for every level: an object is the same
    # class at any scale, and each sees twice the examples.
    tower = [layers.Conv2D(width, 3, padding="same", activation="relu",
                           name=f"head_tower{j}") for j in (1, 2)]
    # Small initial weights (FCOS's N(0, 0.01)): every box starts one cell from its
    # location on each side, and every score at PRIOR, so neither loss starts saturated.
    small = keras.initializers.RandomNormal(stddev=0.01)
    classes = layers.Conv2D(num_classes, 3, padding="same", activation="sigmoid",
                            kernel_initializer=small,
                            bias_initializer=keras.initializers.Constant(
                                -math.log((1 - PRIOR) / PRIOR)), name="head_classes")
    boxes = layers.Conv2D(4, 3, padding="same", kernel_initializer=small,
                          name="head_boxes")
    rows = []
    for i, x in enumerate(levels):
        for conv in tower:
            x = conv(x)
        h, w, _ = grid.levels[i]
        located = GridBoxes(grid.levels[i], grid.image, name=f"head_decode{i}")(boxes(x))
        both = layers.Concatenate(name=f"head_level{i}")([classes(x), located])
        rows.append(layers.Reshape((h * w, num_classes + 4), name=f"head_rows{i}")(both))
    # float32 output so mixed precision never rounds the scores (as in build_head).
    out = (layers.Concatenate(axis=1, dtype="float32", name=OUTPUT)(rows) if len(rows) > 1
           else layers.Activation("linear", dtype="float32", name=OUTPUT)(rows[0]))
    return keras.Model(inputs, out, name="head")
