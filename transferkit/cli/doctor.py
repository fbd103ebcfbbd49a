"""`transferkit doctor`: wrong labels, leaks across splits, near-duplicates, outliers
and what to label next, with a review page and a fixes file `train --fixes` reads."""

import os

from transferkit.data_doctor.doctor import doctor
from transferkit.cli.common import command
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir

EPILOG = """examples:
  transferkit doctor data/pets --out doctor/pets
  transferkit doctor data/pets --val-data data/pets_val --backbone efficientnet_lite0 \\
      --image-size 224 --out doctor/pets --unlabeled data/new_photos
  # review doctor/pets/review.html in a browser, save fixes.csv, then:
  transferkit train --data data/pets --fixes doctor/pets/fixes.csv --out runs/pets

It reads the data as `train` does (same scan and split), caches backbone features in
the cache training uses, and writes issues.json (every finding), review.html (thumbnails
and keep / relabel / exclude per image) and fixes.csv (its proposals: relabel likely
wrong labels, exclude the training copy of each leak).
"""


def register(sub):
    p = command(sub, "doctor", "Find wrong labels, leaks between splits, near-duplicates "
                "and outliers; write a review page and a fixes file.", EPILOG)
    p.add_argument("data", metavar="DATA", help="folder of class subfolders or CSV")
    p.add_argument("--val-data", default="", metavar="VAL",
                   help="validation data (default: carved from DATA as train does)")
    p.add_argument("--backbone", help="feature extractor (default: the recipe default)")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet, none or a weights file (default imagenet)")
    p.add_argument("--image-size", type=int, help="input size (default: the backbone's)")
    p.add_argument("--folds", type=int, default=5,
                   help="K of the out-of-fold heads (default 5)")
    p.add_argument("--views", type=int, default=0,
                   help="augmented views per training image for the heads (default 0)")
    p.add_argument("--unlabeled", metavar="DIR",
                   help="also rank these unlabelled images, most uncertain first")
    p.add_argument("--seed", type=int, default=0, help="split and fold seed (default 0)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for issues.json, review.html and fixes.csv")
    p.set_defaults(func=run)


def run(args):
    if RunDir(args.out).is_run_dir():
        raise ConfigError(f"The `--out` argument {args.out} is a run directory; choose "
                          f"another folder, e.g. --out {os.path.join(args.out, 'doctor')}.")
    result = doctor(args.data, out_dir=args.out, val_data=args.val_data,
                    backbone=args.backbone, weights=args.weights,
                    image_size=args.image_size, folds=args.folds, views=args.views,
                    unlabeled=args.unlabeled, seed=args.seed)
    counts = ", ".join(f"{n} {kind}" for kind, n in result.counts.items()) or "no issues"
    print(f"doctor: {counts}")
    for row in result.rows[:10]:
        twin = f" <-> {row['other']}" if row.get("other") else ""
        hint = f" -> {row['suggested_label']}" if row.get("suggested_label") else ""
        print(f"  {row['kind']:<15}{row['score']:.2f}  {row['path']}{twin}{hint}")
    if len(result.rows) > 10:
        print(f"  ... {len(result.rows) - 10} more in {result.files['issues.json']}")
    print(f"took {result.seconds:.1f} s = {result.seconds / max(result.epoch_seconds, 1e-9):.1f}"
          f"x one live phase-1 epoch (~{result.epoch_seconds:.2f} s, estimated)")
    for name, path in result.files.items():
        print(f"{name}: {path}")
