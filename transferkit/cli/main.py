"""The `transferkit` command line. One `_add_<command>` and one `_run_<command>` each.

`train`'s flags are generated from RecipeConfig's fields (`head_epochs` becomes
`--head-epochs`), so the CLI, recipes and the API can never drift apart.
"""

import argparse
import dataclasses
import os
import sys

EPILOG_TRAIN = """examples:
  transferkit train --data data/sample --backbone mobilenet_v2 --weights imagenet \\
      --image-size 224 --head-epochs 5 --finetune-epochs 5 --out runs/pets
  transferkit train --recipe my_recipe.json --data ~/photos --out runs/photos
  transferkit train --data data/sample --backbone tiny_test --weights none --out runs/t
  transferkit train --from-tuning sweeps/sample --out runs/best   # best of `tune`
"""


def main(argv=None):
    """Entry point of the `transferkit` console command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from transferkit.core.errors import TransferkitError

    try:
        return args.func(args) or 0
    except TransferkitError as error:
        print(f"transferkit {args.command}: error: {error}", file=sys.stderr)
        return 2


def build_parser():
    parser = argparse.ArgumentParser(
        prog="transferkit", description="Transfer learning with Keras backbones, "
        "two-phase fine-tuning done right.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_backbones, _add_train, _add_tune, _add_demo):
        add(sub)
    from transferkit.cli import commands  # scan, evaluate, predict, export

    commands.register(sub, _command)
    return parser


def _command(sub, name, help, epilog=None):
    return sub.add_parser(name, help=help, description=help, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


# --- backbones -----------------------------------------------------------------------

def _add_backbones(sub):
    p = _command(sub, "backbones", "List registered backbones: default size, parameters, "
                 "preprocessing.", "examples:\n  transferkit backbones\n"
                 "  transferkit backbones 'efficientnet*'\n")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    p.add_argument("--params", action="store_true",
                   help="build each backbone to count its parameters (slower)")
    p.set_defaults(func=_run_backbones)


def _run_backbones(args):
    from transferkit.models.backbones import create_backbone, get_spec, list_backbones

    print(f"{'name':<22}{'size':>6}{'min':>6}{'features':>10}{'params':>14}  preprocessing")
    for name in list_backbones(args.pattern):
        spec = get_spec(name)
        params = "-"
        if args.params:
            params = f"{create_backbone(name, weights=None).count_params():,}"
        print(f"{name:<22}{spec.default_size:>6}{spec.min_size:>6}{spec.feature_size:>10}"
              f"{params:>14}  {spec.preprocessing}")


# --- train ---------------------------------------------------------------------------

def _add_train(sub):
    from transferkit.training.recipe import RecipeConfig

    p = _command(sub, "train", "Train a model with the two-phase recipe and write a run "
                 "directory.", EPILOG_TRAIN)
    p.add_argument("--recipe", help="JSON file of recipe keys (flags override it)")
    p.add_argument("--from-tuning", metavar="DIR",
                   help="retrain the best configuration of `transferkit tune --out DIR` "
                   "(its best_recipe.json; flags override it)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint (its "
                   "config.json is the recipe; flags override it)")
    p.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps (default: epoch ends)")
    p.add_argument("--keep-checkpoints", type=int, default=3, metavar="K",
                   help="checkpoints to keep (default 3)")
    p.add_argument("--data-service", metavar="ADDRESS",
                   help="tf.data service dispatcher, e.g. grpc://host:5050: preprocessing "
                   "runs on its workers")
    add_recipe_flags(p, RecipeConfig)
    p.set_defaults(func=_run_train)


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
    from transferkit.training.recipe import FIELDS, RecipeConfig, load_recipe, recipe_from_dict

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


def _run_train(args):
    from transferkit.training.run import train

    from transferkit.training.checkpoint import CheckpointConfig
    from transferkit.training.distribute import STRATEGIES
    from transferkit.core.errors import check_choice

    base = _from_tuning(args)
    if args.resume and os.path.exists(os.path.join(args.out, "config.json")):
        from transferkit.training.recipe import load_recipe

        base = load_recipe(os.path.join(args.out, "config.json"))
    recipe = recipe_from_args(args, base)
    check_choice("strategy", recipe.strategy, STRATEGIES)
    if not recipe.data:
        from transferkit.core.errors import ConfigError

        raise ConfigError("The `--data` argument is required: a folder of class "
                          "subfolders, a CSV file, or tfds:NAME.")
    result = train(recipe, args.out, resume=args.resume, data_service=args.data_service,
                   checkpoint=CheckpointConfig(args.save_every, args.keep_checkpoints))
    print(f"run directory: {result.out_dir}")
    for split, metrics in result.metrics.items():
        print(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def _from_tuning(args):
    """The best recipe of `--from-tuning DIR`, or None."""
    if not getattr(args, "from_tuning", None):
        return None
    from transferkit.core.errors import ConfigError
    from transferkit.training.recipe import load_recipe
    from transferkit.tuning.tuner import best_recipe_path

    if getattr(args, "recipe", None):
        raise ConfigError("Give either `--recipe` or `--from-tuning`, not both.")
    return load_recipe(best_recipe_path(args.from_tuning))


# --- tune ----------------------------------------------------------------------------

EPILOG_TUNE = """examples:
  transferkit tune --data data/sample --backbone mobilenet_v2 --max-trials 20 \\
      --out sweeps/sample
  transferkit tune --data data/sample --backbone mobilenet_v2,efficientnet_b0 \\
      --tuner bayesian --space space.json --max-trials 30 --out sweeps/two
  transferkit tune --out sweeps/sample --resume          # continue an interrupted search
  transferkit train --from-tuning sweeps/sample --out runs/best

--backbone A,B searches over backbones, each at its own default input size. --space is
a JSON object of dimensions (null: the recipe's value; a value: fixed; a list: choices;
{"min": 1e-5, "max": 1e-3, "log": true}: a range), e.g.
  {"head_width": [0, 256], "finetune_lr": {"min": 1e-6, "max": 1e-4, "log": true},
   "unfreeze_blocks": [1, 2, 4], "augment": ["none", "light"], "head_epochs": 3}

Distributed: run the same command in every process, with KERASTUNER_TUNER_ID=chief on
one and tuner0, tuner1, ... on the others, and KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT set to the chief's address everywhere.
"""


def _add_tune(sub):
    from transferkit.training.recipe import RecipeConfig

    p = _command(sub, "tune", "Search hyperparameters of the whole two-phase recipe with "
                 "keras-tuner; write a results table and the best recipe.", EPILOG_TUNE)
    p.add_argument("--out", required=True, help="tuning directory to write")
    p.add_argument("--max-trials", type=int, help="trials to run (default 10; Hyperband "
                   "decides its own number)")
    p.add_argument("--tuner", choices=("random", "bayesian", "hyperband"),
                   help="keras-tuner search algorithm (default random)")
    p.add_argument("--space", metavar="FILE", help="JSON search space (see below)")
    p.add_argument("--objective", help="metric to optimise: val_accuracy (default; "
                   "val_loss for regression), or NAME:min / NAME:max")
    p.add_argument("--resume", action="store_true", help="continue the search in --out "
                   "with its saved settings (finished trials are kept)")
    p.add_argument("--in-process", action="store_true", help="train trials in this "
                   "process instead of one fresh process each (faster for tiny trials, "
                   "but memory grows by tens of MiB per trial)")
    p.add_argument("--recipe", help="JSON file of recipe keys for the base recipe")
    add_recipe_flags(p, RecipeConfig, skip=("backbone",))
    p.add_argument("--backbone", help="backbone name, or comma-separated names to search "
                   "over (default: the recipe's)")
    p.set_defaults(func=_run_tune)


def _run_tune(args):
    import dataclasses as dc

    from transferkit.tuning.tuner import load_search, tune
    from transferkit.tuning.space import SearchSpace, load_space

    settings = {"tuner": "random", "max_trials": 10, "objective": None}
    base, space = None, SearchSpace()
    if args.resume and os.path.exists(os.path.join(args.out, "search.json")):
        base, space, saved = load_search(args.out)
        settings.update({k: v for k, v in saved.items() if k in settings})
    names = [n.strip() for n in (args.backbone or "").split(",") if n.strip()]
    base = recipe_from_args(args, base)
    if names:
        base = dc.replace(base, backbone=names[0])
    space = load_space(args.space, space) if args.space else space
    if len(names) > 1:
        space = dc.replace(space, backbone=tuple(names))
    settings.update({k: getattr(args, k) for k in settings if getattr(args, k) is not None})
    result = tune(base, args.out, space=space, resume=args.resume, seed=base.seed,
                  process_per_trial=not args.in_process, **settings)
    if not result.rows:  # a distributed worker: the chief writes the report
        print(f"tuner {os.environ.get('KERASTUNER_TUNER_ID', '')}: done")
        return
    for row in result.rows[:5]:
        print(f"#{row['rank']} trial {row['trial']} ({row['status']}): {row['objective']}")
    if result.best_recipe is None:
        from transferkit.core.errors import TransferkitError

        raise TransferkitError(f"No trial finished: see {args.out}/results.csv and the "
                               "trial.json files under it for their errors.")
    print(f"results: {os.path.join(args.out, 'results.html')}\n"
          f"retrain the best: transferkit train --from-tuning {args.out} --out RUN_DIR")


# --- demo ----------------------------------------------------------------------------

EPILOG_DEMO = """Transfer from the checkpoint shipped in data/ versus the same network trained
from scratch, on the sample set in data/sample; offline, a few minutes on a CPU.

examples:
  transferkit demo                       # writes runs/demo/report.html
  transferkit demo --seed 3 --out runs/demo3
  transferkit demo --fast                # a quick smoke run (tests use it)
"""


def _add_demo(sub):
    p = _command(sub, "demo", "Show transfer learning beating training from scratch, "
                 "offline, on the shipped sample data.", EPILOG_DEMO)
    p.add_argument("--fast", action="store_true",
                   help="2 + 2 epochs instead of 6 + 6 (tens of seconds)")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="split and init seed (default: 0)")
    p.set_defaults(func=_run_demo)


def _run_demo(args):
    from transferkit.cli.demo import run_demo

    run_demo(args.out, fast=args.fast, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
