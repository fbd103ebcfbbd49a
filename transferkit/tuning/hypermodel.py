"""`TransferHyperModel`: one keras-tuner trial is the whole two-phase recipe.

keras-tuner cannot say "train the head, then unfreeze and fine-tune at a low rate"
inside one trial (keras-tuner #629, #219, #1043). Here `build(hp)` builds the model a
trial's recipe describes and `fit(hp, model, ...)` runs the same orchestrator every
other entry point runs (`training.orchestrator.fine_tune`): phase 1 on cached backbone
features, shared across trials with the same backbone and input size, then phase 2.
"""

import keras
import keras_tuner

from transferkit.training.recipe import build_run_model, load_run_data
from transferkit.core.errors import ConfigError
from transferkit.training.cache import FeatureStore
from transferkit.training.orchestrator import Position, fine_tune
from transferkit.tuning.space import SearchSpace, declare, resolve


class TransferHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial of the two-phase recipe.

    base: the RecipeConfig every trial starts from (data, task, weights, ...).
    space: the `SearchSpace` (default: head, dropout, learning rates, unfreeze depth).
    store: a `training.cache.FeatureStore` for phase-1 features (default: in memory,
        this process); `cache_features` false in `base` turns caching off.
    """

    def __init__(self, base, space=SearchSpace(), *, store=None, verbose=0):
        super().__init__(name="transferkit")
        self.base, self.space, self.verbose = base, space, verbose
        self.store = store if store is not None else FeatureStore()
        self._data = {}  # loaded splits by (input, augment): trials share them

    def recipe(self, hp):
        """The RecipeConfig of the trial whose hyperparameters are `hp`."""
        return resolve(declare(hp, self.space), self.base)

    def data(self, recipe):
        """The `DataSplits` of `recipe`, loaded once per (input size, augmentation)."""
        key = (recipe.input_spec(), recipe.data.augment)
        if key not in self._data:
            self._data[key] = load_run_data(recipe, verbose=False)
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
        """Both phases of the trial's recipe; returns {"val_<metric>": value} of the
        model at the end (keras-tuner's objective reads it).

        epochs, initial_epoch: set by Hyperband. They are positions on the trial's
        epoch timeline: phase 1 holds epochs [0, head_epochs), phase 2 the rest, so a
        continued trial resumes in the right phase.
        """
        if args or kwargs:
            raise ConfigError("TransferHyperModel reads its data from the recipe: call "
                              "search() without data arguments. Received: "
                              f"{len(args)} positional, {sorted(kwargs)}")
        recipe, verbose = self.recipe(hp), self.verbose if verbose is None else verbose
        data = self.data(recipe)
        if data.val is None:
            raise ConfigError("Tuning needs validation data: set `val_split` > 0 or "
                              f"`val_data`. Received: val_split={recipe.data.val_split}")
        # A fixed timeline (see above): phases keep their epoch counts on cached tensors.
        schedule = recipe.schedule.fixed()
        # keras-tuner's checkpoint callback would save the head alone during cached
        # phase 1; the trial's checkpoint is written once, from the final model, below.
        checkpoints = [c for c in callbacks if _is_trial_checkpoint(c)]
        callbacks = [c for c in callbacks if not _is_trial_checkpoint(c)]
        result = fine_tune(model, data, config=schedule, task=recipe.task_config(),
                           cache=recipe.feature_cache(self.store),
                           start=timeline_position(schedule, initial_epoch),
                           stop_epoch=epochs, callbacks=callbacks, verbose=verbose)
        for checkpoint in checkpoints:
            model.save_weights(checkpoint.filepath)
        final = model.evaluate(data.val, verbose=0, return_dict=True)
        out = {f"val_{k}": float(v) for k, v in final.items()}
        task = recipe.task_config()
        if f"val_{task.headline}" not in out:  # scored, not a Keras metric (e.g. mAP)
            from transferkit.evaluation.evaluate import evaluate_splits

            report = evaluate_splits(model, data, task, ("val",))["val"]
            out[f"val_{task.headline}"] = float(report[task.headline])
        if result.history:
            out["loss"] = float(result.history[-1].get("loss", out["val_loss"]))
        return out


def timeline_position(schedule, initial_epoch=0):
    """The `Position` of epoch `initial_epoch` on a trial's fixed timeline, where phase 1
    is [0, head epochs) and phase 2 follows."""
    first, _ = schedule.span("finetune")
    if initial_epoch < first:
        return Position("head", 0, initial_epoch)
    return Position("finetune", first, initial_epoch)


def _is_trial_checkpoint(callback):
    # keras-tuner's checkpoint callback (SaveBestEpoch) has no public name; recognising it
    # by name, not by importing its private module, survives keras-tuner moving it.
    return type(callback).__name__ == "SaveBestEpoch" and hasattr(callback, "filepath")
