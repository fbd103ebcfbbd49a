"""`transferkit lr-find`: the learning-rate range test of one phase of a recipe."""

from transferkit.cli.common import command
from transferkit.cli.flags import add_config_flags, config_from_args
from transferkit.cli.train import add_recipe_flags, recipe_from_args
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import lr_find_name, lr_find_plot
from transferkit.training.config import LRFindConfig

EPILOG = """examples:
  transferkit lr-find --data data/sample --phase head --out runs/lr
  transferkit lr-find --recipe my_recipe.json --phase finetune --out runs/lr
      (phase 1 runs first, on cached features; then the test runs on the boundary cache)
  then: transferkit train ... --finetune-lr <the suggested rate>
"""


def register(sub):
    p = command(sub, "lr-find", "Run the learning-rate range test for one phase of a "
                "recipe: suggest a rate, and plot loss against rate.", EPILOG)
    p.add_argument("--recipe", help="a recipe name (`transferkit recipes`) or a JSON "
                   "recipe file (flags override it)")
    p.add_argument("--out", required=True,
                   help=f"directory to write {lr_find_name()}.json and .png")
    add_config_flags(p, LRFindConfig, title="the range test (LRFindConfig)")
    p.add_argument("--trusted", action="store_true",
                   help="a .keras file given as --weights may run code when loaded")
    add_recipe_flags(p)
    p.set_defaults(func=run)


def run(args):
    settings = config_from_args(LRFindConfig, args)  # checked before any work
    recipe = recipe_from_args(args)
    if not recipe.data.train:
        raise ConfigError("The `--data` argument is required: a folder of class "
                          "subfolders, a CSV file, or tfds:NAME.")
    from transferkit.app.lr_find import find_lr_for_recipe

    finding = find_lr_for_recipe(recipe, args.out, settings=settings,
                                 safe_mode=not args.trusted, verbose=0)
    print(finding.reason)
    print(f"plot: {lr_find_plot(args.out)}")
