"""`transferkit lr-find`: the learning-rate range test of one phase of a recipe."""

import os

from transferkit.app.lr_find import find_lr_for_recipe
from transferkit.cli.common import command
from transferkit.cli.train import add_recipe_flags, recipe_from_args
from transferkit.core.errors import ConfigError
from transferkit.training.lr_find import check_range
from transferkit.training.schedule import PHASES

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
    p.add_argument("--phase", choices=PHASES, default="finetune",
                   help="the phase whose rate to find (default finetune)")
    p.add_argument("--out", required=True,
                   help="directory to write lr_find.json and lr_find.png")
    p.add_argument("--min-lr", type=float, default=1e-7, help="default 1e-7")
    p.add_argument("--max-lr", type=float, default=1.0, help="default 1")
    p.add_argument("--steps", type=int, default=100,
                   help="at most this many steps (default 100; fewer once it diverges)")
    p.add_argument("--trusted", action="store_true",
                   help="a .keras file given as --weights may run code when loaded")
    add_recipe_flags(p)
    p.set_defaults(func=run)


def run(args):
    check_range(args.phase, args.min_lr, args.max_lr, args.steps)  # before any work
    recipe = recipe_from_args(args)
    if not recipe.data.train:
        raise ConfigError("The `--data` argument is required: a folder of class "
                          "subfolders, a CSV file, or tfds:NAME.")
    finding = find_lr_for_recipe(recipe, args.out, phase=args.phase, min_lr=args.min_lr,
                                 max_lr=args.max_lr, steps=args.steps, trusted=args.trusted,
                                 verbose=0)
    print(finding.reason)
    print(f"plot: {os.path.join(args.out, 'lr_find.png')}")
