"""Phase 1 on cached features vs recomputing the backbone: ratios from one run.

    python benchmarks/cache.py               # ~1.5 min on 2 CPU cores
    python benchmarks/cache.py --size 224 --per-class 100 --epochs 10   # bigger
    python benchmarks/cache.py --smoke       # tiny sizes: the code paths, not figures
    python benchmarks/cache.py --imagenet    # real ImageNet features (Lite0), ~1 min

On generated JPEG folders (see end_to_end.synth_folders), MobileNetV2 alpha 1.0 with one
seeded random init shared by every path (no ImageNet download here), or with --imagenet
EfficientNet-Lite0 with its real ImageNet weights (offline) and 6 texture classes, as in
end_to_end.py; phase 1 of the two-phase schedule (frozen backbone, same head, optimizer,
batch size and epochs):

  live      `fine_tune(model, data)`: the backbone recomputed every epoch, augmentation
            `--augment` on the fly
  cached    `fine_tune(..., cache=FeatureCache())`: features extracted once without
            augmentation, head trained on them
  views     `FeatureCache(views=--views, augment=...)`: the clean pass and that many
            augmented ones extracted once, one random view per epoch

Each cache starts empty (in memory), so extraction is timed: "extract s" runs from the
call to phase 1's first epoch. Prints the per-epoch time ratio live / cached (median of
epochs 2..E, so tracing is left out; goal >= 30x), the ratio of whole phase-1 times
over E epochs with extraction included, and each path's validation accuracy (of the
full model on images).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from end_to_end import (IMAGENET, describe_backbone, epoch_clock, now,  # noqa: E402
                        parse_smoke_args, shared_init, synth_folders)
from transferkit.training.cache import DEFAULT_VIEWS  # noqa: E402

# --smoke: the same three paths on a handful of small images, for the test suite.
SMOKE = dict(size=32, classes=2, per_class=8, val_per_class=8, batch_size=8, epochs=2)


def _epoch_time(clock):
    later = clock.durations[1:] or clock.durations
    return statistics.median(later)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="image side (default 128)")
    parser.add_argument("--classes", type=int, default=2,
                        help="texture classes (default 2; 6 with --imagenet)")
    parser.add_argument("--per-class", type=int, default=100, help="train images per class")
    parser.add_argument("--val-per-class", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5, help="phase-1 epochs E")
    parser.add_argument("--augment", default="light", help="preset of the live path")
    parser.add_argument("--views", type=int, default=DEFAULT_VIEWS,
                        help=f"augmented views beside the clean one (default "
                        f"{DEFAULT_VIEWS}, the recipe's; 0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_smoke_args(parser, argv, SMOKE,
                            imagenet={"classes": IMAGENET["classes"]})

    import keras

    from transferkit.data import augment_config, load_data
    from transferkit.models import build_model
    from transferkit.training import (FeatureCache, PhaseCallback, PhaseConfig,
                                      ScheduleConfig, fine_tune)

    augment = augment_config(args.augment)
    schedule = ScheduleConfig(head=PhaseConfig(epochs=args.epochs, learning_rate=1e-3,
                                               early_stopping_patience=None),
                              finetune=PhaseConfig(epochs=0),  # phase 1 only
                              batch_size=args.batch_size)

    class PhaseStart(PhaseCallback):
        """Notes when phase 1 is ready to train: with a cache, after extraction."""

        def on_phase_begin(self, run):
            self.at = time.perf_counter()

    def phase_one(m, data, cache=None):
        """Phase 1 of `m` through `fine_tune`: (seconds to its first epoch, median
        epoch seconds, whole phase seconds)."""
        start = now()
        ready, clock = PhaseStart(), epoch_clock(start)
        fine_tune(m, data, config=schedule, cache=cache, callbacks=[ready, clock],
                  verbose=0)
        return ready.at - start[0], _epoch_time(clock), time.perf_counter() - start[0]

    rows = []
    with tempfile.TemporaryDirectory(prefix="tk_cache_") as tmp:
        train_dir, val_dir = synth_folders(tmp, args.classes, args.per_class,
                                           args.val_per_class, args.size, args.seed)
        weights = "imagenet" if args.imagenet else shared_init(
            os.path.join(tmp, "init.weights.h5"), args.size, args.classes, args.seed)
        data = load_data({"train": train_dir, "val": val_dir}, image_size=args.size,
                         batch_size=args.batch_size, seed=args.seed, augment=augment,
                         verbose=False)

        def model():
            keras.utils.set_random_seed(args.seed)  # the same head init on every path
            return build_model(args.backbone, args.classes, weights=weights,
                               input_shape=args.size)

        def accuracy(m):
            return m.evaluate(data.val, verbose=0, return_dict=True)["accuracy"]

        live = model()
        _, epoch, total = phase_one(live, data)
        rows.append((f"live backbone ({args.augment} aug)", None, epoch, total,
                     accuracy(live)))

        for views in (0, args.views) if args.views else (0,):
            m = model()
            cache = FeatureCache(views=views, augment=augment if views else None,
                                 seed=args.seed)
            extracted, epoch, total = phase_one(m, data, cache)
            label = f"cached, clean + {views} ({args.augment} aug)" if views else \
                "cached, no aug"
            rows.append((label, extracted, epoch, total, accuracy(m)))

    n_train, n_val = args.classes * args.per_class, args.classes * args.val_per_class
    print(f"phase 1: {describe_backbone(args)} at {args.size} px, {n_train} train / "
          f"{n_val} val generated JPEGs, {args.classes} classes, {args.epochs} epochs, "
          f"batch {args.batch_size}")
    print(f"  {'path':<32}{'extract s':>10}{'epoch s':>10}{'phase 1 s':>11}{'val acc':>9}")
    for label, extracted, epoch, total, acc in rows:
        ext = "-" if extracted is None else f"{extracted:.1f}"
        print(f"  {label:<32}{ext:>10}{epoch:>10.3f}{total:>11.1f}{acc:>9.3f}")
    live_epoch, live_total = rows[0][2], rows[0][3]
    for label, extracted, epoch, total, _ in rows[1:]:
        print(f"{label}: per-epoch ratio live / cached {live_epoch / epoch:.0f}x "
              f"(goal >= 30x); over {args.epochs} epochs with extraction "
              f"{live_total / total:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
