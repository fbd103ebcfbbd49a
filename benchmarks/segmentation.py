"""Segmentation: mean IoU of transfer from the shipped checkpoint vs from scratch.

    python benchmarks/segmentation.py            # the demo's 6 + 6 epochs, ~2 min a seed
    python benchmarks/segmentation.py --seeds 0 1 2
    python benchmarks/segmentation.py --smoke    # 1 epoch, 24 images, 32 px: wiring only

Both sides are `transferkit demo --task segmentation`'s recipes (`demo.demo_recipes`):
the same U-Net on `compact_cnn`, the same data/segmentation/ split, seed and number of
epochs; transfer starts from data/source_compact_cnn.keras (phase 1 decoder on the
frozen encoder, phase 2 the last two blocks, BN frozen), scratch from random weights
with everything training. Prints each seed's validation mIoU and the transfer/scratch
ratio, then the mean ratio. Phase 1 runs live (segmentation caches no features), so
there is no cache speed-up to report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from transferkit.cli import demo  # noqa: E402
from transferkit.training.recipe import recipe_from_dict  # noqa: E402
from transferkit.app.train import train  # noqa: E402


def miou_pair(data_dir, seed, budget, image_size, out, data=None):
    """(transfer mIoU, scratch mIoU) on the validation split at `seed` (of `data`,
    default the shipped sample)."""
    transfer, scratch = demo.demo_recipes(data_dir, seed, budget, task="segmentation")
    scores = []
    for name, recipe in (("transfer", transfer), ("scratch", scratch)):
        recipe = recipe_from_dict(dict(image_size=image_size, report=False, scan=False,
                                       data=data or recipe.data.train), recipe)
        keras.utils.set_random_seed(seed)  # the same init stream for both sides
        result = train(recipe, os.path.join(out, f"{name}_{seed}"), verbose=0)
        scores.append(result.metrics["val"]["miou"])
        keras.backend.clear_session()
    return tuple(scores)


def subset(source, out, count):
    """The first `count` image/mask pairs of `source`, copied under `out`."""
    for part in ("images", "masks"):
        os.makedirs(os.path.join(out, part))
        for name in sorted(os.listdir(os.path.join(source, part)))[:count]:
            shutil.copy(os.path.join(source, part, name), os.path.join(out, part, name))
    shutil.copy(os.path.join(source, "classes.txt"), out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--smoke", action="store_true",
                   help="1 epoch each, 24 images at 32 px, one seed (not a measurement)")
    args = p.parse_args(argv)
    budget = demo.DemoBudget(1, 0) if args.smoke else demo.FULL
    size = 32 if args.smoke else 64
    seeds = args.seeds[:1] if args.smoke else args.seeds
    data_dir = demo.find_data_dir(demo.SAMPLES["segmentation"])
    print(f"segmentation: U-Net on compact_cnn, {size} px, {budget.head_epochs} + "
          f"{budget.finetune_epochs} epochs (scratch: {budget.head_epochs + budget.finetune_epochs}),"
          f" validation mIoU on {data_dir / 'segmentation'}"
          f"{' (first 24 pairs)' if args.smoke else ''}")
    ratios = []
    with tempfile.TemporaryDirectory() as out:
        data = None
        if args.smoke:
            data = subset(data_dir / "segmentation", os.path.join(out, "data"), 24)
        for seed in seeds:
            transfer, scratch = miou_pair(data_dir, seed, budget, size, out, data)
            ratio = transfer / max(scratch, 1e-9)
            ratios.append(ratio)
            print(f"  seed {seed}: transfer {transfer:.3f}, scratch {scratch:.3f}: "
                  f"ratio transfer / scratch {ratio:.2f}x")
    print(f"mIoU ratio transfer / scratch (mean of {len(ratios)} seed(s)): "
          f"{sum(ratios) / len(ratios):.2f}x"
          f"{' (smoke: 1 epoch, a wiring check, not a measurement)' if args.smoke else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
