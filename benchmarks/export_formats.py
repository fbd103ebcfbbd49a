"""Export formats side by side: size, accuracy, agreement with Keras and latency.

    python benchmarks/export_formats.py              # 3 seeds, Lite0 at 128 px
    python benchmarks/export_formats.py --seeds 0 1 2 3 4 --size 96
    python benchmarks/export_formats.py --smoke      # compact_cnn, 1 seed: wiring only

Per seed: EfficientNet-Lite0 with its ImageNet weights (offline) is trained on the
shipped data/sample (5 shape classes, 40 images each, 64x64), phase 1 only, on cached
features (augment none, the seed's 25% validation split); then what `transferkit export
MODEL --format all --data data/sample --check` does, in-process: keras, savedmodel,
TFLite fp32, fp16 and int8 (calibrated on training images of every class), each scored
by `check_parity` on the validation split next to the source Keras model. Prints each
seed's table, then per format: size, accuracy and agreement with Keras as mean ± sd
over the seeds, ms per image (batches of 32, this machine's CPU, mean over seeds) and
the largest difference of any probability from the Keras model's (over every seed).
--smoke runs the same code on the demo's small compact_cnn (from its shipped
checkpoint), since three TFLite conversions of Lite0 alone take a minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from transferkit.app.train import train  # noqa: E402
from transferkit.cli import demo  # noqa: E402
from transferkit import deploy as ex  # noqa: E402
from transferkit.evaluation.evaluate import eval_data, load_run  # noqa: E402
from transferkit.training.recipe import RecipeConfig  # noqa: E402

BACKBONE = "efficientnet_lite0"
SMOKE = dict(backbone="compact_cnn", size=32, classes=2, per_class=12, head_epochs=2)


def weights(backbone):
    """Lite0's ImageNet weights (offline), or the demo's compact_cnn checkpoint."""
    if backbone == BACKBONE:
        return "imagenet"
    return str(demo.find_data_dir() / demo.CHECKPOINT)


def describe(backbone):
    return (f"{backbone} with its ImageNet weights" if backbone == BACKBONE else
            f"{backbone} from the demo's checkpoint")


def sample_subset(source, out, classes, per_class):
    """The first `classes` class folders of `source`, `per_class` files each, under
    `out` (all of them: `source` itself)."""
    names = sorted(p.name for p in Path(source).iterdir() if p.is_dir())
    if classes >= len(names) and per_class >= 40:
        return str(source)
    for name in names[:classes]:
        os.makedirs(os.path.join(out, name))
        for file in sorted(os.listdir(os.path.join(source, name)))[:per_class]:
            shutil.copy(os.path.join(source, name, file), os.path.join(out, name, file))
    return out


def one_seed(data, seed, args, out):
    """check_parity's rows for every format of a model trained at `seed`."""
    recipe = RecipeConfig.from_keys(
        data=data, task="multiclass", backbone=args.backbone,
        weights=weights(args.backbone),
        image_size=args.size, val_split=0.25, seed=seed, augment="none",
        head_epochs=args.head_epochs, head_lr=1e-2, finetune_epochs=0,
        early_stopping_patience=0, batch_size=32, report=False)
    run = os.path.join(out, f"run_{seed}")
    keras.utils.set_random_seed(seed)
    train(recipe, run, verbose=0)
    loaded = load_run(run)
    representative = ex.representative_images(loaded, data)
    paths = [ex.export_model(loaded, fmt, os.path.join(out, f"export_{seed}"),
                             quantize=quantize, representative=representative)
             for fmt, quantize in ex.export_plan("all", calibration_data=True)]
    rows = ex.check_parity(loaded, paths, eval_data(loaded, data, split="val"))
    print(f"seed {seed}:\n{ex.format_parity(rows, 0.01, loaded.task)}", flush=True)
    keras.backend.clear_session()
    return rows[1:]  # the artifacts (row 0 is the source model itself)


def mean_sd(values):
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def summary(per_seed):
    """One line per format: MB, accuracy and agreement mean ± sd, ms/image, and the
    largest probability difference from Keras over every seed."""
    lines = [f"{'format':<14}{'MB':>7}  {'accuracy':>15}  {'agreement':>15}  "
             f"{'ms/image':>8}  {'max|d|':>7}"]
    for i, row in enumerate(per_seed[0]):
        rows = [seed_rows[i] for seed_rows in per_seed]
        lines.append(
            f"{row['format']:<14}{statistics.mean(r['size_mb'] for r in rows):>7.2f}  "
            f"{mean_sd([r['accuracy'] for r in rows]):>15}  "
            f"{mean_sd([r['agreement'] for r in rows]):>15}  "
            f"{statistics.mean(r['ms_per_image'] for r in rows):>8.2f}  "
            f"{max(r['max_abs_diff'] for r in rows):>7.4f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--backbone", default=BACKBONE, choices=(BACKBONE, "compact_cnn"))
    p.add_argument("--size", type=int, default=128, help="input size (default 128)")
    p.add_argument("--head-epochs", type=int, default=10)
    p.add_argument("--classes", type=int, default=5, help="classes of data/sample used")
    p.add_argument("--per-class", type=int, default=40, help="images per class used")
    p.add_argument("--smoke", action="store_true",
                   help="1 seed, " + ", ".join(f"{k}={v}" for k, v in SMOKE.items()) +
                   " (wiring only: its figures mean nothing)")
    args = p.parse_args(argv)
    if args.smoke:
        p.set_defaults(**SMOKE, seeds=[0])
        args = p.parse_args(argv)
    source = demo.find_data_dir() / demo.SAMPLE_DIR
    print(f"export formats: {describe(args.backbone)}, {args.size} px, phase "
          f"1 only ({args.head_epochs} epochs on cached features), data/sample "
          f"({args.classes} classes x {args.per_class} images, 25% validation), "
          f"seeds {args.seeds}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        data = sample_subset(source, os.path.join(out, "data"), args.classes,
                             args.per_class)
        per_seed = [one_seed(data, seed, args, out) for seed in args.seeds]
    print(f"\nper format over {len(args.seeds)} seed(s) (mean ± sd; agreement: "
          f"fraction of validation images predicted as the Keras model does):")
    print(summary(per_seed))


if __name__ == "__main__":
    main()
