"""Localization: box IoU and accuracy of transfer from the shipped checkpoint vs scratch.

    python benchmarks/localization.py             # 20 + 30 epochs, ~2 min a seed
    python benchmarks/localization.py --seeds 0 1 2
    python benchmarks/localization.py --smoke     # 1 epoch, 24 images, 32 px: wiring only

Both sides are `transferkit demo --task localization`'s recipes (`demo.demo_recipes`):
the same `compact_cnn` with a flattened-map head of 256 units, the same
data/localization/ split (240 images of three sizes, one boxed shape each), seed and
number of epochs; transfer starts from data/source_compact_cnn.keras (phase 1 the head
on cached features, phase 2 every layer at 1e-3, BN training), scratch from random
weights with everything training for the same total. Prints each seed's validation
accuracy, mean box IoU and correct_iou50 (right class, IoU >= 0.5), then their means.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from transferkit.app.train import train  # noqa: E402
from transferkit.cli import demo  # noqa: E402
from transferkit.training.recipe import recipe_from_dict  # noqa: E402

METRICS = ("accuracy", "mean_iou", "correct_iou50")


def scores(data_dir, seed, budget, image_size, out, data=None):
    """{"transfer": {metric: value}, "scratch": {...}} on the validation split at
    `seed` (of `data`, default the shipped sample)."""
    transfer, scratch = demo.demo_recipes(data_dir, seed, budget, task="localization")
    found = {}
    for name, recipe in (("transfer", transfer), ("scratch", scratch)):
        recipe = recipe_from_dict(dict(image_size=image_size, report=False,
                                       data=data or recipe.data.train), recipe)
        keras.utils.set_random_seed(seed)  # the same init stream for both sides
        result = train(recipe, os.path.join(out, f"{name}_{seed}"), verbose=0)
        found[name] = {m: result.metrics["val"][m] for m in METRICS}
        keras.backend.clear_session()
    return found


def subset(source, out, count):
    """The first `count` rows of `source`/boxes.csv and their images, under `out`."""
    os.makedirs(os.path.join(out, "images"))
    with open(os.path.join(source, "boxes.csv")) as handle:
        rows = list(csv.reader(handle))[:count + 1]
    for row in rows[1:]:
        shutil.copy(os.path.join(source, row[0]), os.path.join(out, row[0]))
    with open(os.path.join(out, "boxes.csv"), "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return os.path.join(out, "boxes.csv")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--smoke", action="store_true",
                   help="1 epoch each, 24 images at 32 px, one seed (not a measurement)")
    args = p.parse_args(argv)
    budget = (demo.DemoBudget(1, 0) if args.smoke
              else demo.DemoBudget(*demo.FULL_BUDGETS["localization"]))
    size = 32 if args.smoke else 64
    seeds = args.seeds[:1] if args.smoke else args.seeds
    data_dir = demo.find_data_dir(demo.SAMPLES["localization"])
    print(f"localization: compact_cnn, {size} px, {budget.head_epochs} + "
          f"{budget.finetune_epochs} epochs (scratch: "
          f"{budget.head_epochs + budget.finetune_epochs}), validation scores on "
          f"{data_dir / 'localization'}{' (first 24 images)' if args.smoke else ''}")
    runs = []
    with tempfile.TemporaryDirectory() as out:
        data = None
        if args.smoke:
            data = subset(data_dir / "localization", os.path.join(out, "data"), 24)
        for seed in seeds:
            found = scores(data_dir, seed, budget, size, out, data)
            runs.append(found)
            for side in ("transfer", "scratch"):
                print(f"  seed {seed} {side:8s}: " + ", ".join(
                    f"{m} {found[side][m]:.3f}" for m in METRICS))
    for side in ("transfer", "scratch"):
        means = {m: sum(r[side][m] for r in runs) / len(runs) for m in METRICS}
        print(f"{side} (mean of {len(runs)} seed(s)): " + ", ".join(
            f"{m} {v:.3f}" for m, v in means.items())
            + (" (smoke: a wiring check, not a measurement)" if args.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
