"""`transferkit train`: its flags are generated from RecipeConfig's tree (the leaf
`schedule.head.epochs`, recipe key `head_epochs`, is `--head-epochs`, its help the
field's doc), so the CLI, recipe files, recipe scripts and the API can never drift
apart."""

import argparse
import json
import os

from transferkit.app.train import train
from transferkit.cli.common import command
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.core.timing import StageTimer
from transferkit.data.splits import SPLIT_NAMES
from transferkit.evaluation.evaluate import format_report
from transferkit.training.checkpoint import CheckpointConfig
from transferkit.training.recipe import (KEYS, LEAVES, SHORTHANDS, RecipeConfig, load_recipe,
                                         recipe_from_dict)
from transferkit.training.recipe_book import recipe_by_name
from transferkit.tuning.report import best_recipe_path

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
    p.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps (default: epoch ends)")
    p.add_argument("--keep-checkpoints", type=int, default=3, metavar="K",
                   help="checkpoints to keep (default 3)")
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
    group = parser.add_argument_group("recipe settings (recipe keys; see RecipeConfig)")
    for leaf in LEAVES.values():
        if leaf.key not in skip:
            _add_flag(group, leaf.key, leaf.kind, f"{leaf.doc} (default: "
                      f"{_shown(leaf.default)})")
    shorthands = parser.add_argument_group("shorthands (set one or both phases)")
    for key, targets in SHORTHANDS.items():
        leaf = LEAVES[targets[0]]
        flags = " and ".join("--" + t.replace("_", "-") for t in targets)
        _add_flag(shorthands, key, leaf.kind, f"sets {flags}")


def _add_flag(group, key, kind, help):
    flag = "--" + key.replace("_", "-")
    if kind is bool:
        group.add_argument(flag, dest=key, default=None, help=help,
                           action=argparse.BooleanOptionalAction)
    elif kind is tuple:
        group.add_argument(flag, dest=key, default=None, type=_tuple_arg, metavar="LIST",
                           help=f"{help}; comma-separated")
    else:
        group.add_argument(flag, dest=key, default=None, type=kind,
                           metavar=kind.__name__.upper(), help=help)


def _shown(value):
    if isinstance(value, tuple):
        return ",".join("=".join(map(str, v)) if isinstance(v, tuple) else str(v)
                        for v in value) or "none"
    return repr(value) if isinstance(value, str) else value


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


def _tuple_arg(text):
    items = [t.strip() for t in text.split(",") if t.strip()]
    if all("=" in t for t in items) and items:
        return tuple((k, _number(v)) for k, v in (t.split("=", 1) for t in items))
    return tuple(_number(t) for t in items)


def _number(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


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
    # The process's start-up (interpreter, imports, arguments) is the run's first stage.
    result = train(recipe, args.out, resume=args.resume, data_service=args.data_service,
                   checkpoint=CheckpointConfig(args.save_every, args.keep_checkpoints),
                   trusted=args.trusted, overwrite=args.overwrite,
                   timer=StageTimer.since_process_start())
    print_result(result, recipe.task)


def print_result(result, task):
    """The run directory and each split's headline metrics (`task`: the run's)."""
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
    return load_recipe(best_recipe_path(args.from_tuning))
