"""`transferkit recipes`: the recipe book; and the command line of the `recipes/` scripts.

    transferkit recipes                       # every recipe, one line each
    transferkit recipes efficientnet_lite0    # its settings, each with its source
    python recipes/efficientnet_b0.py --data ~/photos   # = train --recipe efficientnet_b0

The recipes themselves are data in `training.recipe_book`, shipped in the wheel. A
recipe script is `run_recipe(NAME)`: the recipe's settings become the defaults of the
same flags `transferkit train` has (`add_recipe_flags`), so `--weights PATH
--finetune-lr 3e-5` overrides a recipe's value without editing it.
"""

import argparse
import json
import sys

from transferkit.cli.common import command
from transferkit.cli.quiet import quiet_tensorflow
from transferkit.cli.train import add_recipe_flags, print_result, recipe_from_args
from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.training.recipe_book import RECIPES, get_recipe

EPILOG = """examples:
  transferkit recipes
  transferkit recipes efficientnet_lite0
  transferkit train --recipe efficientnet_lite0 --data ~/photos --out runs/lite0
"""


def register(sub):
    p = command(sub, "recipes", "List the recipe book: per-backbone settings from their "
                "papers and guides, each with its source.", EPILOG)
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="show this recipe's settings and sources (default: list all)")
    p.set_defaults(func=run, tensorflow=False)  # the book is data: listed at once


def run(args):
    if args.name:
        recipe = get_recipe(args.name)
        print(f"{recipe.name}: {recipe.summary}")
        width = max(len(k) for k, _, _ in recipe.settings)
        for key, value, source in recipe.settings:
            print(f"  {key:<{width}} = {value!r:<16} {source}".rstrip())
        print(f"\ntrain with it: transferkit train --recipe {recipe.name} --data DIR "
              "--out RUN (flags override)")
        return 0
    width = max(map(len, RECIPES))
    for name in sorted(RECIPES):
        print(f"{name:<{width}}  {RECIPES[name].summary}")
    return 0


def recipe_parser(name, prog=None):
    """The argparse parser of recipe script `name`, its settings shown in the epilog."""
    recipe = get_recipe(name)
    shown = "\n".join(f"  {k} = {v!r}" for k, v in recipe.values().items())
    parser = argparse.ArgumentParser(
        prog=prog, description=recipe.summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"this recipe's settings (any flag below overrides them; sources: "
        f"`transferkit recipes {name}`):\n{shown}\n\n"
        f"examples:\n  python recipes/{name}.py --data ~/photos --out runs/{name}\n"
        f"  python recipes/{name}.py --data data/sample --weights /path/to/model.keras\n"
        f"  python recipes/{name}.py --data ~/photos --print-config\n")
    parser.add_argument("--data", help="folder of class subfolders, a CSV file of "
                        "`path,label` rows, or tfds:NAME (required to train)")
    parser.add_argument("--out", default=f"runs/{name}",
                        help=f"run directory to write (default: runs/{name})")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved recipe as JSON and exit without training")
    parser.add_argument("--trusted", action="store_true",
                        help="a .keras file given as --weights may run code when loaded")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (`transferkit train "
                        "--resume` continues one)")
    add_recipe_flags(parser, skip=("data",))
    return parser


def resolve_recipe(name, argv, prog=None):
    """(RecipeConfig, parsed args): recipe `name` with the flags in `argv` on top."""
    args = recipe_parser(name, prog).parse_args(argv)
    return recipe_from_args(args, get_recipe(name).config()), args


def run_recipe(name, argv=None, prog=None):
    """Parse `argv` over recipe `name`, run the two-phase schedule; returns an exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or f"recipes/{name}.py"
    try:
        recipe, args = resolve_recipe(name, argv, prog)
        if args.print_config:
            print(json.dumps(recipe.to_dict(), indent=2))
            return 0
        if not recipe.data.train:
            raise ConfigError("The `--data` argument is required: a folder of class "
                              "subfolders, a CSV file, or tfds:NAME. Received: no --data")
        quiet_tensorflow()
        from transferkit.app.train import train

        result = train(recipe, args.out, safe_mode=not args.trusted,
                       overwrite=args.overwrite)
    except TransferkitError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print_result(result, recipe.task)
    return 0
