"""Open world on the shipped sample: the novelty score against an unseen class, and
add-class against a full retrain.

    python benchmarks/open_world.py            # 3 seeds, both backbones
    python benchmarks/open_world.py --smoke    # 1 seed, 10 images a class: wiring only

data/sample has 5 classes; `ring` plays the unknown. Per seed and backbone:
  1. train on the other 4 classes (the backbone's recipe defaults, a 20% test split held
     out) and score the test images and every ring image with the stored novelty score:
     AUROC, the share of test images rejected (calibrated to 5% on validation) and the
     share of ring images rejected;
  2. `add_classes` the ring class to that run: old classes' test-free validation
     accuracy before/after, the ring's recall, and its wall time;
  3. retrain all 5 classes from scratch with the same recipe: its wall time.
Backbones: the shipped source checkpoint (compact_cnn, 64 px) and EfficientNet-Lite0
with its real ImageNet weights (offline) at --lite-size px.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from transferkit.app import train as train_module  # noqa: E402
from transferkit.app.add_class import add_classes  # noqa: E402
from transferkit.app.train import train  # noqa: E402
from transferkit.data.files import image_dataset, list_images  # noqa: E402
from transferkit.evaluation.evaluate import eval_data, load_run, novelty_scores  # noqa: E402
from transferkit.models.novelty import auroc  # noqa: E402
from transferkit.training.recipe import recipe_from_dict  # noqa: E402

SAMPLE = REPO / "data" / "sample"
UNKNOWN = "ring"


def folders(root, per_class=None):
    """(known: the 4 other classes, new: the ring class) copied under `root`."""
    known, new = os.path.join(root, "known"), os.path.join(root, "new")
    for name in sorted(os.listdir(SAMPLE)):
        target = os.path.join(new if name == UNKNOWN else known, name)
        os.makedirs(target)
        for f in sorted(os.listdir(SAMPLE / name))[:per_class]:
            shutil.copy(SAMPLE / name / f, os.path.join(target, f))
    return known, new


def one_seed(keys, seed, root, per_class, epochs):
    known, new = folders(root, per_class)
    base = {**keys, "report": False, "seed": seed, "test_split": 0.2, **epochs}
    run4 = os.path.join(root, "run4")
    train(recipe_from_dict({"data": known, **base}), run4, verbose=0)
    loaded = load_run(run4)
    test = novelty_scores(loaded, eval_data(loaded, known, split="test").dataset)
    rings = novelty_scores(loaded, image_dataset(list_images(new), loaded.input.size)[0])
    start = time.perf_counter()
    added = add_classes(run4, new, os.path.join(root, "run5"), verbose=False)
    add_time = time.perf_counter() - start
    both = os.path.join(root, "all5")
    shutil.copytree(known, both)
    shutil.copytree(os.path.join(new, UNKNOWN), os.path.join(both, UNKNOWN))
    start = time.perf_counter()
    train(recipe_from_dict({"data": both, **base}), os.path.join(root, "run5_full"),
          verbose=0)
    full_time = time.perf_counter() - start
    val = added.metrics["val"]
    return dict(auroc=auroc(test, rings), test_rejected=np.mean(loaded.novelty.unknown(test)),
                ring_rejected=np.mean(loaded.novelty.unknown(rings)),
                detector=loaded.novelty.detector,
                old_before=val["old_classes_accuracy_before"],
                old_after=val["old_classes_accuracy"], new_recall=val["new_classes_recall"],
                add_time=add_time, full_time=full_time)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lite-size", type=int, default=128,
                        help="EfficientNet-Lite0 input size (default 128)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 seed, 10 images a class, Lite0 at 32 px, 2 + 1 epochs")
    parser.add_argument("--outlier-images", type=int, default=None,
                        help="make the synthetic outliers of the novelty choice from at "
                        "most this many validation images (default: train's own, "
                        f"{train_module.OUTLIER_IMAGES}), to measure what the cap costs")
    parser.add_argument("--backbone", choices=("both", "source", "lite0"), default="both",
                        help="which backbone's rows to run (default both)")
    args = parser.parse_args(argv)
    if args.outlier_images is not None:
        train_module.OUTLIER_IMAGES = args.outlier_images
    seeds, per_class, lite, epochs = args.seeds, None, args.lite_size, {}
    if args.smoke:  # and 2 + 1 epochs: the code paths, not figures
        seeds, per_class, lite = [0], 10, 32
        epochs = {"head_epochs": 2, "finetune_epochs": 1}
    backbones = {
        "source checkpoint (compact_cnn, 64 px)": dict(
            backbone="compact_cnn", weights=str(REPO / "data" / "source_compact_cnn.keras"),
            image_size=64),
        f"efficientnet_lite0 with its ImageNet weights ({lite} px)": dict(
            backbone="efficientnet_lite0", weights="imagenet", image_size=lite)}
    if args.backbone != "both":
        backbones = dict(list(backbones.items())[args.backbone == "lite0":][:1])
    for label, keys in backbones.items():
        rows = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as root:
                rows.append(one_seed(keys, seed, root, per_class, epochs))

        def ms(key):
            values = np.asarray([r[key] for r in rows], dtype=float)
            return f"{values.mean():.2f} ± {values.std():.2f}"

        detectors = ", ".join(sorted({r["detector"] for r in rows}))
        ratio = np.mean([r["add_time"] / r["full_time"] for r in rows])
        print(f"{label}, {len(seeds)} seed(s):\n"
              f"  unknown '{UNKNOWN}' vs known test images: AUROC {ms('auroc')} ({detectors}); "
              f"rejected: known test {ms('test_rejected')}, unknown {ms('ring_rejected')}\n"
              f"  add-class '{UNKNOWN}': old classes {ms('old_before')} -> {ms('old_after')}, "
              f"new recall {ms('new_recall')}; time add-class {ms('add_time')} s vs full "
              f"retrain {ms('full_time')} s = {ratio:.2f}x; synthetic outliers from at "
              f"most {train_module.OUTLIER_IMAGES} val images")


if __name__ == "__main__":
    main()
