"""End-to-end time to accuracy: transferkit's default recipe vs the Keras-guide script.

    python benchmarks/end_to_end.py              # a few minutes on 2 CPU cores
    python benchmarks/end_to_end.py --size 224 --per-class 500   # bigger

Same generated JPEG folders (train/ and val/), same backbone (MobileNetV2, alpha 1.0),
same fixed random initialisation (no ImageNet download here, so both sides load one
seeded random init from a weights file), same batch size and epoch budget:

  transferkit  `run.train` with the default recipe: scanned, parallel tf.data pipeline,
               phase 1 on cached features (2 augmented views), phase 2 on the top two
               blocks with cosine decay.
  keras guide  keras.io/guides/transfer_learning: image_dataset_from_directory,
               RandomFlip + RandomRotation layers inside the model, Rescaling to
               [-1, 1], backbone recomputed every epoch, then fine-tuning at 1e-5 with
               BatchNorm in inference mode (training=False) of the same top two blocks
               (default) or, with --baseline-unfreeze all, of the whole base as the
               guide does.

Prints each side's wall time (from the start, data loading included) to reach the
baseline's final validation accuracy, and their ratio. Both curves are first smoothed
the same way, a trailing mean of the last --smooth epochs (default 3): the target is
the guide's smoothed final value and each side's time is its first epoch whose
smoothed value reaches it. A single epoch's val accuracy on a few hundred images
moves by several points, so the raw "first epoch >= the last epoch's value" rewards
whichever side gets a lucky epoch early; that raw ratio is printed too, for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

GRAIN = (0.6, 8.0)  # blur (px) of the finest and the coarsest class's texture


def synth_folders(root, classes=2, per_class=100, val_per_class=40, size=96, seed=0):
    """`root/train` and `root/val` folders of generated JPEG textures.

    Class k is noise blurred at its own grain (from fine to coarse, with +-20% jitter),
    in a random tint at a random contrast. Seeded random MobileNetV2 features separate
    two grains to ~75% after a few epochs and keep improving, which gives the
    time-to-accuracy curves something to climb. Images are saved 25% larger than
    `size`, so both pipelines really decode and resize.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = Path(root, split, f"grain{k}")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                texture(rng, k, classes, int(size * 1.25)).save(folder / f"{i:04d}.jpg",
                                                                quality=90)
    return str(Path(root, "train")), str(Path(root, "val"))


def texture(rng, k, classes, side):
    """One image of class `k` of `classes` (see synth_folders)."""
    blur = GRAIN[0] * (GRAIN[1] / GRAIN[0]) ** (k / max(1, classes - 1))
    noise = rng.normal(128, 40, (side, side, 3)).clip(0, 255).astype(np.uint8)
    grain = np.asarray(Image.fromarray(noise).filter(
        ImageFilter.GaussianBlur(blur * rng.uniform(0.8, 1.2))), dtype=np.float32)
    grain = (grain - grain.mean()) / (grain.std() + 1e-6)
    pixels = rng.uniform(30, 230, 3) + grain * rng.uniform(20, 50)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def shared_init(path, size, classes=2, seed=0, calibration=64):
    """Save one seeded random MobileNetV2 (alpha 1.0) init to `path`; returns the path.

    Straight from its initializers, MobileNetV2's BatchNorm statistics (mean 0, var 1)
    fit nothing, and its pooled features shrink to ~1e-12: no head can learn from them.
    So BatchNorm statistics are set from `calibration` generated images (one forward
    pass in training mode with momentum 0, a data-dependent init); the conv weights
    stay random. Both sides of every benchmark load this same file.
    """
    import keras

    from transferkit.backbones import create_backbone

    keras.utils.set_random_seed(seed)
    backbone = create_backbone("mobilenet_v2", weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(seed + 1)
    images = np.stack([np.asarray(texture(rng, i % classes, classes, size))
                       for i in range(calibration)]).astype("float32")
    norms = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # moving statistics := this batch's statistics
    backbone(images / 127.5 - 1.0, training=True)  # MobileNetV2's "tf" preprocessing
    for layer in norms:
        layer.momentum = 0.99
    backbone.save_weights(path)
    return str(path)


def epoch_clock(start):
    """A callback recording (seconds since `start`, logs) at each epoch's end."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.points, self.begins, self.durations = [], [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.begins.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.durations.append(now - self.begins[-1])
            self.points.append((now - start, dict(logs or {})))

    return EpochClock()


def run_transferkit(train_dir, val_dir, weights, args, cache_dir):
    import keras

    from transferkit.recipe import RecipeConfig
    from transferkit.run import train

    keras.utils.set_random_seed(args.seed)
    os.environ["TRANSFERKIT_CACHE"] = cache_dir  # a cold cache: extraction is timed
    recipe = RecipeConfig(data=train_dir, val_data=val_dir, backbone="mobilenet_v2",
                          weights=weights, image_size=args.size,
                          batch_size=args.batch_size, head_epochs=args.head_epochs,
                          finetune_epochs=args.finetune_epochs, seed=args.seed)
    start = time.perf_counter()
    clock = epoch_clock(start)
    train(recipe, os.path.join(cache_dir, "run"), callbacks=[clock], verbose=0)
    return clock.points, time.perf_counter() - start


def run_keras_guide(train_dir, val_dir, weights, args):
    """The keras.io transfer-learning guide's recipe, as a user would write it."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    size = (args.size, args.size)
    train_ds = keras.utils.image_dataset_from_directory(
        train_dir, image_size=size, batch_size=args.batch_size, seed=args.seed,
        verbose=False).prefetch(8)
    val_ds = keras.utils.image_dataset_from_directory(
        val_dir, image_size=size, batch_size=args.batch_size, shuffle=False,
        verbose=False).prefetch(8)
    augmentation = keras.Sequential([layers.RandomFlip("horizontal"),
                                     layers.RandomRotation(0.1)])
    base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=size + (3,))
    base.load_weights(weights)
    base.trainable = False
    inputs = keras.Input(shape=size + (3,))
    x = augmentation(inputs)
    x = layers.Rescaling(scale=1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(args.classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    clock = epoch_clock(start)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, validation_data=val_ds, epochs=args.head_epochs, callbacks=[clock],
              verbose=0)
    base.trainable = True
    if args.baseline_unfreeze == "same":  # the top blocks transferkit's recipe unfreezes
        for layer in base.layers[:first_trainable(base, args.unfreeze_blocks)]:
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, validation_data=val_ds, initial_epoch=args.head_epochs,
              epochs=args.head_epochs + args.finetune_epochs, callbacks=[clock], verbose=0)
    return clock.points, time.perf_counter() - start


def first_trainable(base, blocks):
    """Index of the first layer of MobileNetV2's last `blocks` blocks (as transferkit's
    `last_blocks:K` policy counts them)."""
    from transferkit.backbones import block_starts, get_spec

    starts = block_starts([layer.name for layer in base.layers], get_spec("mobilenet_v2"))
    return starts[max(0, len(starts) - blocks)]


def smoothed(points, window):
    """(seconds, trailing mean of the last `window` epochs' val_accuracy) per epoch;
    window=1 is the raw curve. The first epochs average what there is so far."""
    accs = [logs.get("val_accuracy", float("nan")) for _, logs in points]
    return [(seconds, float(np.mean(accs[max(0, i + 1 - window):i + 1])))
            for i, (seconds, _) in enumerate(points)]


def time_to(curve, target):
    """Seconds until the (seconds, value) `curve` first reaches `target` (None if
    never)."""
    for seconds, value in curve:
        if value >= target - 1e-9:
            return seconds
    return None


def compare(guide, kit, window):
    """(target, guide seconds, transferkit seconds) on curves smoothed by `window`."""
    guide_curve, kit_curve = smoothed(guide, window), smoothed(kit, window)
    target = guide_curve[-1][1]
    return target, time_to(guide_curve, target), time_to(kit_curve, target)


def _curve(points):
    return " ".join(f"{logs.get('val_accuracy', float('nan')):.2f}@{s:.0f}s"
                    for s, logs in points)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="image side (default 128)")
    parser.add_argument("--classes", type=int, default=2, help="texture classes (2)")
    # 100 validation images per class: fewer make "first reaches" a coin toss.
    parser.add_argument("--per-class", type=int, default=200, help="train images per class")
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--baseline-unfreeze", choices=("same", "all"), default="same",
                        help="phase 2 of the guide script: 'same' top blocks as "
                        "transferkit (default), or 'all' of the base as keras.io does")
    parser.add_argument("--smooth", type=int, default=3,
                        help="epochs in the trailing mean both curves are compared on "
                        "(default 3; 1: raw per-epoch values)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write both curves (seconds, logs) here")
    args = parser.parse_args(argv)
    if args.smooth < 1:
        parser.error(f"--smooth should be >= 1. Received: {args.smooth}")
    load_before = os.getloadavg()[0]
    args.unfreeze_blocks = 2  # RecipeConfig's default unfreeze="last_blocks:2"

    with tempfile.TemporaryDirectory(prefix="tk_e2e_") as tmp:
        train_dir, val_dir = synth_folders(tmp, args.classes, args.per_class,
                                           args.val_per_class, args.size, args.seed)
        weights = shared_init(os.path.join(tmp, "init.weights.h5"), args.size,
                              args.classes, args.seed)
        guide, guide_total = run_keras_guide(train_dir, val_dir, weights, args)
        kit, kit_total = run_transferkit(train_dir, val_dir, weights, args,
                                         os.path.join(tmp, "tk"))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "guide": guide, "transferkit": kit}, f,
                      default=float)
    n_train, n_val = args.classes * args.per_class, args.classes * args.val_per_class
    print(f"end to end: mobilenet_v2 alpha 1.0 at {args.size} px, shared random init "
          f"(no ImageNet), {n_train} train / {n_val} val generated JPEGs, "
          f"{args.classes} classes, {args.head_epochs} + {args.finetune_epochs} epochs, "
          f"batch {args.batch_size}; load average before/after: {load_before:.1f}/"
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  (guide phase 2 unfreezes: {args.baseline_unfreeze}; transferkit: last 2 "
          "blocks)")
    print(f"  keras guide  total {guide_total:6.1f} s   val acc per epoch: {_curve(guide)}")
    print(f"  transferkit  total {kit_total:6.1f} s   val acc per epoch: {_curve(kit)}")
    status = 0
    for window in dict.fromkeys((args.smooth, 1)):  # the headline first, then raw
        target, t_guide, t_kit = compare(guide, kit, window)
        what = (f"trailing mean of {window} epochs' val accuracy, both sides"
                if window > 1 else "raw per-epoch val accuracy (noisier)")
        print(f"target ({what}): the guide's final value {target:.3f}")
        print(f"  keras guide reaches it after {t_guide:.1f} s")
        if t_kit is None:
            best = max(value for _, value in smoothed(kit, window))
            print(f"  transferkit does not reach it (best {best:.3f}); ratio: n/a")
            status = status or int(window == args.smooth)
            continue
        print(f"  transferkit reaches it after {t_kit:.1f} s")
        print(f"  time-to-accuracy ratio (guide / transferkit): {t_guide / t_kit:.1f}x"
              + (" (goal >= 3x)" if window == args.smooth else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
