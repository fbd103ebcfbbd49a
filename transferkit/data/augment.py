"""Training-time augmentation as stateless TF ops, pinned to the CPU.

    cfg = AugmentConfig(rotation=0.05, zoom=0.1, mixup_alpha=0.2)
    load_data("data/pets", image_size=(224, 224), augment=cfg, seed=1)

Every random draw is `tf.random.stateless_*` keyed on a seed the pipeline derives from
the element (or batch) position, so the same seed gives the same batches. Keras'
augmentation layers are not used on purpose: they draw from a stateful SeedGenerator,
whose updates race under a parallel `map`, so two runs with one seed would differ.
Images are float32 in 0-255 on the way in and out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import tensorflow as tf

from transferkit.core.errors import DataError, check_choice, suggest

FLIP_MODES = (None, "horizontal", "vertical", "horizontal_and_vertical")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation hyperparameters (all searchable by the tuner; 0 disables an op).

    crop_scale: area range of the random resized crop, (0.6, 1.0); None disables.
    crop_ratio: aspect-ratio range of that crop, (3/4, 4/3).
    flip: one of FLIP_MODES, "horizontal".
    rotation: max angle as a fraction of a full turn (Keras' convention), 0.0.
    zoom: max zoom in or out as a fraction, 0.0. translation: max shift as a
        fraction of height/width, 0.0.
    brightness: max delta as a fraction of the 0-255 range, 0.0. contrast,
        saturation: max factor change (factor in [1-x, 1+x]), 0.0. hue: max hue
        shift in [0, 0.5], 0.0.
    mixup_alpha, cutmix_alpha: Beta(alpha, alpha) mixing of whole batches, 0.0; if
        both are set, each batch uses one of them at random.
    box_min_visibility: boxes of several objects (`data.box_augment`) only: the
        fraction of a box's area a crop, zoom or shift must leave in view for the box
        to stay (clipped to the image); below it the object is dropped, 0.3. A sliver
        of an object would ask for a box around a few ambiguous pixels; dropping a
        larger part would teach background where most of an object shows.
    """

    crop_scale: tuple[float, float] | None = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: str | None = "horizontal"
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    box_min_visibility: float = 0.3

    def __post_init__(self):
        if self.flip not in FLIP_MODES:
            hint = suggest(self.flip, FLIP_MODES[1:])
            raise DataError(f"AugmentConfig: flip should be one of {FLIP_MODES}. "
                            f"Received: flip={self.flip!r}.{hint}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and value < 0:
                raise DataError(f"AugmentConfig: {f.name} must be >= 0. "
                                f"Received: {f.name}={value}")
        if self.zoom >= 1:
            raise DataError(f"AugmentConfig: zoom must be < 1 (a zoom factor in "
                            f"[1 - zoom, 1 + zoom]). Received: zoom={self.zoom}")
        if self.box_min_visibility > 1:
            raise DataError("AugmentConfig: box_min_visibility must be in [0, 1]. "
                            f"Received: box_min_visibility={self.box_min_visibility}")
        if self.hue > 0.5:
            raise DataError(f"AugmentConfig: hue must be in [0, 0.5]. Received: hue={self.hue}")
        scale = self.crop_scale
        if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
            raise DataError("AugmentConfig: crop_scale must be (low, high) with "
                            f"0 < low <= high <= 1. Received: crop_scale={scale}")

    @property
    def mixes(self) -> bool:
        """True if batches are mixed (mixup or cutmix) after batching."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


# Named presets for recipes, the CLI (`--augment`) and the tuner's search space.
AUGMENT_PRESETS = {
    "none": None,
    "light": AugmentConfig(crop_scale=(0.8, 1.0), flip="horizontal"),
    "medium": AugmentConfig(crop_scale=(0.6, 1.0), flip="horizontal", rotation=0.05,
                            brightness=0.1, contrast=0.1),
    "strong": AugmentConfig(crop_scale=(0.4, 1.0), flip="horizontal", rotation=0.1,
                            zoom=0.1, translation=0.1, brightness=0.2, contrast=0.2,
                            saturation=0.2, hue=0.02, mixup_alpha=0.2),
}


def augment_config(name):
    """The AugmentConfig (or None) of a preset: "none", "light", "medium" or "strong"."""
    return AUGMENT_PRESETS[check_choice("augment", name, AUGMENT_PRESETS)]


def _seeds(seed, n: int):
    """n independent stateless seeds (shape [n, 2]) from one seed of shape [2]."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=n)


def _crop_window(image, seed, config):
    """(begin, size) of a random resized crop's window, the same for the same seed."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, area_range=config.crop_scale,
        aspect_ratio_range=config.crop_ratio, use_image_if_no_bounding_boxes=True)
    return begin, size


def augment_image(image, seed, config: AugmentConfig):
    """Augment one float32 [H, W, 3] image (0-255); same seed, same result."""
    with tf.device("/CPU:0"):
        height, width = image.shape[0], image.shape[1]
        s = _seeds(seed, 8)
        if config.crop_scale is not None:
            begin, size = _crop_window(image, s[0], config)
            image = tf.image.resize(tf.slice(image, begin, size), (height, width))
        if config.flip in ("horizontal", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_left_right(image, s[1])
        if config.flip in ("vertical", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_up_down(image, s[2])
        if config.rotation or config.zoom or config.translation:
            image = _affine(image, s[3], config)
        if config.brightness or config.contrast or config.saturation or config.hue:
            image = _color(image / 255.0, s[4:8], config) * 255.0
        return tf.ensure_shape(image, (height, width, 3))


def augment_pair(image, mask, seed, config: AugmentConfig):
    """Augment an image and its mask [H, W, 1] of class indices alike: the same crop,
    flips, rotation, zoom and shift (nearest neighbour for the mask, so its values stay
    class indices), colour on the image only. The image gets exactly what
    `augment_image` would give it with this seed. Batch mixing does not apply here."""
    with tf.device("/CPU:0"):
        height, width = image.shape[0], image.shape[1]
        dtype = mask.dtype
        mask = tf.cast(mask, tf.float32)
        s = _seeds(seed, 8)
        if config.crop_scale is not None:
            begin, size = _crop_window(image, s[0], config)
            image = tf.image.resize(tf.slice(image, begin, size), (height, width))
            # begin is [y, x, 0] and size [h, w, -1]: the same window of the mask.
            mask = tf.image.resize(tf.slice(mask, begin, size), (height, width),
                                   method="nearest")
        # Stateless flips decide from the seed alone: one seed, the same flip for both.
        if config.flip in ("horizontal", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_left_right(image, s[1])
            mask = tf.image.stateless_random_flip_left_right(mask, s[1])
        if config.flip in ("vertical", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_up_down(image, s[2])
            mask = tf.image.stateless_random_flip_up_down(mask, s[2])
        if config.rotation or config.zoom or config.translation:
            image = _affine(image, s[3], config)
            mask = _affine(mask, s[3], config, interpolation="NEAREST")
        if config.brightness or config.contrast or config.saturation or config.hue:
            image = _color(image / 255.0, s[4:8], config) * 255.0
        return (tf.ensure_shape(image, (height, width, 3)),
                tf.ensure_shape(tf.cast(mask, dtype), (height, width, 1)))


def augment_boxed(image, label, seed, config: AugmentConfig):
    """Augment an image and the box of its label row [C + 4] (the box last, normalised
    xmin, ymin, xmax, ymax) alike: the crop and flips move the box, which is clipped to
    the crop; colour changes the image only. The crop is drawn to keep at least half of
    the box (`tf.image.stateless_sample_distorted_bounding_box` re-draws a crop that
    drops it, and falls back to the whole image). Rotation, zoom and translation are
    refused by the task before this runs (`box_refusal`)."""
    with tf.device("/CPU:0"):
        height, width = image.shape[0], image.shape[1]
        s = _seeds(seed, 8)
        box = label[-4:]
        if config.crop_scale is not None:
            yxyx = tf.stack([box[1], box[0], box[3], box[2]])[None, None]
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image), yxyx, seed=s[0], min_object_covered=0.5,
                area_range=config.crop_scale, aspect_ratio_range=config.crop_ratio,
                use_image_if_no_bounding_boxes=True)
            image = tf.image.resize(tf.slice(image, begin, size), (height, width))
            full = tf.cast(tf.shape(image)[:2], tf.float32)
            y0, x0 = tf.cast(begin[0], tf.float32), tf.cast(begin[1], tf.float32)
            h, w = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
            box = tf.stack([(box[0] * full[1] - x0) / w, (box[1] * full[0] - y0) / h,
                            (box[2] * full[1] - x0) / w, (box[3] * full[0] - y0) / h])
            box = tf.clip_by_value(box, 0.0, 1.0)
        # A stateless flip decides from the seed alone: flip a 1-pixel probe with the
        # same seed to learn whether the image was mirrored.
        if config.flip in ("horizontal", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_left_right(image, s[1])
            probe = tf.image.stateless_random_flip_left_right(
                tf.constant([[[0.0], [1.0]]]), s[1])
            box = tf.where(probe[0, 0, 0] > 0,
                           tf.stack([1.0 - box[2], box[1], 1.0 - box[0], box[3]]), box)
        if config.flip in ("vertical", "horizontal_and_vertical"):
            image = tf.image.stateless_random_flip_up_down(image, s[2])
            probe = tf.image.stateless_random_flip_up_down(
                tf.constant([[[0.0]], [[1.0]]]), s[2])
            box = tf.where(probe[0, 0, 0] > 0,
                           tf.stack([box[0], 1.0 - box[3], box[2], 1.0 - box[1]]), box)
        if config.brightness or config.contrast or config.saturation or config.hue:
            image = _color(image / 255.0, s[4:8], config) * 255.0
        label = tf.concat([label[:-4], tf.cast(box, label.dtype)], axis=0)
        return tf.ensure_shape(image, (height, width, 3)), label


def box_refusal(config):
    """Why boxes refuse this AugmentConfig (None: they take it)."""
    if config is None:
        return None
    moved = [f"{k}={getattr(config, k)}" for k in ("rotation", "zoom", "translation",
                                                   "mixup_alpha", "cutmix_alpha")
             if getattr(config, k)]
    if not moved:
        return None
    return (f"{', '.join(moved)}: a box label moves with its image only through crops "
            "and flips here (a rotated box is no longer an upright box; a mixed batch "
            "has two objects per image); task='localization' takes the augment presets "
            "'none' or 'light', or an AugmentConfig of crop, flip and colour.")


def _affine(image, seed, config: AugmentConfig, interpolation="BILINEAR"):
    """Rotation, zoom and translation as one projective transform (reflect fill)."""
    u = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
    angle = u[0] * config.rotation * 2 * math.pi
    scale = 1.0 + u[1] * config.zoom  # > 1 zooms in
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    dx, dy = u[2] * config.translation * w, u[3] * config.translation * h
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Output pixel (x, y) samples the input at A @ (x, y) + b: the inverse mapping.
    a0, a1 = tf.cos(angle) / scale, -tf.sin(angle) / scale
    b0, b1 = tf.sin(angle) / scale, tf.cos(angle) / scale
    transform = tf.stack([a0, a1, cx - a0 * cx - a1 * cy - dx,
                          b0, b1, cy - b0 * cx - b1 * cy - dy, 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation=interpolation, fill_mode="REFLECT")
    return out[0]


def _color(image, seeds, config: AugmentConfig):
    """Colour jitter on a [0, 1] image; clipped so later ops see valid colours."""
    if config.brightness:
        image = tf.image.stateless_random_brightness(image, config.brightness, seeds[0])
    if config.contrast:
        image = tf.image.stateless_random_contrast(
            image, 1 - config.contrast, 1 + config.contrast, seeds[1])
    if config.saturation:
        image = tf.image.stateless_random_saturation(
            image, max(0.0, 1 - config.saturation), 1 + config.saturation, seeds[2])
    if config.hue:
        image = tf.image.stateless_random_hue(image, config.hue, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0)


def _beta(seed, alpha: float, n):
    """Beta(alpha, alpha) samples from two stateless gammas."""
    s = _seeds(seed, 2)
    g1 = tf.random.stateless_gamma([n], s[0], alpha)
    g2 = tf.random.stateless_gamma([n], s[1], alpha)
    return g1 / (g1 + g2)


def mix_batch(images, labels, seed, config: AugmentConfig):
    """Mixup or cutmix a batch with a shuffled copy of itself; labels mixed alike.

    One-hot labels stay distributions (mass 1); multi-hot and regression targets are
    mixed with the same weights. Per-pixel labels [B, H, W, C] (masks) take cutmix
    only: the box pasted into the image is pasted into the mask, which stays exact.
    """
    if len(labels.shape) == 4 and config.mixup_alpha > 0:
        raise DataError(mixup_refusal(config))
    with tf.device("/CPU:0"):
        s = _seeds(seed, 3)
        n = tf.shape(images)[0]
        partner = tf.argsort(tf.random.stateless_uniform([n], s[0]))
        use_cutmix = tf.constant(config.cutmix_alpha > 0)
        if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
            use_cutmix = tf.random.stateless_uniform([], s[1]) < 0.5
        if config.mixup_alpha > 0:
            mixed = _mixup(images, labels, partner, s[2], config.mixup_alpha)
        if config.cutmix_alpha > 0:
            cut = _cutmix(images, labels, partner, s[2], config.cutmix_alpha)
            mixed = cut if config.mixup_alpha == 0 else tf.cond(
                use_cutmix, lambda: cut, lambda: mixed)
        return mixed


def mixup_refusal(config):
    """Why masks refuse mixup (the message DataError carries)."""
    return (f"mixup_alpha={config.mixup_alpha}: mixup blends two whole images, so each "
            "pixel would belong to two masks' classes at once; segmentation takes "
            "cutmix_alpha (the same box pasted into image and mask) or an augment preset "
            "without mixup ('none', 'light', 'medium').")


def _mixup(images, labels, partner, seed, alpha):
    lam = _beta(seed, alpha, tf.shape(images)[0])
    li = lam[:, None, None, None]
    ll = tf.reshape(lam, [-1] + [1] * (len(labels.shape) - 1))
    return (li * images + (1 - li) * tf.gather(images, partner),
            ll * labels + (1 - ll) * tf.gather(labels, partner))


def _cutmix(images, labels, partner, seed, alpha):
    """Paste a box covering ~(1 - lam) of the area; labels use the true box area."""
    s = _seeds(seed, 2)
    n = tf.shape(images)[0]
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    lam = _beta(s[0], alpha, n)
    centre = tf.random.stateless_uniform([n, 2], s[1])
    side = tf.sqrt(1.0 - lam)
    y0 = tf.clip_by_value((centre[:, 0] - side / 2) * hf, 0, hf)
    y1 = tf.clip_by_value((centre[:, 0] + side / 2) * hf, 0, hf)
    x0 = tf.clip_by_value((centre[:, 1] - side / 2) * wf, 0, wf)
    x1 = tf.clip_by_value((centre[:, 1] + side / 2) * wf, 0, wf)
    ys = tf.cast(tf.range(h), tf.float32)[None, :, None] + 0.5
    xs = tf.cast(tf.range(w), tf.float32)[None, None, :] + 0.5
    inside = ((ys >= y0[:, None, None]) & (ys < y1[:, None, None])
              & (xs >= x0[:, None, None]) & (xs < x1[:, None, None]))
    mask = tf.cast(inside, images.dtype)[..., None]
    out = images * (1 - mask) + tf.gather(images, partner) * mask
    if len(labels.shape) == 4:  # per-pixel labels: the same box, pasted
        box = tf.cast(mask, labels.dtype)
        return out, labels * (1 - box) + tf.gather(labels, partner) * box
    pasted = tf.reduce_mean(mask, axis=[1, 2, 3])  # actual fraction from the partner
    ll = tf.reshape(pasted, [-1] + [1] * (len(labels.shape) - 1))
    return out, (1 - ll) * labels + ll * tf.gather(labels, partner)
