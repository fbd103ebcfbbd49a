#!/usr/bin/env python
"""Write the localization sample, data/localization/, from a seed.

    python recipes/make_localization_sample.py     # the exact command behind it

240 JPEG images in images/ of three sizes (48x48, 64x40 and 40x64: different sizes and
aspect ratios), each holding one shape of the target classes (arrow, cross, ring; see
recipes/procedural.py) of random size and position over a noisy background, and
boxes.csv: `path,label,xmin,ymin,xmax,ymax`, the shape's tight box in pixels of its
own image. Byte-for-byte reproducible for a seed.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procedural  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "localization"
SEED = 4242  # not a seed of the source task or of the other samples
CLASSES = ("arrow", "cross", "ring")
SIZES = ((48, 48), (64, 40), (40, 64))  # (width, height)


def render_boxed(kind, rng, size):
    """(uint8 image [h, w, 3], (xmin, ymin, xmax, ymax) pixels) of one shape."""
    width, height = size
    side = int(rng.integers(int(0.45 * min(width, height)), min(width, height) + 1))
    alpha = np.zeros((height, width))
    shape = procedural._mask(kind, rng, side)
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    alpha[y:y + side, x:x + side] = shape
    rows, cols = np.nonzero(alpha > 0.3)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    background = procedural._background(rng, max(width, height))[:height, :width]
    colour = procedural._colour(rng, away_from=background.mean(axis=(0, 1)))
    pixels = background * (1 - alpha[..., None]) + colour * alpha[..., None]
    pixels += rng.normal(0.0, rng.uniform(1.0, 5.0), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8), box


def write_sample(out, count=240, seed=SEED):
    """Write `count` images and boxes.csv under `out` (replacing it); returns the
    CSV's path."""

    def scene(i, rng):
        kind = CLASSES[i % len(CLASSES)]
        pixels, box = render_boxed(kind, rng, SIZES[(i // len(CLASSES)) % len(SIZES)])
        return pixels, [(kind, box)]

    return procedural.write_box_sample(out, count, seed, scene, quality=80, digits=3)


def main(argv=None):
    procedural.box_sample_main(__doc__, write_sample, DEFAULT_OUT, 240, SEED, argv)


if __name__ == "__main__":
    main()
