"""`transferkit tune`: keras-tuner sweeps over the two-phase recipe."""

import dataclasses
import os

from transferkit.cli.common import command
from transferkit.cli.flags import add_config_flags, config_from_args
from transferkit.cli.train import add_recipe_flags, recipe_from_args
from transferkit.core.config import flatten
from transferkit.core.errors import TransferkitError
from transferkit.training.recipe import recipe_from_dict
from transferkit.tuning.config import RESULTS_CSV, RESULTS_HTML, SEARCH_FILE, TuneConfig

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

--head-lr-auto / --finetune-lr-auto: the learning-rate range test runs once before the
search and each trial searches that rate log-uniformly over [s/10, 10 s] around its
suggestion s (recorded in space.json; the plot in lr_find_<phase>.png).

Distributed: run the same command in every process, with KERASTUNER_TUNER_ID=chief on
one and tuner0, tuner1, ... on the others, and KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT set to the chief's address everywhere.
"""


def register(sub):
    p = command(sub, "tune", "Search hyperparameters of the whole two-phase recipe with "
                 "keras-tuner; write a results table and the best recipe.", EPILOG_TUNE)
    p.add_argument("--out", required=True, help="tuning directory to write")
    # None: not given, so a resumed search keeps its own settings.
    add_config_flags(p, TuneConfig, overlay=True, title="the search (TuneConfig)")
    p.add_argument("--space", metavar="FILE", help="JSON search space (see below)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out "
                   "with its saved settings (finished trials are kept)")
    p.add_argument("--in-process", action="store_true", help="train trials in this "
                   "process instead of one fresh process each (faster for tiny trials, "
                   "but memory grows by tens of MiB per trial)")
    p.add_argument("--recipe", help="a recipe name (`transferkit recipes`) or JSON recipe "
                   "file for the base recipe")
    add_recipe_flags(p, skip=("backbone",))
    p.add_argument("--backbone", help="backbone name, or comma-separated names to search "
                   "over (default: the recipe's)")
    p.set_defaults(func=run)


def run(args):
    # keras-tuner loads only when a search runs.
    from transferkit.tuning.space import SearchSpace, load_space
    from transferkit.tuning.tuner import load_search, tune

    settings = TuneConfig()
    base, space = None, SearchSpace()
    if args.resume and os.path.exists(os.path.join(args.out, SEARCH_FILE)):
        base, space, saved = load_search(args.out)
        settings = dataclasses.replace(settings, **{
            k: v for k, v in saved.items() if k in flatten(settings) and v is not None})
    settings = config_from_args(settings, args)  # flags given now win
    names = [n.strip() for n in (args.backbone or "").split(",") if n.strip()]
    base = recipe_from_args(args, base)
    if names:
        base = recipe_from_dict({"backbone": names[0]}, base)
    space = load_space(args.space, space) if args.space else space
    if len(names) > 1:
        space = dataclasses.replace(space, backbone=tuple(names))
    result = tune(base, args.out, space=space, resume=args.resume, seed=base.seed,
                  process_per_trial=not args.in_process, **flatten(settings))
    if not result.rows:  # a distributed worker: the chief writes the report
        print(f"tuner {os.environ.get('KERASTUNER_TUNER_ID', '')}: done")
        return
    for row in result.rows[:5]:
        print(f"#{row['rank']} trial {row['trial']} ({row['status']}): {row['objective']}")
    if result.best_recipe is None:
        raise TransferkitError(f"No trial finished: see {args.out}/{RESULTS_CSV} and the "
                               "trial.json files under it for their errors.")
    print(f"results: {os.path.join(args.out, RESULTS_HTML)}\n"
          f"retrain the best: transferkit train --from-tuning {args.out} --out RUN_DIR")


