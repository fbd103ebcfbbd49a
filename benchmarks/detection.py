"""Detection and localization on generated sets: the figures issue 31 is judged on.

    python benchmarks/detection.py                        # everything, seeds 0 1 2
    python benchmarks/detection.py --part detection --seeds 0
    python benchmarks/detection.py --smoke                # wiring only: tiny, 1 epoch

Parts (`--part`, default all):
  detection     the multi-object set of recipes/make_detection_sample.py (300 images of
                3 sizes, 1-6 objects of 3 classes, 8-48 px, clutter; drawn from
                SAMPLE_SEED, not the sample's own seed), `transferkit train --task
                detection` with defaults (EfficientNet-Lite0, ImageNet weights):
                validation COCO mAP@[.5:.95] and AP50 per seed, mean and spread; then
                the same from scratch (random weights, every layer training for the
                same epochs), the transfer / scratch ratio
  localization  the one-object set (240 images, 12-32 px objects in 64-96 px images,
                3 classes), `train --task localization` with defaults: validation
                class accuracy and mean box IoU per seed, and the mean IoU of
                `predict --json`'s boxes (image pixels) against the CSV's on the
                validation images
  timing        phase 1 per epoch on cached feature maps vs live, side by side in
                one process (Lite0, the multi-object set)
  mediapipe     the detection part's runs (trained here when --out does not hold them)
                exported to .tflite fp32 and int8, run by MediaPipe's ObjectDetector
                (tests/deploy/mediapipe_client.py, a process without TensorFlow) on 60
                unseen images of the detection set's kind, at their own sizes, as the
                same pixels (TF's decoding saved as PNG: only the resize differs) and
                resized to the model input beforehand: the share of `predict
                --json`'s detections matched by one of MediaPipe's (same class name,
                IoU >= 0.9, and 0.5, in MediaPipe's whole pixels), per seed
  variants      the defaults on sets they were not developed on, one seed each:
                localization with 5 classes, 8-20 px objects in 96-128 px images;
                detection on recipes/detection_sets.py's scenes (another
                generator: 4 classes with crescents and frames, 1-6 objects of 8-48
                px, clutter shapes and lines, images of 64x64, 112x80 and 96x128)
  assignment    how many objects get a positive location: KerasHub's RetinaNet
                anchors (its label encoder, IoU >= 0.5) vs the centre sampling of
                `models.detection.targets`, on the multi-object set at Lite0's grid
Every image is generated from its seed, so each figure regenerates with its command.
With --out, a detection or localization run already there (its metrics.json and
model.keras) is reused instead of trained again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import detection_sets  # noqa: E402
import make_detection_sample  # noqa: E402
from transferkit import cli  # noqa: E402
from transferkit.app.train import train  # noqa: E402
from transferkit.training.recipe import recipe_from_dict  # noqa: E402

DATA_SEED = 0  # the sets are fixed; seeds vary the split and the training
# The detection set: recipes/make_detection_sample.py's scenes from a seed of their own
# (the sample's default seed is the set the head was developed on).
SAMPLE_SEED = 31


def spread(values):
    """"mean ± std (min-max)" of a list of floats."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {std:.3f} ({min(values):.3f}-{max(values):.3f})"


def run(keys, out, seed):
    """Train a recipe of flat `keys` at `seed` into `out`; returns RunResult."""
    recipe = recipe_from_dict({**keys, "seed": seed, "report": False})
    keras.utils.set_random_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        result = train(recipe, out, verbose=0, overwrite=True)
    keras.backend.clear_session()
    return result


def detection_part(args, data, out):
    base = {"data": str(data), "task": "detection", **args.keys}
    scratch = {**base, "weights": "none", "head_epochs": 0, "unfreeze": "none",
               "finetune_epochs": args.scratch_epochs, "finetune_lr": 1e-3}
    found = {"transfer": [], "scratch": []}
    sides = (("transfer", base),) + ((("scratch", scratch),) if args.scratch else ())
    for seed in args.seeds:
        for side, keys in sides:
            start = time.perf_counter()
            val = trained(keys, os.path.join(out, f"det_{side}_{seed}"), seed)
            found[side].append(val)
            print(f"  seed {seed} {side:8s}: mAP {val['map']:.3f}, AP50 {val['ap50']:.3f}, "
                  f"AP75 {val['ap75']:.3f}, recall {val['recall']:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    n = len(args.seeds)
    for side, _ in sides:
        print(f"detection {side} (mean of {n} seed(s)): mAP "
              f"{spread(v['map'] for v in found[side])}, AP50 "
              f"{spread(v['ap50'] for v in found[side])}")
    if not args.scratch:
        return
    ratio = np.mean([v["map"] for v in found["transfer"]]) / max(
        np.mean([v["map"] for v in found["scratch"]]), 1e-9)
    print(f"mAP ratio transfer / scratch (mean of {n} seed(s)): {ratio:.2f}x")


def localization_part(args, data, out):
    from transferkit.training.recipe import load_run_data

    base = {"data": str(data), "task": "localization", **args.keys}
    rows = [r.split(",") for r in Path(data).read_text().splitlines()[1:]]
    truth = {str((Path(data).parent / r[0]).resolve()): [float(v) for v in r[2:6]]
             for r in rows}
    accuracy, iou, agree = [], [], []
    for seed in args.seeds:
        folder = os.path.join(out, f"loc_{seed}")
        val = trained(base, folder, seed)
        accuracy.append(val["accuracy"])
        iou.append(val["mean_iou"])
        # predict --json on the validation images (the run's split, drawn again from
        # its seed): boxes in each image's own pixels against the CSV's.
        recipe = recipe_from_dict({**base, "seed": seed})
        with contextlib.redirect_stdout(io.StringIO()):
            images = list(load_run_data(recipe, verbose=False).val_files)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            cli.main(["predict", folder, *images, "--json"])
        boxes = [json.loads(line)["box"] for line in printed.getvalue().splitlines()]
        agree.append(float(np.mean([_iou(truth[str(Path(p).resolve())], b)
                                    for p, b in zip(images, boxes)])))
        print(f"  seed {seed}: accuracy {accuracy[-1]:.3f}, mean box IoU {iou[-1]:.3f}, "
              f"predict --json boxes vs CSV on the {len(images)} validation images "
              f"(pixels) mean IoU {agree[-1]:.3f}", flush=True)
    n = len(args.seeds)
    print(f"localization (mean of {n} seed(s)): accuracy {spread(accuracy)}, mean box IoU "
          f"{spread(iou)}, predict boxes vs CSV {spread(agree)}")


def trained(keys, folder, seed):
    """The validation metrics of the run of `keys` at `seed` in `folder`: the run kept
    there by an earlier call with the same --out (its metrics.json), else a new one."""
    metrics = os.path.join(folder, "metrics.json")
    if os.path.exists(metrics) and os.path.exists(os.path.join(folder, "model.keras")):
        return json.loads(Path(metrics).read_text())["val"]
    return run(keys, folder, seed).metrics["val"]


def variants_part(args, data, out):
    """The defaults on other object sizes, image sizes and class counts (one seed)."""
    seed = args.seeds[0]
    count = 24 if args.smoke else 240
    one = detection_sets.one_object_set(
        os.path.join(out, "variant_one"), count, DATA_SEED + 1,
        sizes=((96, 96), (128, 96), (112, 128)), side_range=(8, 20),
        classes=("arrow", "cross", "ring", "crescent", "frame"))
    val = run({"data": str(one), "task": "localization", **args.keys},
              os.path.join(out, "variant_loc"), seed).metrics["val"]
    print(f"variant localization (5 classes, 8-20 px objects in 96-128 px images, seed "
          f"{seed}): accuracy {val['accuracy']:.3f}, mean box IoU {val['mean_iou']:.3f}",
          flush=True)
    many = detection_sets.objects_set(
        os.path.join(out, "variant_many"), 24 if args.smoke else 300, DATA_SEED + 1,
        classes=("arrow", "cross", "crescent", "frame"))  # none a clutter shape
    val = run({"data": str(many), "task": "detection", **args.keys},
              os.path.join(out, "variant_det"), seed).metrics["val"]
    print(f"variant detection (4 classes, another generator, seed {seed}): mAP "
          f"{val['map']:.3f}, AP50 {val['ap50']:.3f}", flush=True)


def mediapipe_part(args, data, out):
    """MediaPipe ObjectDetector on the exported defaults vs predict (see the docstring):
    on the unseen images at their own sizes (each side resamples them its own way), and
    on the same images resized to the model's input beforehand (PNG: no resampling on
    either side, so only the export can differ)."""
    import subprocess

    from PIL import Image

    client = Path(__file__).resolve().parents[1] / "tests" / "deploy" / "mediapipe_client.py"
    unseen = make_detection_sample.write_sample(os.path.join(out, "unseen"),
                                                args.unseen, SAMPLE_SEED + 1)
    native = sorted(str(p) for p in (Path(unseen).parent / "images").glob("*.jpg"))
    base = {"data": str(data), "task": "detection", **args.keys}
    found = {}
    for seed in args.seeds:
        folder = os.path.join(out, f"det_transfer_{seed}")
        if not os.path.exists(os.path.join(folder, "model.keras")):
            run(base, folder, seed)
        files = {}
        for name, extra in (("fp32", ()), ("int8", ("--quantize", "int8", "--data",
                                                      str(data)))):
            target = os.path.join(out, f"mp_{name}_{seed}")
            with contextlib.redirect_stdout(io.StringIO()):
                cli.main(["export", folder, "--format", "tflite", "--out", target, *extra])
            files[name] = os.path.join(target, "model_int8.tflite" if extra
                                       else "model.tflite")
        size = json.loads(Path(files["fp32"] + ".json").read_text())["input"]
        sized = os.path.join(out, f"mp_sized_{seed}")
        os.makedirs(sized, exist_ok=True)
        at_input = []
        for path in native:
            at_input.append(os.path.join(sized, Path(path).stem + ".png"))
            with Image.open(path) as img:
                img.convert("RGB").resize((size["width"], size["height"]),
                                          Image.BILINEAR).save(at_input[-1])
        # The same pixels on both sides: TF's decoding of each JPEG, saved as PNG, so
        # only the resize to the model input can differ (not the JPEG decoder).
        same = os.path.join(out, f"mp_same_{seed}")
        os.makedirs(same, exist_ok=True)
        same_pixels = []
        for path in native:
            same_pixels.append(os.path.join(same, Path(path).stem + ".png"))
            Image.fromarray(_tf_decoded(path)).save(same_pixels[-1])
        line = []
        for where, images in (("own size", native), ("same pixels", same_pixels),
                              ("input size", at_input)):
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                cli.main(["predict", folder, *images, "--json"])
            rows = [json.loads(x) for x in printed.getvalue().splitlines()]
            jobs = os.path.join(out, f"mp_jobs_{seed}.json")
            Path(jobs).write_text(json.dumps([{"kind": "detector", "model": f,
                                               "images": images} for f in files.values()]))
            done = subprocess.run([sys.executable, str(client), jobs], capture_output=True,
                                  text=True, timeout=1200,
                                  env={**os.environ, "PYTHONPATH": ""})
            if done.returncode:
                raise SystemExit(f"MediaPipe client failed:\n{done.stderr[-3000:]}")
            results = json.loads(done.stdout.strip().splitlines()[-1])
            line.append(f"{where}: {sum(len(r['detections']) for r in rows)} detections")
            if where == "own size":
                # What whole pixels alone cost: predict's boxes against themselves
                # truncated as MediaPipe reports them.
                line.append(f"own size whole-pixel truncation IoU>=0.9 "
                            f"{_truncation_share(rows, images, 0.9):.1%}")
            for name, result in zip(files, results):
                for iou in (0.9, 0.5):
                    share, _ = _matched(rows, images, result["detections"], iou)
                    found.setdefault((where, name, iou), []).append(share)
                    line.append(f"{where} {name} IoU>={iou} {share:.1%}")
        print(f"  seed {seed}: share of predict's detections MediaPipe matches: "
              + ", ".join(line), flush=True)
    n = len(args.seeds)
    for where in ("own size", "same pixels", "input size"):
        print(f"MediaPipe ObjectDetector agreement, images at their {where} (mean of {n} "
              f"seed(s), IoU >= 0.9): fp32 {spread(found[where, 'fp32', 0.9])}, int8 "
              f"{spread(found[where, 'int8', 0.9])}; at IoU >= 0.5: fp32 "
              f"{spread(found[where, 'fp32', 0.5])}, int8 {spread(found[where, 'int8', 0.5])}")


def _matched(rows, images, theirs_per_image, iou):
    """(share of predict's detections matched by one of MediaPipe's: same class, IoU >=
    `iou` in MediaPipe's whole pixels, and how many there were)."""
    from PIL import Image

    matched = total = 0
    for row, path, theirs in zip(rows, images, theirs_per_image):
        with Image.open(path) as img:
            width, height = img.size
        for d in row["detections"]:
            box = _mediapipe_pixels(d["box_normalized"], width, height)
            total += 1
            matched += any(c == d["class"] and _iou(box, b) >= iou for c, _, b in theirs)
    return matched / max(total, 1), total


def _tf_decoded(path):
    """The RGB pixels TF's decoder (the one predict uses) reads from an image file."""
    import tensorflow as tf

    return tf.io.decode_image(tf.io.read_file(path), channels=3,
                              expand_animations=False).numpy()


def _truncation_share(rows, images, iou):
    """Share of predict's detections whose box, truncated to whole pixels as MediaPipe
    reports boxes, keeps IoU >= `iou` with its exact (float pixel) self."""
    from PIL import Image

    kept = []
    for row, path in zip(rows, images):
        with Image.open(path) as img:
            width, height = img.size
        for d in row["detections"]:
            exact = [v * s for v, s in zip(d["box_normalized"], (width, height) * 2)]
            kept.append(_iou(_mediapipe_pixels(d["box_normalized"], width, height),
                             exact) >= iou)
    return float(np.mean(kept)) if kept else 0.0


def _mediapipe_pixels(box, width, height):
    """A normalised box as MediaPipe reports one: whole pixels, the origin and the size
    each truncated (as tests/deploy/test_mediapipe.py compares them)."""
    x, y = int(box[0] * width), int(box[1] * height)
    return [x, y, x + int((box[2] - box[0]) * width), y + int((box[3] - box[1]) * height)]


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - w * h
    return w * h / union if union > 0 else 0.0


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def timing_part(args, data, out):
    from transferkit.training import fine_tune
    from transferkit.training.cache import FeatureStore
    from transferkit.training.recipe import build_run_model, load_run_data

    epochs = args.timing_epochs
    keys = {"data": str(data), "task": "detection", **args.keys, "head_epochs": epochs,
            "head_cached_epochs": epochs, "finetune_epochs": 0, "head_cached_patience": 0,
            "head_early_stopping_patience": 0}
    recipe = recipe_from_dict(keys)
    with contextlib.redirect_stdout(io.StringIO()):
        data_splits = load_run_data(recipe, verbose=False)
    per_epoch = {}
    for mode in ("cached", "live"):
        keras.utils.set_random_seed(0)
        model = build_run_model(recipe, data_splits.num_classes)
        cache = recipe.feature_cache(FeatureStore()) if mode == "cached" else None
        timer = EpochTimes()
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            fine_tune(model, data_splits, config=recipe.schedule,
                      task=recipe.task_config(), cache=cache, callbacks=[timer], verbose=0)
        total = time.perf_counter() - start
        # The first epoch traces the step function: the rest are the steady state.
        per_epoch[mode] = float(np.mean(timer.times[1:] or timer.times))
        print(f"  {mode:6s}: {per_epoch[mode]:.2f} s per epoch over {len(timer.times)} "
              f"epochs ({total:.0f} s in all"
              + (", extraction of the maps included)" if mode == "cached" else ")"),
              flush=True)
        keras.backend.clear_session()
    print(f"phase 1 per epoch: live {per_epoch['live']:.2f} s / cached maps "
          f"{per_epoch['cached']:.2f} s = {per_epoch['live'] / per_epoch['cached']:.1f}x")


def assignment_part(args, data, out):
    """Objects with at least one positive: anchors (KerasHub) vs centre sampling."""
    import keras_hub
    import tensorflow as tf

    from transferkit.core.task_registry import get_task
    from transferkit.data.annotations import pad_objects, read_objects
    from transferkit.models.builder import ModelConfig
    from transferkit.models.detection import assign

    config = ModelConfig(backbone=args.keys.get("backbone", "efficientnet_lite0"),
                         image_size=int(args.keys.get("image_size", 0)))
    task = get_task("detection").bind(config)
    grid = task.grid
    height, width = grid.image
    paths, labels, _, _ = read_objects(str(data))
    names = sorted({o.label for lab in labels for o in lab.objects})
    rows = pad_objects(labels, names, 100)
    # RetinaNet's defaults (keras_hub RetinaNetObjectDetector): anchors of 4 x stride at
    # 3 scales and 3 aspect ratios, on the levels of this grid's strides.
    levels = [int(np.log2(s)) for s in grid.strides]
    # Pixel yxyx: the anchor generator makes absolute boxes (it knows no image size).
    anchors = keras_hub.layers.AnchorGenerator(
        "yxyx", min_level=min(levels), max_level=max(levels), num_scales=3,
        aspect_ratios=[0.5, 1.0, 2.0], anchor_size=4)
    # The label encoder RetinaNetObjectDetector builds (not in keras_hub's public API).
    from keras_hub.src.models.retinanet.retinanet_label_encoder import (
        RetinaNetLabelEncoder)

    encoder = RetinaNetLabelEncoder(anchors, "yxyx")
    images = tf.zeros((1, height, width, 3))
    found = {"anchors": [], "centre sampling": []}
    sizes = []
    for row in rows:
        valid = row[row[:, 0] >= 0]
        if not len(valid):
            continue
        yxyx = (valid[:, [2, 1, 4, 3]] * [height, width, height, width])[None]
        _, classes = encoder(images, tf.constant(yxyx, tf.float32),
                             tf.constant(valid[:, :1][None]))
        # Which object each positive anchor matched: re-match by IoU, as the encoder did.
        anchor_boxes = tf.concat(list(anchors(images).values()), axis=0).numpy()
        anchor_boxes = anchor_boxes / [height, width, height, width]
        positive = classes.numpy().reshape(-1) >= 0  # [anchors]: -1 background, -2 ignored
        from transferkit.tasks.boxes import iou_matrix
        ious = iou_matrix(anchor_boxes[positive][:, [1, 0, 3, 2]], valid[:, 1:5])
        hit_anchor = np.zeros(len(valid), bool)
        if positive.any():
            best = ious.argmax(axis=1)
            hit_anchor[np.unique(best[ious.max(axis=1) >= 0.5])] = True
        dense = assign(tf.constant(valid), grid, len(names)).numpy()
        hit_centre = np.array([np.any(np.all(np.isclose(dense[:, -4:], v[1:5]), axis=1)
                                      & (dense[:, :-4].max(axis=1) > 0)) for v in valid])
        found["anchors"] += hit_anchor.tolist()
        found["centre sampling"] += hit_centre.tolist()
        sizes += np.sqrt((valid[:, 3] - valid[:, 1]) * width
                         * (valid[:, 4] - valid[:, 2]) * height).tolist()
    sizes = np.array(sizes)
    print(f"objects with a positive location at {width}x{height} (strides "
          f"{list(grid.strides)}), {len(sizes)} objects:")
    for name, hits in found.items():
        hits = np.array(hits)
        small = sizes < np.percentile(sizes, 33)
        print(f"  {name:16s}: {hits.mean():.1%} of all, {hits[small].mean():.1%} of the "
              f"smallest third (< {np.percentile(sizes, 33):.0f} px at the model input)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--part", choices=("all", "detection", "localization", "timing",
                                      "assignment", "mediapipe", "variants"),
                   default="all")
    p.add_argument("--smoke", action="store_true",
                   help="tiny_test at 32 px, 1 epoch, 24 images, one seed: wiring only")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--no-scratch", dest="scratch", action="store_false",
                   help="detection: the defaults only, without the from-scratch side")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe keys to change from their defaults (e.g. finetune_lr=1e-4), "
                        "to measure a candidate default the same way")
    args = p.parse_args(argv)
    args.keys, args.scratch_epochs, args.timing_epochs, args.unseen = {}, 30, 3, 60
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set takes KEY=VALUE; received {item!r}")
        try:
            args.keys[key] = json.loads(value)
        except ValueError:  # a word: the recipe reads it as a string
            args.keys[key] = value
    count, one_count = 300, 240
    if args.smoke:
        args.seeds = args.seeds[:1]
        args.keys = {"backbone": "tiny_test", "weights": "none", "image_size": 32,
                     "head_epochs": 1, "finetune_epochs": 1, "batch_size": 8,
                     "head_cached_epochs": 1, "finetune_cached_epochs": 1, **args.keys}
        args.scratch_epochs, args.timing_epochs, count, one_count = 1, 2, 24, 24
        args.unseen = 6
    parts = ("assignment", "detection", "mediapipe", "localization", "variants",
             "timing") \
        if args.part == "all" \
        else (args.part,)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        data = make_detection_sample.write_sample(os.path.join(out, "objects"), count,
                                                  SAMPLE_SEED)
        one = detection_sets.one_object_set(os.path.join(out, "one"), one_count, DATA_SEED)
        backbone = args.keys.get("backbone", "efficientnet_lite0 (ImageNet)")
        print(f"detection benchmark: {backbone}, seeds {args.seeds}"
              + (" (smoke: a wiring check, not a measurement)" if args.smoke else ""))
        for part in parts:
            print(f"--- {part}", flush=True)
            {"detection": detection_part, "localization": localization_part,
             "timing": timing_part, "assignment": assignment_part,
             "mediapipe": mediapipe_part, "variants": variants_part}[part](
                args, one if part == "localization" else data, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
