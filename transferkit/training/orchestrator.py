"""The two-phase loop: the one place that trains. Every entry point calls `fine_tune`.

The Python API, `transferkit train`, `--resume`, the tuner's trials, the demo and the
benchmarks all run this loop, so they cannot drift apart. For each phase it

1. freezes the model per the phase's policy, *then* compiles it (a `trainable` change
   without a recompile is silently ignored by Keras; `RecompileGuard` checks it);
2. trains with Keras's own `fit`, with one of three runners: live (the full model on
   images); phase 1 on cached backbone features when a `FeatureCache` is given and the
   phase starts from its beginning; phase 2 on cached activations at the freeze
   boundary (`FeatureCache(boundary=True)`, see `training.boundary`): the top above the
   frozen bottom trains, sharing the full model's variables and optimizer;
3. tracks early stopping in a `PhaseStopper` whose state (best value, best epoch,
   patience, best weights) survives the several `fit` calls of a resumed phase and is
   what a checkpoint stores, so a resumed run ends with the same best weights as an
   uninterrupted one; at the phase's end the best weights are restored.

It can start anywhere (`Position`: phase, epoch, step and stopper state) and stop at
any epoch (`stop_epoch`, for a tuner's epoch budget). Epoch numbers run on across
phases, and each epoch's record says which phase it belongs to.
"""

import dataclasses
import math

import keras
import numpy as np

from transferkit.core.errors import ConfigError, check_choice
from transferkit.core.task_registry import get_task, task_for_model
from transferkit.core.timing import stage
from transferkit.data.pipeline import as_batches, make_dataset
from transferkit.data.splits import DataSplits
from transferkit.models.parts import resolve
from transferkit.training import cache as cache_lib
from transferkit.training.bn_stats import recompute_batchnorm, trained_batchnorm
from transferkit.training.boundary import find_cut, top_model
from transferkit.training.freezing import RecompileGuard, freeze, mark_compiled
from transferkit.training.schedule import PHASES, ScheduleConfig, compile_args, compile_phase

# On cached tensors an epoch takes milliseconds of compute, and Keras's per-call and
# per-iterator costs dominate: a cached phase trains from one iterator over the
# repeated data (phase 1 an epoch per call: steps per execution = steps per epoch) and
# validates on validation tensors held in memory (`CachedValidation`) up to this many
# bytes (above it, Keras's own validation pass).
CACHED_VAL_BYTES = 512 * 2**20
# How each phase is named among a run's stage timings (`core.timing`).
STAGES = {"head": "phase 1", "finetune": "phase 2"}


@dataclasses.dataclass(frozen=True)
class StopperState:
    """Early stopping of a phase in progress: the best monitored value, its epoch, the
    epochs waited since, and the weights of the best epoch (a list of arrays)."""

    best: object = None
    best_epoch: int = 0
    wait: int = 0
    weights: object = None


@dataclasses.dataclass(frozen=True)
class Position:
    """Where training (re)starts: `phase`, which began at global epoch `phase_start`,
    continues at global epoch `epoch` after `step` batches of it; `stopper` carries
    that phase's early-stopping state; `cached`: the phase began on cached tensors, so
    it keeps their sizing (`PhaseConfig.on_cache`). Default: the very beginning."""

    phase: str = "head"
    phase_start: int = 0
    epoch: int = 0
    step: int = 0
    stopper: StopperState = None
    cached: bool = False  # the phase began on cached tensors (its `on_cache` sizing)

    def __post_init__(self):
        check_choice("phase", self.phase, PHASES)
        if not 0 <= self.phase_start <= self.epoch or self.step < 0:
            raise ConfigError(f"A Position needs 0 <= phase_start <= epoch and step >= 0. "
                              f"Received: {self}")


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
    """What `fine_tune` returns: per-epoch records (each with its "phase") and the
    freeze audit of each phase that ran."""

    history: tuple
    audits: dict

    def metric(self, name, phase=None):
        """The values of metric `name` over epochs, optionally of one phase."""
        return [r[name] for r in self.history if name in r and phase in (None, r["phase"])]


@dataclasses.dataclass
class PhaseRun:
    """A phase while it runs, as `PhaseCallback`s see it (runtime state, not config).

    live: the full model trains (False: the head alone, on cached features, or the
        top on boundary activations).
    skipped: batches of the first epoch trained before a resume.
    history: every record of this `fine_tune` call so far (this phase's included).
    boundary: the top trains on boundary activations; the full model's variables and
        optimizer are the ones training, so checkpoints of the full model are exact.
    model: the model `fit` trains in this phase (the full model, the head or the top).
    clean_train: `clean_train(max_batches)` gives batches of the training split for
        `model` without online augmentation (file splits re-read in a fixed shuffled
        order; cached tensors as stored).
    """

    name: str
    config: object
    start: int
    end: int
    live: bool
    skipped: int
    stopper: object
    history: list
    boundary: bool = False
    model: object = None
    clean_train: object = None


class PhaseCallback(keras.callbacks.Callback):
    """A Keras callback that also hears when each phase begins (after the model is
    frozen and compiled for it) and when it ends (after its best weights are back), and
    may change a phase's settings before it starts (`before_phase`)."""

    def before_phase(self, name, phase, loop):
        """Called when phase `name` is about to train from its first epoch, before the
        model is frozen and compiled for it; returns the `PhaseConfig` to run (default:
        `phase` unchanged). Not called for a phase resumed mid-way, so what it decides
        must be recorded to survive a resume (the LR finder's `AutoLR` does).

        loop: the `fine_tune` call in progress: its `model`, `config` (the schedule),
            `task`, `parts`, `verbose`, and `runner(name, phase)`, which freezes and
            compiles the model for a phase as the loop itself will (returns the model
            to fit, train and val batches and the mode: "features", "boundary", "live")."""
        return phase

    def on_phase_begin(self, run):
        pass

    def on_phase_end(self, run):
        pass


class PreciseBatchNorm(PhaseCallback):
    """When a phase ends, recompute the moving statistics of the BatchNorm layers that
    trained in it over at most `max_batches` training batches (`training.bn_stats`).
    `fine_tune` runs it first among the phase hooks (so checkpoints and the saved model
    hold the new statistics) when `ScheduleConfig.batchnorm_stats_batches` > 0."""

    def __init__(self, max_batches, verbose=False):
        super().__init__()
        self.max_batches, self.verbose = max_batches, verbose

    def on_phase_end(self, run):
        layers = trained_batchnorm(run.model)
        if not layers or run.clean_train is None:
            return  # BN frozen (the transfer default): its statistics did not move
        with stage("batchnorm"):
            updated = recompute_batchnorm(run.model, run.clean_train(self.max_batches),
                                          layers, self.max_batches)
        if self.verbose:
            print(f"BatchNorm statistics of {updated} layer(s) recomputed over up to "
                  f"{self.max_batches} training batches (phase {run.name!r})")


class PhaseStopper(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping, with state that lasts across the fits of one phase.

    Keras resets its state at every `fit` and restores the best weights at the end of
    each; a resumed phase is several fits, so here the state is set once (fresh, or from
    a checkpoint's `StopperState`) and the best weights come back when the phase ends.
    """

    def __init__(self, monitor, patience, state=None):
        super().__init__(monitor=monitor, patience=patience, restore_best_weights=True)
        state = state or StopperState()
        self.best, self.best_epoch, self.wait = state.best, state.best_epoch, state.wait
        self.best_weights = None if state.weights is None else list(state.weights)

    def on_train_begin(self, logs=None):
        self.stopped_epoch = 0  # the rest of the state belongs to the phase, not the fit

    def on_train_end(self, logs=None):
        pass  # `restore_best` runs when the phase ends, not when one fit does

    def restore_best(self, model):
        if self.best_weights is not None:
            model.set_weights(self.best_weights)

    def state(self):
        return StopperState(None if self.best is None else float(self.best),
                            int(self.best_epoch), int(self.wait), self.best_weights)


class EpochRecorder(keras.callbacks.Callback):
    """Appends one record per epoch to `history`: epoch (1-based, global), phase,
    phase_epoch, learning_rate and the epoch's metrics."""

    def __init__(self, phase, phase_start, history):
        super().__init__()
        self.phase, self.phase_start, self.history = phase, phase_start, history

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        record = {"epoch": epoch + 1, "phase": self.phase,
                  "phase_epoch": epoch + 1 - self.phase_start,
                  "learning_rate": float(keras.ops.convert_to_numpy(lr))}
        record.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        self.history.append(record)


class CachedValidation(keras.callbacks.Callback):
    """A phase on cached tensors: each epoch's validation from the validation features
    (or boundary activations) held in memory, a few large calls, adding the `val_*`
    logs Keras's own `validation_data` pass would (the same compiled loss and metrics,
    accumulated over the same rows), without a new dataset iterator per epoch."""

    def __init__(self, chunks):
        super().__init__()
        self.chunks = chunks

    @classmethod
    def of(cls, val, rows=1024):
        """From a finite dataset of (x, y) batches of cached tensors, in chunks of about
        `rows` rows; None without a val split or above CACHED_VAL_BYTES (Keras
        validates then)."""
        if val is None:
            return None
        xs, ys, size = [], [], 0
        for x, y in val:
            size += x.shape[0] * math.prod(x.shape[1:]) * 4
            if size > CACHED_VAL_BYTES:
                return None
            xs.append(x)
            ys.append(y)
        if not xs:
            return None
        x, y = keras.ops.concatenate(xs), keras.ops.concatenate(ys)
        return cls([(x[i:i + rows], y[i:i + rows]) for i in range(0, len(x), rows)])

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        model.make_test_function()
        model.reset_metrics()  # the epoch's training metrics are in `logs` already
        for chunk in self.chunks:
            model.test_function([chunk])  # metrics accumulate over the chunks
        if logs is not None:
            logs.update({f"val_{k}": float(v) for k, v in model.get_metrics_result().items()})


class StepProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, never past the epoch's step count.

    With steps_per_execution=k, Keras reports each call at its last step (k-1, 2k-1,
    ...) even when the data ran out sooner, so cached phase 1 (k=8) printed 8/5 before
    5/5; the batch it reports is capped at the epoch's last step.
    """

    def on_train_batch_end(self, batch, logs=None):
        if self.target:
            batch = min(batch, self.target - 1)
        super().on_train_batch_end(batch, logs)


def fine_tune(model, train, val=None, *, config=ScheduleConfig(), parts=None, task=None,
              cache="auto", start=Position(), stop_epoch=None, callbacks=(),
              class_weight=None, verbose="auto"):
    """Run the two-phase schedule on `model`; returns a `FineTuneResult`.

    train: a `DataSplits` (its val split and class weights are used unless given), a
        tf.data dataset of (image, label) batches, or an (x, y) tuple of arrays;
        integer class labels are one-hot encoded for multi-unit heads.
    val: validation data of the same kinds (default: the DataSplits' val split).
    config: a `ScheduleConfig` (both phases, label smoothing, monitor, batch size).
    parts: a `ModelParts` naming the backbone and the head's input (default:
        `build_model`'s layout), for models built by hand.
    task: the task name or `Task` (default: the DataSplits' task, else read off the
        model's output layer).
    cache: "auto" (default): the caches `transferkit train` uses (`cache.run_cache`:
        phase 1 on cached backbone features, the clean view and one augmented view
        per image when the data is augmented, phase 2 on activations cached at its
        freeze boundary, kept in `FeatureStore.default()`), where `train` is a
        `DataSplits` (from `load_data`: it says how its images are augmented and, for
        file sources, which files they are) and the task trains on cached tensors;
        else both phases run live, saying why. A `FeatureCache` to choose; None or
        False: both phases live. A phase runs on cached tensors only when it starts
        from its beginning (phase 1 with the backbone frozen; phase 2 where the graph
        has a cut below its trainable layers, else live, saying why), and is then
        sized by `PhaseConfig.on_cache()`.
    start: the `Position` to start from (default: the beginning).
    stop_epoch: stop before this global epoch (default: at the end of the schedule).
    callbacks: Keras callbacks for every fit; `PhaseCallback`s also hear phases.
    """
    loop = _make_loop(model, train, val, config, parts, task, cache, callbacks,
                      class_weight, verbose)
    return loop.run(start, stop_epoch)


def _make_loop(model, train, val, config, parts, task, cache, callbacks, class_weight,
               verbose):
    splits = train if isinstance(train, DataSplits) else None
    own_val = val is None
    if splits is not None:
        train, val = splits.train, splits.val if own_val else val
        class_weight = splits.class_weight if class_weight is None else class_weight
    task = get_task(task or (splits.task if splits else task_for_model(model)))
    cache = _default_cache(cache, splits, task, verbose)
    # Keras applies class_weight per example; a dense task weighs pixels in its loss.
    task, class_weight = task.apply_class_weight(class_weight)
    resolved = resolve(model, parts)  # fails early, naming a missing part
    units = model.output_shape[-1]
    train = as_batches(train, task, units, config.batch_size, training=True)
    val = as_batches(val, task, units, config.batch_size)
    if splits is not None and not own_val:
        # An explicit val replaces the splits' own everywhere, the feature cache included.
        splits = dataclasses.replace(splits, val=val, val_files=(), val_labels=None)
    callbacks = list(callbacks)
    if config.batchnorm_stats_batches:
        # First, so the phase hooks after it (checkpoints) see the new statistics.
        callbacks.insert(0, PreciseBatchNorm(config.batchnorm_stats_batches, verbose))
    return _Loop(model, parts, resolved, task, config, train, val, callbacks,
                 class_weight, verbose, cache, splits)


def _default_cache(cache, splits, task, verbose):
    """The FeatureCache `fine_tune` runs with: `cache` itself, None for None or False,
    and for "auto" `run_cache`'s (as `transferkit train`'s) on a DataSplits."""
    if isinstance(cache, str) and cache == "auto":
        reason = cache_lib.cache_reason(task)
        if splits is None:
            reason = ("the training data is not a DataSplits (from load_data), which "
                      "says how its images are augmented; pass one, or cache=FeatureCache()")
        if reason is not None:
            if verbose:
                print(f"both phases run live, without the feature caches: {reason}.")
            return None
        return cache_lib.run_cache(task, splits.augment, splits.seed,
                                   cache_lib.FeatureStore.default())
    if cache is None or cache is False:
        return None
    if not isinstance(cache, cache_lib.FeatureCache):
        raise ConfigError("The `cache` argument should be \"auto\", a FeatureCache, None "
                          f"or False. Received: cache={cache!r}")
    return cache


def prepare_phase(model, train, val=None, *, phase="finetune", config=ScheduleConfig(),
                  parts=None, task=None, cache=None, verbose="auto"):
    """Freeze and compile `model` for `phase` as `fine_tune` would at the phase's start;
    returns (model to fit, train batches, val batches, mode, Task) with mode
    "features", "boundary" or "live" (see `_Loop.runner`). Arguments as for
    `fine_tune`. For tools that step through a phase themselves (the LR finder)."""
    loop = _make_loop(model, train, val, config, parts, task, cache, (), None, verbose)
    return (*loop.runner(phase, config.phase(phase)), loop.task)


class _Loop:
    """One call of `fine_tune`: its inputs, and the history and audits it collects."""

    def __init__(self, model, parts, resolved, task, config, train, val, callbacks,
                 class_weight, verbose, cache, splits):
        self.model, self.parts, self.resolved, self.task = model, parts, resolved, task
        self.config, self.train, self.val = config, train, val
        self.callbacks, self.class_weight, self.verbose = callbacks, class_weight, verbose
        self.cache, self.splits = cache, splits
        self.monitor = config.monitor if val is not None else "loss"
        self.history, self.audits, self.stop_epoch = [], {}, None

    def run(self, start, stop_epoch):
        epoch, self.stop_epoch = start.epoch, stop_epoch
        for name in PHASES[PHASES.index(start.phase):]:
            phase = self.config.phase(name)
            resumed = name == start.phase
            first = start.phase_start if resumed else epoch
            end = first + phase.epochs
            last = end if stop_epoch is None else min(end, stop_epoch)
            if epoch >= last:
                if stop_epoch is not None and stop_epoch < end:
                    break  # the budget ends inside this phase
                continue
            skipped = start.step if resumed and epoch == start.epoch else 0
            state = start.stopper if resumed else None
            if resumed and start.cached:  # it began on cached tensors: keep its sizing
                phase = phase.on_cache()
                end = first + phase.epochs
                last = end if stop_epoch is None else min(end, stop_epoch)
            if epoch == first and not skipped:
                phase = self._before_phase(name, phase)
                end = first + phase.epochs
                last = end if stop_epoch is None else min(end, stop_epoch)
            epoch, finished = self._phase(name, phase, first, end, epoch, last, skipped,
                                          state)
            if not finished:
                break
        return FineTuneResult(tuple(self.history), self.audits)

    def _before_phase(self, name, phase):
        """The phase as the `before_phase` hooks leave it; the schedule is updated too,
        so what later phases read of this one (e.g. the planned cut) agrees."""
        for callback in self._phase_callbacks():
            phase = callback.before_phase(name, phase, self)
        if phase.lr_auto and phase.epochs:
            # Nothing ran the range test: training at the fixed rate instead would
            # silently ignore a setting the caller asked for.
            raise ConfigError(f"Phase {name!r} has lr_auto=True, but no hook ran the "
                              "range test: pass callbacks=[AutoLR(out_dir)] (from "
                              "transferkit.training) to fine_tune, or set lr_auto=False "
                              "and a learning_rate.")
        self.config = dataclasses.replace(self.config, **{name: phase})
        return phase

    def _phase(self, name, phase, first, end, epoch, last, skipped, state):
        """Train phase `name` over epochs [epoch, last); returns (next epoch, whether
        the phase finished: reached its end or stopped early)."""
        with stage(STAGES[name]):  # extraction, checkpoints, ... are stages of their own
            return self._run_phase(name, phase, first, end, epoch, last, skipped, state)

    def _run_phase(self, name, phase, first, end, epoch, last, skipped, state):
        fit_model, train, val, mode = self.runner(name, phase, fresh=epoch == first
                                                  and not skipped)
        if mode != "live":  # on cached tensors epochs are cheap: the phase's cached sizing
            phase = phase.on_cache()
            end = first + phase.epochs
            last = end if self.stop_epoch is None else min(end, self.stop_epoch)
        stopper = None
        if phase.early_stopping_patience:  # 0: off
            stopper = PhaseStopper(self.monitor, phase.early_stopping_patience, state)
        run = PhaseRun(name, phase, first, end, mode == "live", skipped, stopper,
                       self.history, boundary=mode == "boundary")
        for callback in self._phase_callbacks():
            callback.on_phase_begin(run)
        cbs = [RecompileGuard(), EpochRecorder(name, first, self.history)]
        cbs += [stopper] if stopper else []
        # Last, where Keras would add its own bar, so prints keep their order.
        own_bar = any(isinstance(c, keras.callbacks.ProgbarLogger) for c in self.callbacks)
        bar = [] if own_bar else [StepProgbar()]
        pieces = [(train.skip(skipped), epoch + 1)] if skipped else []
        pieces.append((train, last))
        fit_args = {}
        if mode != "live" and _steps(train):  # a fresh cached phase: no batches to skip
            fit_args = dict(steps_per_epoch=_steps(train))
            pieces = [(train.repeat(), last)]  # one iterator for the whole phase
            fast = CachedValidation.of(val)
            if fast is not None:  # first, so the stopper and the records see val_*
                val, cbs = None, [fast, *cbs]
        for data, until in pieces:
            if epoch >= until:
                continue
            fit_model.fit(data, validation_data=val, epochs=until, initial_epoch=epoch,
                          callbacks=cbs + self.callbacks + bar,
                          class_weight=self.class_weight,
                          shuffle=False,  # datasets arrive shuffled by the pipeline
                          verbose=self.verbose, **fit_args)
            epoch = self.history[-1]["epoch"] if self.history else epoch
            if fit_model.stop_training:
                break
        finished = fit_model.stop_training or epoch >= end
        if finished and stopper is not None:
            stopper.restore_best(fit_model)
        if mode == "features":
            # Leave the full model compiled as after a live phase, so evaluate() works.
            self._compile_live(phase, _steps(self.train))
        if finished:
            run.model = fit_model
            run.clean_train = (lambda _: train) if mode != "live" else self._clean_train
            for callback in self._phase_callbacks():
                callback.on_phase_end(run)
        return epoch, finished

    def runner(self, name, phase, fresh=True):
        """(model to fit, train, val, mode) for phase `name`, frozen and compiled; mode
        is "features" (phase 1 on cached features), "boundary" (phase 2 on boundary
        activations) or "live". fresh: the phase starts at its beginning."""
        cache = self.cache
        if (cache is not None and cache.head and name == "head" and fresh
                and phase.freeze.kind == "all"):
            return (*self._cached_head(phase), "features")
        # Only from the phase's start: a resumed phase's model gets its checkpointed
        # weights after this point, so activations computed here could come from a
        # bottom that differs from the checkpoint's. A resumed phase 2 runs live from
        # the exact checkpoint (full model and optimizer, as boundary runs save them).
        if (cache is not None and cache.boundary and name == "finetune" and fresh
                and phase.freeze.kind != "all"):
            above = self._boundary(phase)
            if above is not None:
                return (*above, "boundary")
        return (*self._live(name, phase), "live")

    def _live(self, name, phase):
        self.audits[name] = self._compile_live(phase, _steps(self.train))
        return self.model, self.train, self.val

    def _compile_live(self, phase, steps):
        return compile_phase(self.model, phase, self.config, self.task, parts=self.parts,
                             steps_per_epoch=steps)

    def _cached_head(self, phase):
        """Phase 1 on cached features: the head sub-model and its feature datasets."""
        options, phase = self.cache, phase.on_cache()
        planned = self._planned_cut()
        self.audits["head"] = freeze(self.model, phase.freeze, parts=self.parts)
        source = self._source()
        bar = 1 if self.verbose == "auto" else int(self.verbose)
        with stage("extraction"):
            train_f, val_f = cache_lib.split_features(
                self.model, source, parts=self.parts, views=options.views,
                augment=options.augment, seed=options.seed,
                batch_size=self.config.batch_size, store=options.store, verbose=bar,
                boundary=planned)
        head = self.resolved.head()
        batch = self.config.batch_size
        train = cache_lib.feature_dataset(train_f, batch, training=True, seed=options.seed)
        # Validation batches can be large (nothing is learnt from them): fewer steps.
        val = None if val_f is None else cache_lib.feature_dataset(val_f, max(batch, 1024))
        head_paths = [v.path for v in head.weights]
        steps = math.ceil(train_f.count / batch)
        head.compile(**compile_args(phase, self.config, self.task, self.model.output_shape[-1],
                                    steps, head_paths),
                     steps_per_execution=steps)  # an epoch per call (see CACHED_VAL_BYTES)
        mark_compiled(head)
        if self.verbose:
            views = options.views or "no"
            print(f"phase 1 on cached backbone features ({views} augmented "
                  f"view{'' if views == 1 else 's'} per image; cache: {getattr(options.store, 'directory', None) or 'memory'})")
        return head, train, val

    def _planned_cut(self):
        """The cut phase 2 will train above, so phase 1's pass can store its activations
        too (None: no boundary cache, no cut, or over the cap, which phase 2 reports)."""
        finetune = self.config.finetune
        if not self.cache.boundary or not finetune.epochs or finetune.freeze.kind == "all":
            return None
        freeze(self.model, finetune.freeze, parts=self.parts)
        cut, _ = find_cut(self.model, self.parts)
        if cut is None:
            return None
        needed = cache_lib.boundary_bytes(self._source(), cut, self.cache.views,
                                          self.cache.mirror_val)
        if needed > self.cache.boundary_max_gb * 2**30:
            return None
        if self.verbose:
            print(f"boundary cache (captured with the features): {self._describe(cut, needed)}")
        return cut

    @staticmethod
    def _describe(cut, needed):
        return (f"activations of {cut.layer!r} {cut.shape}, {cut.bytes_per_image() / 1024:.1f} "
                f"KiB per image and view, about {needed / 2**30:.3f} GB in all")

    def _boundary(self, phase):
        """Phase 2 on boundary activations: (top model, datasets), or None (live) when
        the graph has no cut, the top cannot share the optimizer, or the cache would
        exceed its cap; the reason is printed."""
        options, batch = self.cache, self.config.batch_size
        phase = phase.on_cache()
        freeze(self.model, phase.freeze, parts=self.parts)
        cut, reason = find_cut(self.model, self.parts)
        if cut is None:
            return self._no_boundary(reason)
        source = self._source()
        needed = cache_lib.boundary_bytes(source, cut, options.views, options.mirror_val)
        if self.verbose:
            print(f"boundary cache: {self._describe(cut, needed)}")
        if needed > options.boundary_max_gb * 2**30:
            return self._no_boundary(f"the activations need about {needed / 2**30:.2f} GB, "
                                     f"above boundary_max_gb={options.boundary_max_gb}")
        top = top_model(self.model, cut, self.parts)
        if [id(v) for v in top.trainable_variables] != \
                [id(v) for v in self.model.trainable_variables]:
            return self._no_boundary("the top's trainable variables are not the model's")
        with stage("extraction"):
            train_b, val_b = cache_lib.split_boundary(
                self.model, source, cut, parts=self.parts, views=options.views,
                augment=options.augment, seed=options.seed, batch_size=batch,
                store=options.store, mirror_val=options.mirror_val,
                verbose=1 if self.verbose == "auto" else int(self.verbose))
        steps = math.ceil(train_b.count / batch)
        self.audits["finetune"] = self._compile_live(phase, steps)
        # The top compiles with the full model's optimizer: one set of variables, one
        # optimizer state, so checkpoints of the full model capture this phase exactly.
        args = compile_args(phase, self.config, self.task, self.model.output_shape[-1],
                            steps)
        top.compile(**{**args, "optimizer": self.model.optimizer})
        mark_compiled(top)
        train = cache_lib.mapped_dataset(train_b, batch, training=True, seed=options.seed)
        val = None if val_b is None else cache_lib.mapped_dataset(val_b, batch)
        if self.verbose:
            print(f"phase 2 on cached activations of {cut.layer!r} (first trainable layer "
                  f"{cut.first_trainable!r})")
        return top, train, val

    def _no_boundary(self, reason):
        if self.verbose:
            print(f"phase 2 runs live, not on the boundary cache: {reason}.")
        return None

    def _clean_train(self, max_batches):
        """Up to `max_batches` of the training split without online augmentation, in a
        fixed shuffled order (file splits), else the training batches as given; for
        `PreciseBatchNorm`."""
        splits, batch = self.splits, self.config.batch_size
        if splits is None or not splits.train_files:
            return self.train
        # Shuffled once with a fixed seed: a bounded pass then still sees every class
        # (files come sorted by class folder), and only the files it needs are read.
        order = np.random.default_rng(0).permutation(len(splits.train_files))
        order = order[:max_batches * batch]
        return make_dataset([splits.train_files[i] for i in order],
                            np.asarray(splits.train_labels)[order],
                            image_size=splits.image_size, batch_size=batch, training=False,
                            skip_errors=True, task=splits.task,
                            num_classes=len(splits.class_names))

    def _source(self):
        return cache_lib.FeatureSource.of(self.splits if self.splits is not None
                                          else self.train, self.val)

    def _phase_callbacks(self):
        return [c for c in self.callbacks if isinstance(c, PhaseCallback)]


def _steps(dataset):
    n = int(dataset.cardinality()) if dataset is not None else -1
    return n if n > 0 else None

