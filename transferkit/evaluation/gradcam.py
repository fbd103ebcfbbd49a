"""Grad-CAM (Selvaraju et al. 2017): where in the image the predicted class comes from.

    heatmap = grad_cam(model, image)            # [H, W] in [0, 1]
    save_overlay(image, heatmap, "cam.png")

It walks the transferkit layout (image -> [resize] -> preprocess -> backbone -> pool ->
head), so it needs no layer names from inside any particular backbone: the backbone's
output feature maps are the last convolutional maps by construction.
"""

import numpy as np
import tensorflow as tf
from PIL import Image

from transferkit.core.errors import ConfigError


def _layer(model, name):
    for layer in model.layers:
        if layer.name == name:
            return layer
    return None


def grad_cam(model, image, class_index=None):
    """A [H, W] heatmap in [0, 1] for `image` (raw RGB 0-255, [H, W, 3]).

    class_index: the class to explain (default: the predicted one).
    """
    backbone, pool, head = (_layer(model, n) for n in ("backbone", "pool", "head"))
    if backbone is None or head is None:
        raise ConfigError(f"Grad-CAM needs a transferkit model (layers 'backbone', 'pool',"
                          f" 'head'); {model.name!r} has {[l.name for l in model.layers]}.")
    x = tf.convert_to_tensor(np.asarray(image, dtype=np.float32)[None])
    for name in ("resize", "preprocess"):
        layer = _layer(model, name)
        x = layer(x) if layer is not None else x
    maps = backbone(x, training=False)
    if len(maps.shape) != 4:
        raise ConfigError(f"Grad-CAM needs feature maps; backbone of {model.name!r} "
                          f"outputs shape {maps.shape}.")
    with tf.GradientTape() as tape:
        tape.watch(maps)
        probs = head(pool(maps), training=False)
        index = int(tf.argmax(probs[0])) if class_index is None else int(class_index)
        score = probs[:, index]
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
