"""Test-time augmentation as registered layers, so it survives save, load and export.

    tta = with_tta(model, "ten_crop")   # 4 corners + centre, each also mirrored
    probs = tta.predict(images)          # same input and output shapes as `model`

Each image becomes V views stacked along the batch axis (`TTAViews`), the wrapped
model scores all B*V views in one call, and `ViewMean` averages the V predictions of
each image back to [B, C]. Both are plain Keras layers (no Lambda), so the wrapped model
loads with `safe_mode` on and exports to SavedModel and TFLite like any other.

Presets (the course notes' 10-crop is "ten_crop"):
    "flip"       the image and its horizontal mirror               2 views
    "five_crop"  4 corner crops and the centre crop                5 views
    "ten_crop"   the five crops and their mirrors                 10 views
Crops cover `crop_fraction` (default 0.875, i.e. 224 of 256) of each side and are
resized back to the model's input size, since transferkit models have a fixed input.
Per-pixel outputs ([B, H, W, C], segmentation) take "flip" only: the mirrored view's
prediction is mirrored back before the mean, so pixels agree; a crop's would not map
back onto the whole image.

`tta_of(model)` names the preset a wrapped model averages and `unwrap_tta(model)` gives
the plain model back: a run may store its model wrapped (flip TTA chosen on validation
at the end of training, see `evaluate.flip_decision`).
"""

import keras
from keras import ops

from transferkit.core.errors import ConfigError, check_choice
# The presets live in the light `models.config` (the commands' `--tta` offers them).
from transferkit.models.config import TTA_PRESETS as PRESETS
CROP_ORDER = ("center", "top_left", "top_right", "bottom_left", "bottom_right")
CROP_FRACTION = 0.875  # each crop's side over the image's: 224 of 256


@keras.saving.register_keras_serializable(package="transferkit")
class TTAViews(keras.layers.Layer):
    """[B, H, W, C] -> [V*B, H, W, C], view-major: rows v*B..(v+1)*B-1 are view v.

    multi_crop: the 5 crops of CROP_ORDER instead of the whole image (default False).
    flip: add the horizontal mirror of every view (default True).
    crop_fraction: side of each crop as a fraction of the image side (default 0.875).
    """

    def __init__(self, multi_crop=False, flip=True, crop_fraction=CROP_FRACTION, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < crop_fraction <= 1.0:
            raise ConfigError("The `crop_fraction` argument should be in (0, 1]. "
                              f"Received: crop_fraction={crop_fraction}")
        self.multi_crop, self.flip = bool(multi_crop), bool(flip)
        self.crop_fraction = float(crop_fraction)

    @property
    def num_views(self):
        return (5 if self.multi_crop else 1) * (2 if self.flip else 1)

    def call(self, images):
        views = self._crops(images) if self.multi_crop else [images]
        if self.flip:
            views += [ops.flip(v, axis=2) for v in views]
        return ops.concatenate(views, axis=0)

    def _crops(self, images):
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            raise ConfigError("Multi-crop TTA needs a model with a fixed input size; "
                              f"received input shape {images.shape}.")
        ch = max(1, round(height * self.crop_fraction))
        cw = max(1, round(width * self.crop_fraction))
        top, left = (height - ch) // 2, (width - cw) // 2
        corners = [(top, left), (0, 0), (0, width - cw), (height - ch, 0),
                   (height - ch, width - cw)]
        return [ops.image.resize(images[:, y:y + ch, x:x + cw, :], (height, width),
                                 interpolation="bilinear") for y, x in corners]

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] * self.num_views
        return (batch, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "multi_crop": self.multi_crop, "flip": self.flip,
                "crop_fraction": self.crop_fraction}


@keras.saving.register_keras_serializable(package="transferkit")
class ViewMean(keras.layers.Layer):
    """[V*B, ...] view-major predictions -> [B, ...], the mean over the V views.

    unflip: the last V/2 views are mirrors (TTAViews with flip) whose [B, H, W, C]
        predictions are mirrored back before the mean (default False).
    unflip_box: the last V/2 views are mirrors whose [B, K] predictions end in a box
        (xmin, ymin, xmax, ymax, normalised): its x edges are mirrored back (default
        False).
    """

    def __init__(self, num_views, unflip=False, unflip_box=False, **kwargs):
        super().__init__(**kwargs)
        self.num_views, self.unflip = int(num_views), bool(unflip)
        self.unflip_box = bool(unflip_box)

    def call(self, predictions):
        shape = ops.shape(predictions)
        stacked = ops.reshape(predictions, (self.num_views, -1, *shape[1:]))
        if self.unflip:  # [V, B, H, W, C]: width is axis 3
            half = self.num_views // 2
            stacked = ops.concatenate([stacked[:half], ops.flip(stacked[half:], axis=3)])
        if self.unflip_box:  # [V, B, K]: a mirrored box spans 1 - xmax .. 1 - xmin
            half = self.num_views // 2
            mirrored = stacked[half:]
            box = ops.stack([1.0 - mirrored[..., -2], mirrored[..., -3],
                             1.0 - mirrored[..., -4], mirrored[..., -1]], axis=-1)
            stacked = ops.concatenate(
                [stacked[:half], ops.concatenate([mirrored[..., :-4], box], axis=-1)])
        return ops.mean(stacked, axis=0)

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // self.num_views
        return (batch, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "num_views": self.num_views,
                "unflip": self.unflip, "unflip_box": self.unflip_box}


def with_tta(model, preset="flip", crop_fraction=CROP_FRACTION, task=None):
    """A `keras.Model` with `model`'s input and output shapes that averages TTA views.

    preset: "flip" (default), "five_crop" or "ten_crop"; see the module docstring.
    A model with per-pixel outputs [B, H, W, C] takes "flip" only.
    Averaging probabilities (not logits) matches how ensembles are averaged.
    task: the model's Task, if known: it may refuse a preset (`Task.check_tta`), and
    a task whose outputs end in a box (`Task.box_output`) has mirrored boxes mirrored
    back before the mean.
    """
    multi_crop, flip = PRESETS[check_choice("tta", preset, PRESETS)]
    if task is not None:
        task.check_tta(preset)
    dense = len(model.output_shape) == 4
    if dense and multi_crop:
        raise ConfigError(f"TTA {preset!r} crops the image, and a crop's per-pixel "
                          f"outputs {model.output_shape} do not map back onto the whole "
                          "image; per-pixel models take tta='flip' (--tta flip). "
                          f"Received: tta={preset!r}")
    views = TTAViews(multi_crop=multi_crop, flip=flip, crop_fraction=crop_fraction,
                     name="tta_views")
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    box = bool(flip and getattr(task, "box_output", False))
    outputs = ViewMean(views.num_views, unflip=dense, unflip_box=box, name="tta_mean")(
        model(views(inputs)))
    # Named after the wrapped model so `spec_of` and reports still find the backbone.
    return keras.Model(inputs, outputs, name=model.name)


def tta_of(model):
    """The preset (e.g. "flip") a model made by `with_tta` averages, else None."""
    for layer in model.layers:
        if isinstance(layer, TTAViews):
            views = (layer.multi_crop, layer.flip)
            return next((name for name, p in PRESETS.items() if p == views), "custom")
    return None


def unwrap_tta(model):
    """The model a `with_tta` model wraps (the model itself if it is not one)."""
    if tta_of(model) is None:
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))
