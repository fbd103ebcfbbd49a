"""Boxes as people and scores see them: IoU of box pairs and boxes drawn on images."""

import os

import keras
import numpy as np

from transferkit.core.files import atomic_path

BOX = 4  # box columns (xmin, ymin, xmax, ymax) at the end of a row
IOU_BINS = np.linspace(0.0, 1.0, 11)  # the IoU histogram's bin edges
HIT_IOU = 0.5  # a box counts as found at IoU >= this (Pascal VOC's criterion)
TRUE_COLOUR, PRED_COLOUR = (0, 220, 0), (255, 40, 40)


def box_ious(a, b):
    """Per-row IoU of two [N, 4] arrays of xyxy boxes (`keras.utils.bounding_boxes
    .compute_iou`, one box against one box)."""
    a = np.asarray(a, np.float32).reshape(-1, 1, BOX)
    b = ordered(np.asarray(b, np.float32)).reshape(-1, 1, BOX)
    if not len(a):
        return np.zeros(0)
    iou = keras.utils.bounding_boxes.compute_iou(a, b, "xyxy")
    return np.asarray(keras.ops.convert_to_numpy(iou), np.float64).reshape(-1)


def ordered(box):
    box = np.asarray(box)
    return np.concatenate([np.minimum(box[..., :2], box[..., 2:]),
                           np.maximum(box[..., :2], box[..., 2:])], axis=-1)


def draw_boxes(image, boxes, colours, labels=None):
    """`image` (RGB 0-255 [H, W, 3]) with `boxes` (normalised xyxy, one per colour)
    drawn (`keras.visualization.draw_bounding_boxes`; Pillow when OpenCV, which it
    needs, is missing). labels: a caption per box, or None."""
    image = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    scale = np.array([width, height, width, height], np.float32)
    thickness = max(1, round(min(height, width) / 64))
    for i, (box, colour) in enumerate(zip(boxes, colours)):
        pixels = ordered(np.asarray(box, np.float32)) * scale
        try:
            drawn = keras.visualization.draw_bounding_boxes(
                image[None], {"boxes": pixels[None, None], "labels": np.zeros((1, 1))},
                "xyxy", class_mapping={0: labels[i]} if labels else None,
                color=colour, line_thickness=thickness,
                font_scale=max(0.3, min(height, width) / 256))
            image = np.asarray(keras.ops.convert_to_numpy(drawn))[0].astype(np.uint8)
        except ImportError:  # keras draws with OpenCV
            from PIL import Image, ImageDraw
            picture = Image.fromarray(image)
            ImageDraw.Draw(picture).rectangle([float(v) for v in pixels], outline=colour,
                                              width=thickness)
            image = np.asarray(picture)
    return image


def iou_matrix(a, b):
    """IoU of every box of `a` [N, 4] with every box of `b` [M, 4] (xyxy): [N, M]."""
    a, b = ordered(np.asarray(a, np.float64).reshape(-1, BOX)), ordered(
        np.asarray(b, np.float64).reshape(-1, BOX))
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2])
                - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3])
                - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None] - w * h
    return np.divide(w * h, union, out=np.zeros_like(union), where=union > 0)


def upright_image(path, fallback):
    """The image file at `path` as RGB [H, W, 3] at its own size, upright (EXIF
    rotation applied, as boxes are predicted); `fallback` where Pillow cannot read
    it (decoded by TF only)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except OSError:
        return np.asarray(fallback)


def save_drawing(image, out_dir, index, path, suffix):
    """Write `image` (RGB uint8) as `<index>_<path's stem>_<suffix>.png` in
    `out_dir` (atomically); returns the written path."""
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    name = f"{index:03d}_{os.path.splitext(os.path.basename(path))[0]}_{suffix}.png"
    target = os.path.join(out_dir, name)
    with atomic_path(target) as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
    return target
