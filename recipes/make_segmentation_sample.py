#!/usr/bin/env python
"""Write the demo's segmentation sample, data/segmentation/, from a seed.

    python recipes/make_segmentation_sample.py     # the exact command behind it

60 images of 64x64 in images/ with their masks in masks/ (class-index PNGs, half of
them palette PNGs, as annotation tools write them) and classes.txt. Each image holds
one or two shapes of the target classes (arrow, cross, ring; see recipes/procedural.py)
over a textured background; the mask marks each shape's pixels with its class index
(0: background). The shapes differ from those the shipped source network learnt.
"""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procedural  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "segmentation"
SEED = 1313  # not a seed of the source task or of data/sample
CLASSES = ("background", "arrow", "cross", "ring")
PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 0, 130, 200]  # one colour per class


def render_pair(rng, size=64):
    """(uint8 image [size, size, 3], uint8 mask [size, size]) with 1-2 shapes."""
    background = procedural._background(rng, size)
    pixels, mask = background.copy(), np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 3)):
        cls = int(rng.integers(1, len(CLASSES)))
        alpha = procedural._mask(CLASSES[cls], rng, size)[..., None] * 0.8  # smaller
        colour = procedural._colour(rng, away_from=background.mean(axis=(0, 1)))
        pixels = pixels * (1 - alpha) + colour * alpha
        mask[alpha[..., 0] > 0.4] = cls
    pixels += rng.normal(0.0, rng.uniform(2.0, 10.0), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8), mask


def write_sample(out, count=60, seed=SEED, size=64):
    """Write `count` image/mask pairs and classes.txt under `out`; returns image paths."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # regenerate from scratch: no stale files survive
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels, mask = render_pair(rng, size)
        path = out / "images" / f"{i:03d}.png"
        Image.fromarray(pixels).save(path, optimize=True)
        mask_image = Image.fromarray(mask)  # mode "L": the indices as grey levels
        if i % 2:  # palette PNG: the indices are the classes, the colours only show them
            mask_image = Image.fromarray(mask).convert("P")  # "L" -> "P" keeps the values
            mask_image.putpalette(PALETTE + [0] * (768 - len(PALETTE)))
        mask_image.save(out / "masks" / f"{i:03d}.png", optimize=True)
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="default: data/segmentation")
    p.add_argument("--count", type=int, default=60, help="default 60")
    p.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    args = p.parse_args(argv)
    paths = write_sample(args.out, args.count, args.seed)
    print(f"wrote {len(paths)} image/mask pairs to {args.out}")


if __name__ == "__main__":
    main()
