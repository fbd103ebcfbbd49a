"""`find_lr_for_recipe`: the learning-rate range test of one phase of a recipe, as
`transferkit lr-find` and the tuner run it (a run's own `lr_auto` phases use the
`AutoLR` hook instead, inside its one `fine_tune` call)."""

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.rundir import lr_find_name
from transferkit.training.recipe import build_run_model, load_run_data
from transferkit.training.cache import FeatureStore
from transferkit.training.config import LRFindConfig
from transferkit.training.lr_find import find_lr
from transferkit.training.orchestrator import fine_tune


@renamed(**TRUSTED)
def find_lr_for_recipe(recipe, out_dir, *, settings=LRFindConfig(), safe_mode=True,
                       store=None, name=None, verbose="auto", **keys):
    """The range test of `recipe`'s phase `settings.phase` (an `LRFindConfig`, default
    phase 2's), written to `out_dir` (`<name>.json`, `<name>.png`, name `lr_find` by
    default); returns the `LRFinding`. For "finetune", phase 1 runs first (on cached
    features when the recipe caches them: seconds), as the rate is phase 2's from there.
    safe_mode: as for `train`. store: the FeatureStore of the feature cache (default:
    `FeatureStore.default()`). keys: LRFindConfig fields to set (phase=, min_lr=, ...).
    """
    settings = LRFindConfig(**{**vars(settings), **keys})
    data = load_run_data(recipe, verbose=bool(verbose))
    model = build_run_model(recipe, data.num_classes, safe_mode=safe_mode)
    schedule = recipe.schedule
    cache = recipe.feature_cache(store or FeatureStore.default())
    if settings.phase == "finetune" and schedule.head.epochs:
        fine_tune(model, data, config=schedule, task=recipe.task, cache=cache,
                  stop_epoch=schedule.head.epochs, verbose=verbose)
    finding = find_lr(model, data, config=schedule, task=recipe.task, cache=cache,
                      **vars(settings), verbose=verbose)
    finding.save(out_dir, name or lr_find_name())
    return finding
