"""`transferkit train`: its flags are generated from RecipeConfig's tree (the leaf
`schedule.head.epochs`, recipe key `head_epochs`, is `--head-epochs`, its help the
field's doc), so the CLI, recipe files, recipe scripts and the API can never drift
apart."""

import json
import os

from transferkit.cli.common import command
from transferkit.cli.flags import add_config_flags, add_flag, config_from_args
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.core.timing import StageTimer
from transferkit.data.config import SPLIT_NAMES
from transferkit.training.config import CheckpointConfig
from transferkit.training.recipe import (KEYS, LEAVES, SHORTHANDS, RecipeConfig, load_recipe,
                                         recipe_from_dict)
from transferkit.training.recipe_book import recipe_by_name

EPILOG = """examples:
  transferkit train --data data/sample --backbone mobilenet_v2 --weights imagenet \\
      --image-size 224 --head-epochs 5 --finetune-epochs 5 --out runs/pets
  transferkit train --recipe my_recipe.json --data ~/photos --out runs/photos
  transferkit train --data data/sample --backbone tiny_test --weights none --out runs/t
  transferkit train --data ~/photos --backbone efficientnet_lite0 --out runs/lite0
  transferkit train --data ~/photos --backbone my_backbone.keras --out runs/mine
  transferkit train --from-tuning sweeps/sample --out runs/best   # best of `tune`
"""


def register(sub):
    p = command(sub, "train", "Train a model with the two-phase recipe and write a run "
                "directory.", EPILOG)
    p.add_argument("--recipe", help="a recipe name (`transferkit recipes` lists them) or "
                   "a JSON recipe file, nested or flat (flags override it)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved recipe as JSON and exit without training")
    p.add_argument("--from-tuning", metavar="DIR",
                   help="retrain the best configuration of `transferkit tune --out DIR` "
                   "(its best_recipe.json; flags override it)")
    p.add_argument("--out", help="run directory to write (required to train)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest intact checkpoint "
                   "(its config.json is the recipe; only report, strategy and "
                   "cache-features may be changed)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its model, checkpoints and "
                   "reports are deleted)")
    add_config_flags(p, CheckpointConfig)  # --save-every, --keep-checkpoints
    p.add_argument("--data-service", metavar="ADDRESS",
                   help="tf.data service dispatcher, e.g. grpc://host:5050: preprocessing "
                   "runs on its workers")
    p.add_argument("--trusted", action="store_true",
                   help="a .keras file given as --weights or --backbone may run code when "
                   "loaded (only "
                   "for files from people you trust); never read from a recipe file")
    add_recipe_flags(p)
    p.set_defaults(func=run)


def add_recipe_flags(parser, skip=()):
    """One `--flag` per recipe key (RecipeConfig's leaves, then the shorthands), its
    help the field's doc and default; None (not given) leaves the setting alone."""
    add_config_flags(parser, RecipeConfig, skip=skip, overlay=True,
                     title="recipe settings (recipe keys; see RecipeConfig)")
    shorthands = parser.add_argument_group("shorthands (set one or both phases)")
    for key, targets in SHORTHANDS.items():
        leaf = LEAVES[targets[0]]
        flags = " and ".join("--" + t.replace("_", "-") for t in targets)
        add_flag(shorthands, key, leaf.kind, f"sets {flags}", choices=leaf.choices)


def recipe_from_args(args, base=None):
    """The RecipeConfig given by `base` (default: `--recipe`, else the defaults) with
    the recipe flags of `args` applied."""
    if base is None:
        base = recipe_by_name(args.recipe) if getattr(args, "recipe", None) \
            else RecipeConfig()
    values = {k: getattr(args, k) for k in KEYS if getattr(args, k, None) is not None}
    if "data" in values:
        values["data"] = os.path.expanduser(values["data"])
    return recipe_from_dict(values, base)


def run(args):
    base = from_tuning(args)
    run_dir = RunDir(args.out) if args.out else None
    if args.resume and run_dir and os.path.exists(run_dir.config_file):
        # The run's own recipe; a --recipe or --from-tuning given too is applied over
        # it, so `train` can refuse what it would change.
        saved = load_recipe(run_dir.config_file)
        base = base or (recipe_by_name(args.recipe, saved) if args.recipe else saved)
    recipe = recipe_from_args(args, base)
    if args.print_config:
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    if not args.out:
        raise ConfigError("The `--out` argument is required: the run directory to write.")
    if not recipe.data.train:
        raise ConfigError("The `--data` argument is required: a folder of class "
                          "subfolders, a CSV file, or tfds:NAME.")
    from transferkit.app.train import train  # TensorFlow: when a run starts

    # The process's start-up (interpreter, imports, TensorFlow's above, arguments) is
    # its first stage.
    timer = StageTimer.since_process_start()
    result = train(recipe, args.out, resume=args.resume, data_service=args.data_service,
                   checkpoint=config_from_args(CheckpointConfig, args),
                   safe_mode=not args.trusted, overwrite=args.overwrite, timer=timer)
    print_result(result, recipe.task)


def print_result(result, task):
    """The run directory and each split's headline metrics (`task`: the run's)."""
    from transferkit.evaluation.evaluate import format_report

    print(f"run directory: {result.out_dir}")
    for split in SPLIT_NAMES:  # metrics.json also holds e.g. the novelty settings
        if split in result.metrics:
            print(f"{split}: {format_report(result.metrics[split], task).splitlines()[0]}")


def from_tuning(args):
    """The best recipe of `--from-tuning DIR`, or None."""
    if not getattr(args, "from_tuning", None):
        return None
    if getattr(args, "recipe", None):
        raise ConfigError("Give either `--recipe` or `--from-tuning`, not both.")
    from transferkit.tuning.report import best_recipe_path

    return load_recipe(best_recipe_path(args.from_tuning))
