"""Predicted masks as files and pictures: class-index PNGs and colour overlays.

    write_masks(task, outputs, images, paths, "preds/", class_names)
    # preds/<name>_mask.png     palette PNG: pixel value = class index, colours to see
    # preds/<name>_overlay.png  the image with the predicted classes tinted on it

The mask PNGs are palette images, the format annotation tools write and `data.masks`
reads back, so a prediction can be corrected and fed to training as it is.
"""

import os

import numpy as np
from PIL import Image

from transferkit.core.files import atomic_path

# Class 0 (background) black, then well-separated colours (Glasbey-like), repeating.
_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200],
                     [255, 225, 25], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                     [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]],
                    dtype=np.uint8)


def colours(num_classes):
    """[num_classes, 3] uint8 colours, class 0 black."""
    reps = -(-num_classes // len(_COLOURS))
    return np.tile(_COLOURS, (reps, 1))[:num_classes]


def mask_image(mask, num_classes):
    """A PIL palette image of a [H, W] class-index mask (values stay the indices)."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").convert("P")
    palette = colours(max(num_classes, 1)).ravel().tolist()
    image.putpalette(palette + [0] * (768 - len(palette)))
    return image


def overlay(image, mask, num_classes, alpha=0.5):
    """The RGB image (0-255, [H, W, 3]) with each non-background class tinted."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0, 255)
    tint = colours(num_classes)[np.asarray(mask)].astype(np.float64)
    weight = np.where(np.asarray(mask)[..., None] > 0, alpha, 0.0)
    return (image * (1 - weight) + tint * weight).astype(np.uint8)


def write_masks(task, outputs, images, paths, out_dir):
    """Write `<stem>_mask.png` and `<stem>_overlay.png` per prediction; returns the mask
    paths. outputs: model outputs [N, H, W, C]; images: the [N, H, W, 3] model inputs;
    paths: the source files (a running index keeps equal stems apart)."""
    os.makedirs(out_dir, exist_ok=True)
    predicted = task.predicted(outputs)
    num = task.probabilities(np.asarray(outputs)[:1]).shape[-1]
    written = []
    for i, (mask, image, path) in enumerate(zip(predicted, images, paths)):
        stem = f"{i:03d}_{os.path.splitext(os.path.basename(os.fspath(path)))[0]}"
        target = os.path.join(out_dir, f"{stem}_mask.png")
        with atomic_path(target) as tmp:
            mask_image(mask, num).save(tmp, format="PNG")
        with atomic_path(os.path.join(out_dir, f"{stem}_overlay.png")) as tmp:
            Image.fromarray(overlay(image, mask, num)).save(tmp, format="PNG")
        written.append(target)
    return written
