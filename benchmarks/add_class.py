"""`transferkit add-class` against retraining on every class, timed as a user times them.

    python benchmarks/add_class.py                  # data/sample, Lite0 at 128 px, 3 seeds
    python benchmarks/add_class.py --image-size 224 # the backbone's own size
    python benchmarks/add_class.py --smoke          # tiny: the code paths, not figures

data/sample has 5 classes; `ring` is the one added. Per seed, each step a whole
`transferkit` process (start-up included), all with the default recipe but
--image-size and --seed:
  1. `transferkit train` on the other 4 classes (not timed: the run to extend);
  2. `transferkit add-class RUN --data ring/` (timed), which replays that run's
     cached features;
  3. `transferkit train` on all 5 classes (timed), on a feature cache that holds none
     of its features (its splits differ from step 1's), as a user retraining would.
Prints both wall times, their ratio per seed and over seeds (mean ± sd), the same in
CPU seconds of the processes, and each side's validation accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stages import mean_sd, timed  # noqa: E402

SAMPLE = REPO / "data" / "sample"
ADDED = "ring"


def folders(root, per_class=None):
    """(known: the 4 other classes, new: the added class, all: the 5) under `root`."""
    known, new, both = (os.path.join(root, name) for name in ("known", "new", "all"))
    for name in sorted(os.listdir(SAMPLE)):
        for target in ((new,) if name == ADDED else (known,)) + (both,):
            os.makedirs(os.path.join(target, name))
            for file in sorted(os.listdir(SAMPLE / name))[:per_class]:
                shutil.copy(SAMPLE / name / file, os.path.join(target, name, file))
    return known, new, both


def one_seed(args, seed, root):
    known, new, both = folders(os.path.join(root, f"data{seed}"), args.per_class)
    env = {**os.environ, "PYTHONPATH": args.source + os.pathsep + os.environ.get(
        "PYTHONPATH", ""), "TRANSFERKIT_CACHE": os.path.join(root, f"cache{seed}")}
    flags = ["--image-size", str(args.image_size), "--seed", str(seed)]
    tk = [sys.executable, "-m", "transferkit"]
    run4, run5, full = (os.path.join(root, f"{name}{seed}") for name in ("run4_", "run5_",
                                                                         "full_"))
    timed([*tk, "train", "--data", known, *flags, "--out", run4], env, root)
    load = os.getloadavg()[0]
    add_wall, add_cpu, _ = timed([*tk, "add-class", run4, "--data", new, "--out", run5],
                                 env, root)
    full_wall, full_cpu, _ = timed([*tk, "train", "--data", both, *flags, "--out", full],
                                   env, root)

    def accuracy(run):
        return json.load(open(os.path.join(run, "metrics.json")))["val"]["accuracy"]

    row = dict(add_wall=add_wall, add_cpu=add_cpu, full_wall=full_wall, full_cpu=full_cpu,
               add_acc=accuracy(run5), full_acc=accuracy(full),
               load=(load, os.getloadavg()[0]))
    print(f"seed {seed}: add-class {add_wall:.1f} s / train on all 5 {full_wall:.1f} s = "
          f"{add_wall / full_wall:.2f}x wall ({add_cpu:.1f} / {full_cpu:.1f} CPU s = "
          f"{add_cpu / full_cpu:.2f}x); val accuracy {row['add_acc']:.3f} / "
          f"{row['full_acc']:.3f}; load {row['load'][0]:.1f}/{row['load'][1]:.1f}",
          flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=128,
                        help="--image-size of every run (default 128)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--per-class", type=int, default=None,
                        help="only this many images of each class (default all 40)")
    parser.add_argument("--source", default=str(REPO),
                        help="the transferkit source tree to time (default: this one)")
    parser.add_argument("--smoke", action="store_true",
                        help="1 seed, 8 images a class at 32 px: the code paths only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.per_class, args.image_size = 1, 8, 32
    with tempfile.TemporaryDirectory(prefix="tk_add_class_") as root:
        rows = [one_seed(args, seed, root) for seed in range(args.seeds)]
    wall = [r["add_wall"] / r["full_wall"] for r in rows]
    cpu = [r["add_cpu"] / r["full_cpu"] for r in rows]
    print(f"over {len(rows)} seed(s), efficientnet_lite0 (ImageNet weights) at "
          f"{args.image_size} px, whole processes: add-class "
          f"{mean_sd([r['add_wall'] for r in rows])} s, train on all 5 classes "
          f"{mean_sd([r['full_wall'] for r in rows])} s; add-class / train = "
          f"{mean_sd(wall, 2)}x wall, {mean_sd(cpu, 2)}x CPU (goal <= 0.25x)")
    print(f"val accuracy: add-class {mean_sd([r['add_acc'] for r in rows], 3)}, train "
          f"on all 5 {mean_sd([r['full_acc'] for r in rows], 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
