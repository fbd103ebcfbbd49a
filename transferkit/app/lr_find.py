"""`find_lr_for_recipe`: the learning-rate range test of one phase of a recipe, as
`transferkit lr-find` and the tuner run it (a run's own `lr_auto` phases use the
`AutoLR` hook instead, inside its one `fine_tune` call)."""

from transferkit.training.recipe import build_run_model, load_run_data
from transferkit.training.cache import FeatureStore
from transferkit.training.lr_find import find_lr
from transferkit.training.orchestrator import fine_tune


def find_lr_for_recipe(recipe, out_dir, *, phase="finetune", min_lr=1e-7, max_lr=1.0,
                       steps=100, trusted=False, store=None, name="lr_find",
                       verbose="auto"):
    """The range test of `recipe`'s `phase`, written to `out_dir` (`<name>.json`,
    `<name>.png`, name "lr_find" by default); returns the `LRFinding`. For "finetune",
    phase 1 runs first (on cached features when the recipe caches them: seconds), as the
    rate is phase 2's from there. trusted: as for `train`. store: the FeatureStore of
    the feature cache (default: `FeatureStore.default()`)."""
    data = load_run_data(recipe, verbose=bool(verbose))
    model = build_run_model(recipe, data.num_classes, trusted=trusted)
    schedule = recipe.schedule
    cache = recipe.feature_cache(store or FeatureStore.default())
    if phase == "finetune" and schedule.head.epochs:
        fine_tune(model, data, config=schedule, task=recipe.task, cache=cache,
                  stop_epoch=schedule.head.epochs, verbose=verbose)
    finding = find_lr(model, data, phase=phase, config=schedule, task=recipe.task,
                      cache=cache, min_lr=min_lr, max_lr=max_lr, steps=steps,
                      verbose=verbose)
    finding.save(out_dir, name)
    return finding
