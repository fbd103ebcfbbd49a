"""keras-tuner sweeps over the whole two-phase recipe: `tune`, its tuners and settings.

`TransferHyperModel` (`tuning.hypermodel`) makes one trial the whole two-phase recipe
and reports the validation metrics at the end of the last phase that ran. RandomSearch, BayesianOptimization and Hyperband are keras-tuner's own;
resuming and chief/worker distribution are keras-tuner's own state and environment.
Each trial trains in a fresh process by default (`tuning.process`), so memory stays
flat over long sweeps.

    space = SearchSpace(backbone=("mobilenet_v2", "efficientnet_b0"))
    result = tune(RecipeConfig.from_keys(data="data/pets"), "sweeps/pets", space=space,
                  max_trials=20)
    tk.train(result.best_recipe, "runs/pets-best")

Out directory: search/ (keras-tuner's project: oracle.json, trial_*/), features/ (the
feature cache), base_recipe.json, space.json, search.json, and after the search the
report of `tuning.report`: results.csv, results.html, objective.png, best_recipe.json.
"""

import dataclasses
import os

import keras_tuner
from keras_tuner.engine.metrics_tracking import infer_metric_direction

from transferkit.app.lr_find import find_lr_for_recipe
from transferkit.app.train import with_rates
from transferkit.core.errors import ConfigError, check_choice
from transferkit.core.files import read_json_object, write_json
from transferkit.core.rundir import lr_find_name
from transferkit.core.task_registry import DEFAULT_TASK, get_task
from transferkit.training.cache import FeatureStore
from transferkit.training.config import PHASES
from transferkit.training.recipe import recipe_from_dict
from transferkit.tuning.config import (BASE_RECIPE_FILE, FEATURES_DIR, SEARCH_FILE,
                                       SPACE_FILE, TuneConfig)
from transferkit.tuning.hypermodel import TransferHyperModel
from transferkit.tuning.process import IsolatedTrials
from transferkit.tuning.report import write_report
from transferkit.tuning.space import Range, SearchSpace, space_from_dict

# Keyed by `tuning.config.TUNERS`, the names TuneConfig accepts (a test keeps them equal).
TUNERS = {"random": keras_tuner.RandomSearch,
          "bayesian": keras_tuner.BayesianOptimization,
          "hyperband": keras_tuner.Hyperband}
PROJECT = "search"  # keras-tuner's project folder inside the out directory
# --head-lr-auto / --finetune-lr-auto: the rate's search spans a decade either side of
# the range test's suggestion, the width of the default rate ranges (2 decades).
LR_SPREAD = 10.0


def make_objective(objective, task=DEFAULT_TASK):
    """A keras-tuner Objective: by default the task's headline metric on validation
    ("val_accuracy"; "val_miou" for segmentation; "val_loss" for regression), or
    "name:min" / "name:max" for a metric whose direction keras-tuner cannot infer."""
    task = get_task(task)
    if not objective:  # the headline's direction is the task's, not keras-tuner's guess
        objective = f"val_{task.headline}:max" if task.higher_is_better else "val_loss"
    name, _, direction = objective.partition(":")
    if direction:
        return keras_tuner.Objective(name, check_choice("objective direction", direction,
                                                        ("min", "max")))
    direction = infer_metric_direction(name)
    if direction is None:
        raise ConfigError(f"Cannot tell whether to minimise or maximise objective={name!r}"
                          f": write it as '{name}:min' or '{name}:max'.")
    return keras_tuner.Objective(name, direction)


def make_tuner(kind, hypermodel, *, objective, max_trials, directory, seed=0,
               max_epochs=None, overwrite=False, process_per_trial=False):
    """keras-tuner's RandomSearch ("random"), BayesianOptimization ("bayesian") or
    Hyperband ("hyperband": `max_epochs` is the longest trial, both phases together,
    and it decides the number of trials itself).

    process_per_trial: run each trial in a fresh process (`tuning.process`) so memory
        cannot grow across trials (default False here; `tune` turns it on).
    """
    cls = TUNERS[check_choice("tuner", kind, TUNERS)]
    if process_per_trial:
        cls = type(f"Isolated{cls.__name__}", (IsolatedTrials, cls), {})
    budget = {"max_epochs": max_epochs} if kind == "hyperband" else {"max_trials": max_trials}
    try:
        return cls(hypermodel, objective=objective, directory=directory,
                   project_name=PROJECT, overwrite=overwrite, seed=seed, **budget)
    except ImportError as error:  # BayesianOptimization needs scikit-learn
        raise ConfigError(f"tuner={kind!r} cannot start: {error}") from None


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What `tune` leaves behind (on a distributed worker only `out_dir` and `tuner`)."""

    out_dir: str
    tuner: object
    best_recipe: object = None
    rows: tuple = ()


def tune(base, out_dir, *, space=SearchSpace(), tuner=TuneConfig.tuner,
         max_trials=TuneConfig.max_trials, objective=None, resume=False, seed=0, verbose=1,
         callbacks=(), process_per_trial=True):
    """Search `space` around recipe `base`; write the report into `out_dir`.

    tuner, max_trials, objective: as `TuneConfig` (random search, 10 trials, the task's
        headline metric on validation; None or "" for that).

    With `head_lr_auto` / `finetune_lr_auto` set on `base`, the range test runs once first and
    that rate's dimension is centred on its suggestion (see `centre_rates`).

    process_per_trial: each trial in a fresh process (default True), because Keras and
        TensorFlow keep tens of MiB per trial even after clear_session; False trains
        in this process (faster for tiny trials; `callbacks` only run then).

    resume: continue the search in `out_dir` from keras-tuner's own state (finished
        trials are kept, a trial cut off midway runs again); without it an existing
        search there is refused rather than silently continued.
    With KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set, this
    process is the chief ("chief") or a worker of a distributed search; only the chief
    writes the settings and the report.
    """
    worker = _is_distributed_worker()
    started = os.path.exists(os.path.join(out_dir, PROJECT, "oracle.json"))
    if not worker and started and not resume:
        raise ConfigError(f"{out_dir} already holds a search. Pass resume=True "
                          "(`--resume`) to continue it, or choose another out directory.")
    if not worker and resume and not started:
        raise ConfigError(f"Nothing to resume: no search in {out_dir} "
                          f"({os.path.join(out_dir, PROJECT, 'oracle.json')} is missing).")
    if not base.data.train:
        raise ConfigError("The `data` recipe setting is required to tune (`--data`).")
    base.input_spec()  # the backbone, its arguments and the size: before any file
    store = FeatureStore(os.path.join(out_dir, FEATURES_DIR)) if base.runtime.cache_features \
        else None
    if worker:  # the chief's oracle hands out the rates; no range test here
        base = recipe_from_dict({"head_lr_auto": False, "finetune_lr_auto": False}, base)
    else:
        base, space = centre_rates(base, space, out_dir, store=store, resume=resume,
                                   verbose=verbose)
    objective = objective or None  # "" (TuneConfig's): the task's headline
    settings = {"tuner": tuner, "max_trials": max_trials, "objective": objective,
                "seed": seed}
    if not worker:
        write_json(os.path.join(out_dir, BASE_RECIPE_FILE), base.to_dict())
        write_json(os.path.join(out_dir, SPACE_FILE), space.to_dict())
        write_json(os.path.join(out_dir, SEARCH_FILE), settings)
    hypermodel = TransferHyperModel(base, space, store=store, verbose=verbose)
    max_epochs = (space.max_value("head_epochs", base)
                  + space.max_value("finetune_epochs", base))
    search = make_tuner(tuner, hypermodel, objective=make_objective(objective, base.task),
                        max_trials=max_trials, directory=out_dir, seed=seed,
                        max_epochs=int(max_epochs), process_per_trial=process_per_trial)
    search.search(callbacks=list(callbacks), verbose=verbose)
    if worker:
        return TuneResult(out_dir, search)
    rows, best = write_report(search, base, out_dir)
    return TuneResult(out_dir, search, best, tuple(rows))


def centre_rates(base, space, out_dir, *, store=None, resume=False, verbose=1):
    """Centre the search of each rate whose `<phase>_lr_auto` is set on `base` on the
    learning-rate range test's suggestion s: log-uniform over [s / 10, 10 s] (LR_SPREAD).
    Returns (base with that rate = s and auto off, space).

    The test runs once, before the search, on `base` (`app.find_lr_for_recipe`; for
    phase 2 after phase 1 at the head rate, s when it was found too), and is recorded
    in `out_dir` as lr_find_<phase>.json / .png (`core.rundir.lr_find_name`); a resumed
    search reuses that record.
    Each trial then searches the rate in the centred range instead of running its own
    test, which would replace the rate the search chose. store: the FeatureStore the
    trials share (None: the default store).
    """
    for phase in PHASES:
        if not base.schedule.phase(phase).lr_auto:
            continue
        name = lr_find_name(phase)
        record = os.path.join(out_dir, f"{name}.json")
        if resume and os.path.exists(record):
            suggestion = float(read_json_object(record, "range test record")["suggestion"])
        else:
            probe = recipe_from_dict({"head_lr_auto": False, "finetune_lr_auto": False},
                                    base)
            suggestion = find_lr_for_recipe(probe, out_dir, phase=phase, store=store,
                                            name=name, verbose=0).suggestion
        rates = Range(suggestion / LR_SPREAD, suggestion * LR_SPREAD, log=True)
        base = with_rates(base, {phase: suggestion})
        space = dataclasses.replace(space, **{f"{phase}_lr": rates})
        if verbose:
            print(f"{phase}_lr: the range test suggests {suggestion:.2g}; each trial "
                  f"searches it log-uniform over [{rates.min:.2g}, {rates.max:.2g}] "
                  f"(see {os.path.join(out_dir, name + '.png')})")
    return base, space


def load_search(out_dir):
    """(base RecipeConfig, SearchSpace, settings dict) of the search in `out_dir`."""
    paths = {name: os.path.join(out_dir, file) for name, file in (
        ("base_recipe", BASE_RECIPE_FILE), ("space", SPACE_FILE), ("search", SEARCH_FILE))}
    for path in paths.values():
        if not os.path.exists(path):
            raise ConfigError(f"{out_dir} is not a transferkit tuning directory: "
                              f"{path} is missing.")
    loaded = {name: read_json_object(path, f"tuning {name} file")
              for name, path in paths.items()}
    return (recipe_from_dict(loaded["base_recipe"]), space_from_dict(loaded["space"]),
            loaded["search"])


def _is_distributed_worker():
    # keras-tuner's documented environment: the chief's id contains "chief".
    return ("KERASTUNER_ORACLE_IP" in os.environ
            and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", ""))

