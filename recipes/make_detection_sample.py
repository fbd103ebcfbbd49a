#!/usr/bin/env python
"""Write a multi-object detection sample set from a seed.

    python recipes/make_detection_sample.py --out /tmp/detection   # default data/detection

JPEG images in images/ of three sizes (128x128, 160x120, 120x160: different sizes and
aspect ratios), each holding 1-6 shapes of the target classes (arrow, cross, ring; see
recipes/procedural.py) of 8-48 px at random places, never touching, over a noisy
textured background with clutter (2-5 unlabelled distractors: filled circles, squares,
triangles and lines, partly under the objects), and boxes.csv: one row
`path,label,xmin,ymin,xmax,ymax` per object, its tight box (mask > 0.3) in pixels of
its own image. Byte-for-byte reproducible for a seed.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procedural  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "detection"
SEED = 3131  # not a seed of the source task or of the other samples
CLASSES = ("arrow", "cross", "ring")
CLUTTER = ("circle", "square", "triangle")  # source-task shapes: never a target class
SIZES = ((128, 128), (160, 120), (120, 160))  # (width, height)
OBJECTS = (1, 6)  # objects per image, inclusive
SIDES = (8, 48)  # an object's longer box side in pixels, inclusive
GAP = 2  # pixels kept free around each object's box


def _shape(kind, rng, sides=SIDES):
    """(alpha [c, c] in [0, 1], tight box within it) of one shape whose longer box side
    lies in `sides`."""
    while True:
        canvas = int(rng.integers(sides[0] + 2, int(sides[1] / 0.8) + 1))
        alpha = procedural._mask(kind, rng, canvas)
        rows, cols = np.nonzero(alpha > 0.3)
        if not len(rows):
            continue
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        if sides[0] <= max(box[2] - box[0], box[3] - box[1]) <= sides[1]:
            return alpha, box


def _clutter(pixels, rng):
    """Paint 2-5 unlabelled distractors onto `pixels` (float [h, w, 3]) in place."""
    height, width = pixels.shape[:2]
    for _ in range(int(rng.integers(2, 6))):
        colour = procedural._colour(rng, away_from=pixels.mean(axis=(0, 1)))
        if rng.uniform() < 0.3:  # a line across part of the image
            layer = Image.new("L", (width, height), 0)
            x0, x1 = rng.integers(0, width, 2)
            y0, y1 = rng.integers(0, height, 2)
            ImageDraw.Draw(layer).line((int(x0), int(y0), int(x1), int(y1)), fill=255,
                                       width=int(rng.integers(1, 3)))
            alpha = np.asarray(layer, np.float64) / 255.0
        else:
            shape, _ = _shape(str(rng.choice(CLUTTER)), rng, (6, 30))
            side = shape.shape[0]
            alpha = np.zeros((height, width))
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            alpha[y:y + side, x:x + side] = shape
        pixels[:] = pixels * (1 - alpha[..., None]) + colour * alpha[..., None]


def render_scene(rng, size):
    """(uint8 image [h, w, 3], [(class name, (xmin, ymin, xmax, ymax) pixels)]) of one
    image of `size` (width, height) with OBJECTS[0]..OBJECTS[1] objects."""
    width, height = size
    pixels = procedural._background(rng, max(width, height))[:height, :width].copy()
    _clutter(pixels, rng)
    taken = np.zeros((height, width), bool)
    objects, wanted = [], int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
    for _ in range(100 * wanted):  # placement attempts
        if len(objects) == wanted:
            break
        kind = str(rng.choice(CLASSES))
        alpha, (bx0, by0, bx1, by1) = _shape(kind, rng)
        w, h = bx1 - bx0, by1 - by0
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if taken[max(0, y - GAP):y + h + GAP, max(0, x - GAP):x + w + GAP].any():
            continue
        taken[y:y + h, x:x + w] = True
        layer = alpha[by0:by1, bx0:bx1][..., None]
        patch = pixels[y:y + h, x:x + w]
        colour = procedural._colour(rng, away_from=patch.mean(axis=(0, 1)))
        pixels[y:y + h, x:x + w] = patch * (1 - layer) + colour * layer
        objects.append((kind, (x, y, x + w, y + h)))
    pixels += rng.normal(0.0, rng.uniform(1.0, 5.0), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8), objects


def write_sample(out, count=360, seed=SEED):
    """Write `count` images and boxes.csv under `out` (replacing it); returns the
    CSV's path."""
    return procedural.write_box_sample(
        out, count, seed, lambda i, rng: render_scene(rng, SIZES[i % len(SIZES)]),
        quality=85, digits=4)


def main(argv=None):
    procedural.box_sample_main(__doc__, write_sample, DEFAULT_OUT, 360, SEED, argv)


if __name__ == "__main__":
    main()
