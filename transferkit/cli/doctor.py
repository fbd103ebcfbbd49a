"""`transferkit doctor`: wrong labels, leaks across splits, near-duplicates, outliers
and what to label next, with a review page and a fixes file `train --fixes` reads."""

import os

from transferkit.cli.common import command
from transferkit.cli.flags import add_config_flags, config_from_args
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.data_doctor.config import DoctorConfig
from transferkit.training.recipe import RecipeConfig

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


# What the doctor reads as `train` does (their defaults and help are the recipe's).
RECIPE_KEYS = ("backbone", "weights", "image_size", "seed")


def register(sub):
    p = command(sub, "doctor", "Find wrong labels, leaks between splits, near-duplicates "
                "and outliers; write a review page and a fixes file.", EPILOG)
    p.add_argument("data", metavar="DATA", help="folder of class subfolders or CSV")
    p.add_argument("--val-data", default="", metavar="VAL",
                   help="validation data (default: carved from DATA as train does)")
    add_config_flags(p, RecipeConfig, only=RECIPE_KEYS, overlay=True,
                     title="the feature extractor and split (recipe keys)")
    add_config_flags(p, DoctorConfig, title="the out-of-fold heads (DoctorConfig)")
    p.add_argument("--unlabeled", metavar="DIR",
                   help="also rank these unlabelled images, most uncertain first")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for issues.json, review.html and fixes.csv")
    p.set_defaults(func=run)


def run(args):
    if RunDir(args.out).is_run_dir():
        raise ConfigError(f"The `--out` argument {args.out} is a run directory; choose "
                          f"another folder, e.g. --out {os.path.join(args.out, 'doctor')}.")
    settings = config_from_args(DoctorConfig, args)
    keys = {k: getattr(args, k) for k in RECIPE_KEYS if getattr(args, k) is not None}
    from transferkit.data_doctor.doctor import doctor

    result = doctor(args.data, out_dir=args.out, val_data=args.val_data,
                    folds=settings.folds, views=settings.views, unlabeled=args.unlabeled,
                    **keys)
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
