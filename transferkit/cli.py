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
"""


def main(argv=None):
    """Entry point of the `transferkit` console command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from transferkit.errors import TransferkitError

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
    for add in (_add_backbones, _add_train):
        add(sub)
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
    from transferkit.backbones import create_backbone, get_spec, list_backbones

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
    from transferkit.recipe import RecipeConfig

    p = _command(sub, "train", "Train a model with the two-phase recipe and write a run "
                 "directory.", EPILOG_TRAIN)
    p.add_argument("--recipe", help="JSON file of recipe keys (flags override it)")
    p.add_argument("--out", required=True, help="run directory to write")
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


def recipe_from_args(args):
    """The RecipeConfig given by `--recipe` and the recipe flags of `args`."""
    from transferkit.recipe import FIELDS, RecipeConfig, load_recipe, recipe_from_dict

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
    from transferkit.run import train

    recipe = recipe_from_args(args)
    if not recipe.data:
        from transferkit.errors import ConfigError

        raise ConfigError("The `--data` argument is required: a folder of class "
                          "subfolders, a CSV file, or tfds:NAME.")
    result = train(recipe, args.out)
    print(f"run directory: {result.out_dir}")
    for split, metrics in result.metrics.items():
        print(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    sys.exit(main())
