"""`transferkit train`: its flags are generated from RecipeConfig's fields (`head_epochs`
becomes `--head-epochs`), so the CLI, recipe files, recipe scripts and the API can
never drift apart."""

import argparse
import dataclasses
import os

from transferkit.cli.common import command
from transferkit.core.errors import ConfigError, check_choice
from transferkit.evaluation.evaluate import format_report
from transferkit.training.checkpoint import CheckpointConfig
from transferkit.training.distribute import STRATEGIES
from transferkit.training.recipe import FIELDS, RecipeConfig, load_recipe, recipe_from_dict
from transferkit.training.run import train
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
    p.add_argument("--recipe", help="JSON file of recipe keys (flags override it)")
    p.add_argument("--from-tuning", metavar="DIR",
                   help="retrain the best configuration of `transferkit tune --out DIR` "
                   "(its best_recipe.json; flags override it)")
    p.add_argument("--out", required=True, help="run directory to write")
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
    add_recipe_flags(p, RecipeConfig)
    p.set_defaults(func=run)


def add_recipe_flags(parser, config_cls, skip=()):
    """One `--flag` per dataclass field; None (not given) leaves the field alone."""
    group = parser.add_argument_group("recipe settings (see RecipeConfig)")
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        if isinstance(default, bool):
            group.add_argument(flag, dest=field.name, default=None,
                               action=argparse.BooleanOptionalAction)
        elif isinstance(default, tuple):
            group.add_argument(flag, dest=field.name, default=None, type=_tuple_arg,
                               help="comma-separated, e.g. 256,128 or alpha=0.35")
        else:
            group.add_argument(flag, dest=field.name, default=None, type=type(default),
                               metavar=type(default).__name__.upper(),
                               help=f"default: {default!r}")


def recipe_from_args(args, base=None):
    """The RecipeConfig given by `base` (default: `--recipe`, else the defaults) with
    the recipe flags of `args` applied."""
    if base is None:
        base = load_recipe(args.recipe) if getattr(args, "recipe", None) else RecipeConfig()
    values = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
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
    if args.resume and os.path.exists(os.path.join(args.out, "config.json")):
        # The run's own recipe; a --recipe or --from-tuning given too is applied over
        # it, so `train` can refuse what it would change.
        saved = load_recipe(os.path.join(args.out, "config.json"))
        base = base or (load_recipe(args.recipe, saved) if args.recipe else saved)
    recipe = recipe_from_args(args, base)
    check_choice("strategy", recipe.strategy, STRATEGIES)
    if not recipe.data:
        raise ConfigError("The `--data` argument is required: a folder of class "
                          "subfolders, a CSV file, or tfds:NAME.")
    result = train(recipe, args.out, resume=args.resume, data_service=args.data_service,
                   checkpoint=CheckpointConfig(args.save_every, args.keep_checkpoints),
                   trusted=args.trusted, overwrite=args.overwrite)
    print_result(result, recipe.task)


def print_result(result, task):
    """The run directory and each split's headline metrics (`task`: the run's)."""
    print(f"run directory: {result.out_dir}")
    for split, report in result.metrics.items():
        print(f"{split}: {format_report(report, task).splitlines()[0]}")


def from_tuning(args):
    """The best recipe of `--from-tuning DIR`, or None."""
    if not getattr(args, "from_tuning", None):
        return None
    if getattr(args, "recipe", None):
        raise ConfigError("Give either `--recipe` or `--from-tuning`, not both.")
    return load_recipe(best_recipe_path(args.from_tuning))
