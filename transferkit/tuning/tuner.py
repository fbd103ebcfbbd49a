"""keras-tuner sweeps over the whole two-phase recipe.

keras-tuner cannot say "train the head, then unfreeze and fine-tune at a low rate"
inside one trial (keras-tuner #629, #219, #1043). `TransferHyperModel` can: `build(hp)`
builds the model a trial's recipe describes, and `fit` runs phase 1 (on cached backbone
features wherever that is valid, shared across trials with the same backbone and input
size) and then phase 2, and reports the validation metrics at the end of the last phase
that ran. RandomSearch, BayesianOptimization and Hyperband are keras-tuner's own;
resuming and chief/worker distribution are keras-tuner's own state and environment.
Each trial trains in a fresh process by default (`tuning_process`), so memory stays
flat over long sweeps.

    space = SearchSpace(backbone=("mobilenet_v2", "efficientnet_b0"))
    result = tune(RecipeConfig(data="data/pets"), "sweeps/pets", space=space,
                  max_trials=20)
    run.train(result.best_recipe, "runs/pets-best")

Out directory: search/ (keras-tuner's project: oracle.json, trial_*/), features/ (the
feature cache), base_recipe.json, space.json, search.json, and after the search the
report of `tuning_report`: results.csv, results.html, objective.png, best_recipe.json.
"""

import dataclasses
import json
import os

import keras
import keras_tuner
from keras_tuner.engine.metrics_tracking import infer_metric_direction
# keras-tuner's checkpoint callback has no public name; it is recognised to set it aside.
from keras_tuner.src.engine.tuner_utils import SaveBestEpoch as _SaveBestEpoch

from transferkit.models.backbones import get_spec
from transferkit.training.cache import FeatureStore
from transferkit.core.errors import ConfigError, check_choice
from transferkit.training.recipe import recipe_from_dict
from transferkit.training.run import build_run_model, cached_head_phase, load_run_data
from transferkit.models.saving import write_json
from transferkit.training.schedule import compile_for_phase, train_phase
from transferkit.tuning.process import IsolatedTrials
from transferkit.tuning.report import write_report
from transferkit.tuning.space import SearchSpace, declare, resolve, space_from_dict

TUNERS = {"random": keras_tuner.RandomSearch,
          "bayesian": keras_tuner.BayesianOptimization,
          "hyperband": keras_tuner.Hyperband}
PROJECT = "search"  # keras-tuner's project folder inside the out directory


class TransferHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial of the two-phase recipe.

    base: the RecipeConfig every trial starts from (data, task, weights, ...).
    space: the `SearchSpace` (default: head, dropout, learning rates, unfreeze depth).
    store: a `cache.FeatureStore` for phase-1 features (default: in memory, this
        process); None with `base.cache_features` False turns caching off.
    """

    def __init__(self, base, space=SearchSpace(), *, store=None, verbose=0):
        super().__init__(name="transferkit")
        self.base, self.space, self.verbose = base, space, verbose
        self.store = store if store is not None else FeatureStore()
        self._data = {}  # loaded splits by (image size, augment): trials share them

    def recipe(self, hp):
        """The RecipeConfig of the trial whose hyperparameters are `hp`."""
        return resolve(declare(hp, self.space), self.base)

    def data(self, recipe):
        """The `DataSplits` of `recipe`, loaded once per (image size, augmentation)."""
        size = recipe.image_size or get_spec(recipe.backbone).default_size
        key = (size, recipe.augment)
        if key not in self._data:
            self._data[key] = load_run_data(recipe, image_size=size, verbose=False)
        return self._data[key]

    def build(self, hp):
        recipe = self.recipe(hp)
        data = self.data(recipe)
        # The same seed gives trials on one backbone the same initial weights, so with
        # weights=none their frozen features (and cache keys) match too.
        keras.utils.set_random_seed(recipe.seed)
        return build_run_model(recipe, data.num_classes)

    def fit(self, hp, model, *args, callbacks=(), epochs=None, initial_epoch=0,
            verbose=None, **kwargs):
        """Phase 1 then phase 2 on the trial's recipe; returns {"val_<metric>": value}
        of the model at the end (keras-tuner's objective reads it).

        epochs, initial_epoch: set by Hyperband. They are positions on the trial's
        epoch timeline: phase 1 holds epochs [0, head_epochs), phase 2 the rest, so
        a continued trial resumes in the right phase.
        """
        if args or kwargs:
            raise ConfigError("TransferHyperModel reads its data from the recipe: call "
                              "search() without data arguments. Received: "
                              f"{len(args)} positional, {sorted(kwargs)}")
        recipe, verbose = self.recipe(hp), self.verbose if verbose is None else verbose
        data = self.data(recipe)
        if data.val is None:
            raise ConfigError("Tuning needs validation data: set `val_split` > 0 or "
                              f"`val_data`. Received: val_split={recipe.val_split}")
        schedule = recipe.schedule_config()
        head_epochs, finetune_epochs = phase_epochs(recipe, epochs, initial_epoch)
        # keras-tuner's checkpoint callback would save the head alone during cached
        # phase 1; the trial's checkpoint is written once, from the final model, below.
        checkpoints = [c for c in callbacks if isinstance(c, _SaveBestEpoch)]
        callbacks = [c for c in callbacks if not isinstance(c, _SaveBestEpoch)]
        records = []
        if head_epochs:
            schedule = dataclasses.replace(schedule, head=dataclasses.replace(
                schedule.head, epochs=head_epochs))
            records += self._phase1(model, data, recipe, schedule, callbacks, verbose,
                                    initial_epoch)
        if finetune_epochs:
            phase = dataclasses.replace(schedule.finetune, epochs=finetune_epochs)
            compile_for_phase(model, phase, schedule, train=data.train)
            records += train_phase(model, data.train, data.val, phase, name="finetune",
                                   initial_epoch=initial_epoch + len(records),
                                   monitor=schedule.monitor, callbacks=callbacks,
                                   class_weight=data.class_weight, verbose=verbose)
        if not finetune_epochs:  # a head-only trial: cached phase 1 compiled the head alone
            compile_for_phase(model, schedule.head, schedule, train=data.train)
        for checkpoint in checkpoints:
            model.save_weights(checkpoint.filepath)
        final = model.evaluate(data.val, verbose=0, return_dict=True)
        result = {f"val_{k}": float(v) for k, v in final.items()}
        if records:
            result["loss"] = float(records[-1].get("loss", result["val_loss"]))
        return result

    def _phase1(self, model, data, recipe, schedule, callbacks, verbose, initial_epoch):
        if recipe.cache_features and not initial_epoch:
            # run.train's own phase 1, so a trial's phase 1 is the retrained run's.
            return cached_head_phase(recipe, model, data, schedule, callbacks, verbose,
                                     store=self.store)
        compile_for_phase(model, schedule.head, schedule, train=data.train)
        return train_phase(model, data.train, data.val, schedule.head, name="head",
                           initial_epoch=initial_epoch, monitor=schedule.monitor,
                           callbacks=callbacks, class_weight=data.class_weight,
                           verbose=verbose)



def phase_epochs(recipe, epochs=None, initial_epoch=0):
    """(phase-1, phase-2) epochs to run for the span [initial_epoch, epochs) of a trial's
    timeline, where phase 1 is [0, head_epochs) and phase 2 follows (epochs default:
    both phases whole)."""
    end = recipe.head_epochs + recipe.finetune_epochs if epochs is None else epochs
    return (max(0, min(end, recipe.head_epochs) - initial_epoch),
            max(0, end - max(initial_epoch, recipe.head_epochs)))


def make_objective(objective, task="multiclass"):
    """A keras-tuner Objective: "val_accuracy" (default; "val_loss" for regression),
    or "name:min" / "name:max" for a metric whose direction keras-tuner cannot infer."""
    objective = objective or ("val_loss" if task == "regression" else "val_accuracy")
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

    process_per_trial: run each trial in a fresh process (`tuning_process`) so memory
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


def tune(base, out_dir, *, space=SearchSpace(), tuner="random", max_trials=10,
         objective=None, resume=False, seed=0, verbose=1, callbacks=(),
         process_per_trial=True):
    """Search `space` around recipe `base`; write the report into `out_dir`.

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
    if not base.data:
        raise ConfigError("The `data` recipe setting is required to tune (`--data`).")
    settings = {"tuner": tuner, "max_trials": max_trials, "objective": objective,
                "seed": seed}
    if not worker:
        write_json(os.path.join(out_dir, "base_recipe.json"), base.to_dict())
        write_json(os.path.join(out_dir, "space.json"), space.to_dict())
        write_json(os.path.join(out_dir, "search.json"), settings)
    store = FeatureStore(os.path.join(out_dir, "features")) if base.cache_features else None
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


def load_search(out_dir):
    """(base RecipeConfig, SearchSpace, settings dict) of the search in `out_dir`."""
    paths = {name: os.path.join(out_dir, f"{name}.json")
             for name in ("base_recipe", "space", "search")}
    for path in paths.values():
        if not os.path.exists(path):
            raise ConfigError(f"{out_dir} is not a transferkit tuning directory: "
                              f"{path} is missing.")
    loaded = {}
    for name, path in paths.items():
        with open(path) as f:
            loaded[name] = json.load(f)
    return (recipe_from_dict(loaded["base_recipe"]), space_from_dict(loaded["space"]),
            loaded["search"])


def best_recipe_path(out_dir):
    """The `best_recipe.json` of a finished search in `out_dir` (ConfigError if none)."""
    path = os.path.join(out_dir, "best_recipe.json")
    if not os.path.exists(path):
        raise ConfigError(f"No best_recipe.json in {out_dir}: is it the out directory "
                          "of a finished `transferkit tune`?")
    return path


def _is_distributed_worker():
    # keras-tuner's documented environment: the chief's id contains "chief".
    return ("KERASTUNER_ORACLE_IP" in os.environ
            and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", ""))

