"""The generated sets benchmarks/detection.py measures on.

    objects_set(out, count, seed)   1-6 objects of 3 classes per image, 8-48 px, over
                                    clutter (shapes of other classes, lines), images of
                                    3 sizes; boxes.csv of one row per object
    one_object_set(out, count, seed)
                                    one object of 3 classes per image, 12-32 px, in
                                    64-96 px images: the localization set of issue 31

Shapes are recipes/procedural.py's (the demo's "world": a shape in a random colour,
size, position and angle over a textured background); every image is drawn from the
seed alone, so a set regenerates byte for byte.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procedural  # noqa: E402

CLASSES = ("arrow", "cross", "ring")
CLUTTER = ("circle", "triangle", "square", "star")  # shapes of no class: background
OBJECT_SIZES = ((64, 64), (112, 80), (96, 128))  # (width, height)
ONE_OBJECT_SIZES = ((64, 64), (96, 72), (80, 96))


def _place(alpha, mask, rng, taken, max_overlap=0.25):
    """Put `mask` (side x side) somewhere in `alpha` [h, w] overlapping the boxes in
    `taken` by at most `max_overlap` of its own area; returns its tight box or None."""
    height, width = alpha.shape
    side = mask.shape[0]
    for _ in range(30):
        x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        rows, cols = np.nonzero(mask > 0.3)
        box = (x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1,
               y + int(rows.max()) + 1)
        area = (box[2] - box[0]) * (box[3] - box[1])
        if all(_overlap(box, other) <= max_overlap * area for other in taken):
            alpha[y:y + side, x:x + side] = np.maximum(alpha[y:y + side, x:x + side], mask)
            return box
    return None


def _overlap(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def render_objects(rng, size, count, side_range, clutter=True, classes=CLASSES):
    """(uint8 image [h, w, 3], [(class, (xmin, ymin, xmax, ymax))]) with `count`
    objects of `side_range` pixels (and, with `clutter`, 0-3 clutter shapes and lines)."""
    width, height = size
    pixels = procedural._background(rng, max(width, height))[:height, :width].copy()
    found, taken = [], []
    kinds = [(c, True) for c in rng.choice(classes, count)]
    if clutter:
        kinds += [(c, False) for c in rng.choice(CLUTTER, int(rng.integers(0, 4)))]
    for kind, is_object in kinds:
        top = min(side_range[1], width, height)
        side = int(rng.integers(side_range[0], top + 1))
        alpha = np.zeros((height, width))
        box = _place(alpha, procedural._mask(kind, rng, side), rng, taken)
        if box is None:
            continue
        colour = procedural._colour(rng, away_from=pixels.mean(axis=(0, 1)))
        pixels = pixels * (1 - alpha[..., None]) + colour * alpha[..., None]
        taken.append(box)
        if is_object:
            found.append((str(kind), box))
    if clutter:  # thin lines: edges that are no object
        for _ in range(int(rng.integers(0, 3))):
            x0, x1 = sorted(rng.integers(0, width, 2))
            y = int(rng.integers(0, height))
            pixels[y:y + 1, x0:x1 + 1] = procedural._colour(rng)
    pixels += rng.normal(0.0, rng.uniform(1.0, 5.0), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8), found


def _write(out, rows_of, count, seed, sizes):
    """PNG images of `sizes` in turn, drawn by rows_of(rng, size, i)."""
    return procedural.write_box_sample(
        out, count, seed, lambda i, rng: rows_of(rng, sizes[i % len(sizes)], i), digits=4)


def objects_set(out, count=300, seed=0, sizes=OBJECT_SIZES, side_range=(8, 48),
                objects=(1, 6), clutter=True, classes=CLASSES):
    """Write the multi-object set under `out`; returns its boxes.csv."""
    def rows_of(rng, size, i):
        return render_objects(rng, size, int(rng.integers(objects[0], objects[1] + 1)),
                              side_range, clutter, classes)

    return _write(out, rows_of, count, seed, sizes)


def one_object_set(out, count=240, seed=0, sizes=ONE_OBJECT_SIZES, side_range=(12, 32),
                   classes=CLASSES):
    """Write the one-object (localization) set under `out`; returns its boxes.csv.
    Classes take turns, so every class has a third of the images."""
    def rows_of(rng, size, i):
        return render_objects(rng, size, 1, side_range, clutter=False,
                              classes=(classes[i % len(classes)],))

    return _write(out, rows_of, count, seed, sizes)
