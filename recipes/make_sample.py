#!/usr/bin/env python
"""Write the demo's sample target dataset, data/sample/, from a seed.

    python recipes/make_sample.py               # the exact command behind data/sample

Five classes of hollow and composite shapes (arrow, cross, crescent, frame, ring; see
recipes/procedural.py), 40 images per class, 64x64, as PNG files in class folders:
the same layout as a user's own folder. Two files are deliberately odd, as real folders
are: one grayscale PNG and one JPEG, both of which the data scan accepts (the grayscale
one gets a normalised RGB copy). The classes differ from the source task's.
"""

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procedural  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "sample"
SEED = 2026  # not a seed of the source task, so no image is shared by accident


def write_sample(out, per_class=40, seed=SEED, size=64):
    """Write `per_class` images of each target class under `out`; returns the paths."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # regenerate from scratch: no stale files survive
    images, labels = procedural.make_arrays(procedural.TARGET_CLASSES, per_class, seed,
                                            size)
    counters, paths = {}, []
    for pixels, label in zip(images, labels):
        name = procedural.TARGET_CLASSES[label]
        k = counters[name] = counters.get(name, -1) + 1
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels)
        if (name, k) == ("ring", 0):  # odd file 1: grayscale
            path = folder / f"{name}_{k:03d}.png"
            image.convert("L").save(path)
        elif (name, k) == ("arrow", 0):  # odd file 2: a JPEG among PNGs
            path = folder / f"{name}_{k:03d}.jpg"
            image.save(path, quality=92)
        else:
            path = folder / f"{name}_{k:03d}.png"
            image.save(path, optimize=True)
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="default: data/sample")
    p.add_argument("--per-class", type=int, default=40, help="default 40")
    p.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    args = p.parse_args(argv)
    paths = write_sample(args.out, args.per_class, args.seed)
    total = sum(path.stat().st_size for path in paths)
    print(f"wrote {len(paths)} images to {args.out} ({total / 2**20:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
