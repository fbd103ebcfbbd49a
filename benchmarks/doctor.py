"""`transferkit doctor` on planted faults: precision/recall of label flips, leaks found, cost.

    python benchmarks/doctor.py              # data/sample, 3 plantings, both backbones
    python benchmarks/doctor.py --smoke      # 1 planting, tiny sizes: wiring only

The shipped sample (5 classes x 40 images) is split 80/20 into train/ and val/ folders;
10% of the training labels are flipped (the file moved to another class folder) and one
re-encoded JPEG copy of a training image per class is put in val/ (a leak). Each
planting seed plants other files. The doctor then runs on the train/ + val/ pair with
two feature extractors, as a user would pick them:
  - the shipped source checkpoint (compact_cnn pretrained on 10 other classes, 64 px);
  - EfficientNet-Lite0 with its real ImageNet weights (offline), at --lite-size px.
Printed per extractor: flip precision and recall (mean ± sd over plantings), leaks
found / planted, the doctor's wall time, and that time as a multiple of one live
phase-1 epoch (the frozen backbone's pass over the training split, estimated by the
doctor itself).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from transferkit.data_doctor.doctor import doctor  # noqa: E402

SAMPLE = REPO / "data" / "sample"
SOURCE = dict(backbone="compact_cnn", weights=str(REPO / "data" / "source_compact_cnn.keras"),
              image_size=64)


def plant(root, source=SAMPLE, flip=0.1, leaks=1, seed=0, per_class=None):
    """train/ and val/ folders under `root` from a class-folder `source`: every 5th file
    of a class in val/, `flip` of the training files moved to another class folder
    (renamed flip_*), `leaks` re-encoded JPEG copies of training files per class put
    in val/ (named copy_*). Returns (train, val, flipped real paths,
    {val copy real path: training original real path})."""
    rng = random.Random(seed)
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    classes = sorted(os.listdir(source))
    for name in classes:
        os.makedirs(os.path.join(train, name))
        os.makedirs(os.path.join(val, name))
        files = sorted(os.listdir(os.path.join(source, name)))[:per_class]
        for i, f in enumerate(files):
            split = val if i % 5 == 4 else train
            shutil.copy(os.path.join(source, name, f), os.path.join(split, name, f))
    listed = [(c, f) for c in classes for f in sorted(os.listdir(os.path.join(train, c)))]
    flipped = set()
    for name, f in rng.sample(listed, round(flip * len(listed))):
        target = os.path.join(train, rng.choice([c for c in classes if c != name]), "flip_" + f)
        os.rename(os.path.join(train, name, f), target)
        flipped.add(os.path.realpath(target))
    copies = {}
    for name in classes:
        originals = [f for f in sorted(os.listdir(os.path.join(train, name)))
                     if not f.startswith("flip_")]
        for f in rng.sample(originals, leaks):
            copy = os.path.join(val, name, "copy_" + os.path.splitext(f)[0] + ".jpg")
            with Image.open(os.path.join(train, name, f)) as image:
                image.convert("RGB").save(copy, quality=85)
            copies[os.path.realpath(copy)] = os.path.realpath(os.path.join(train, name, f))
    return train, val, flipped, copies


def score(result, flipped, copies):
    """(precision, recall, leaks found) of a DoctorResult against the planted faults."""
    found = {os.path.realpath(r["path"]) for r in result.rows if r["kind"] == "label"}
    hits = len(found & flipped)
    leaks = {(os.path.realpath(r["other"]), os.path.realpath(r["path"]))
             for r in result.rows if r["kind"] == "leak"}
    return (hits / len(found) if found else 0.0, hits / max(len(flipped), 1),
            len(set(copies.items()) & leaks))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="planting seeds (default 0 1 2)")
    parser.add_argument("--lite-size", type=int, default=224,
                        help="EfficientNet-Lite0 input size (default 224)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 planting, 10 images a class, Lite0 at 32 px")
    args = parser.parse_args(argv)
    seeds, per_class, lite = args.seeds, None, args.lite_size
    if args.smoke:
        seeds, per_class, lite = [0], 10, 32
    extractors = {"source checkpoint (compact_cnn, 64 px)": SOURCE,
                  f"efficientnet_lite0 with its ImageNet weights ({lite} px)":
                  dict(backbone="efficientnet_lite0", weights="imagenet", image_size=lite)}
    for label, keys in extractors.items():
        rows = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as root:
                train, val, flipped, copies = plant(root, seed=seed, per_class=per_class)
                start = time.perf_counter()
                result = doctor(train, val_data=val, verbose=False, seed=seed, **keys)
                wall = time.perf_counter() - start
                rows.append((*score(result, flipped, copies), len(copies), wall,
                             wall / max(result.epoch_seconds, 1e-9)))
        p, r, found, planted, wall, ratio = (np.asarray(c, dtype=float) for c in zip(*rows))
        print(f"{label}: flips precision {p.mean():.2f} ± {p.std():.2f}, recall "
              f"{r.mean():.2f} ± {r.std():.2f} over {len(seeds)} planting(s); leaks found "
              f"{int(found.sum())}/{int(planted.sum())}; doctor {wall.mean():.1f} s = "
              f"{ratio.mean():.0f}x one live phase-1 epoch")


if __name__ == "__main__":
    main()
