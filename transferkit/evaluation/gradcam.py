"""Grad-CAM (Selvaraju et al. 2017): where in the image the predicted class comes from.

    heatmap = grad_cam(model, image)            # [H, W] in [0, 1]
    save_overlay(image, heatmap, "cam.png")

The backbone's output feature maps are the last convolutional maps by construction, so
it needs no layer name from inside any particular backbone: only the model's parts
(`models.parts.ModelParts`, `build_model`'s layout by default).
"""

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from transferkit.core.errors import ConfigError
from transferkit.models.parts import resolve


def grad_cam(model, image, class_index=None, parts=None):
    """A [H, W] heatmap in [0, 1] for `image` (raw RGB 0-255, [H, W, 3]).

    class_index: the output to explain (default: the largest one).
    parts: a `ModelParts` for a model built by hand.
    """
    resolved = resolve(model, parts)
    maps_tensor = resolved.backbone_output
    if len(maps_tensor.shape) != 4:
        # e.g. a detection or localization model: its dense head packs the pyramid's
        # maps into one vector, and no single class score explains the image.
        raise ConfigError(f"Grad-CAM explains a model whose backbone outputs feature maps "
                          f"[batch, height, width, channels]; the backbone of "
                          f"{model.name!r} outputs shape {tuple(maps_tensor.shape)}, so "
                          "Grad-CAM does not apply to it.")
    # Image -> backbone maps, and maps -> outputs, both sharing the model's layers.
    to_maps = keras.Model(model.inputs, maps_tensor)
    from_maps = keras.Model(maps_tensor, model.outputs)
    x = tf.convert_to_tensor(np.asarray(image, dtype=np.float32)[None])
    maps = to_maps(x, training=False)
    with tf.GradientTape() as tape:
        tape.watch(maps)
        out = tf.reshape(from_maps(maps, training=False), [1, -1])
        index = int(tf.argmax(out[0])) if class_index is None else int(class_index)
        score = out[:, index]
    grads = tape.gradient(score, maps)[0]
    weights = tf.reduce_mean(grads, axis=(0, 1))  # one weight per channel
    cam = tf.nn.relu(tf.reduce_sum(maps[0] * weights, axis=-1))
    cam = tf.image.resize(cam[..., None], np.shape(image)[:2])[..., 0].numpy()
    peak = cam.max()
    return cam / peak if peak > 0 else cam


def overlay(image, heatmap, alpha=0.45):
    """An RGB uint8 image: `image` blended with the heatmap in matplotlib's "jet"."""
    from matplotlib import colormaps

    colored = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colored
    return np.clip(blended, 0, 255).astype(np.uint8)


def save_overlay(image, heatmap, path, alpha=0.45):
    """Write the Grad-CAM overlay of `image` to `path` (PNG); returns `path`."""
    Image.fromarray(overlay(image, heatmap, alpha)).save(path)
    return path
