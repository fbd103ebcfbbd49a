"""The two-phase schedule: train the head on a frozen backbone, then fine-tune.

Each phase freezes per its policy, *then* compiles (a `trainable` change without a
recompile is silently ignored by Keras), then fits with early stopping that restores
the best weights. Epoch numbers run on across phases so curves and TensorBoard show one
run, and every epoch's record says which phase it belongs to.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError, check_choice
from transferkit.training.freezing import FreezePolicy, RecompileGuard, freeze, mark_compiled
from transferkit.models.heads import loss_and_metrics, task_of
from transferkit.training.optimizers import make_optimizer

DECAYS = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """One phase of training.

    decay: "constant" or "cosine" (over the phase, after `warmup_epochs` of linear
        warmup from 0). early_stopping_patience: None (off) or epochs without
        improvement before stopping; the best weights are restored either way.
    backbone_lr_multiplier: backbone learning rate relative to the head's (1.0).
    """

    epochs: int = 5
    learning_rate: float = 1e-3
    freeze: FreezePolicy = FreezePolicy("all")
    optimizer: str = "adam"
    weight_decay: float = 0.0
    decay: str = "constant"
    warmup_epochs: int = 0
    early_stopping_patience: object = 3
    backbone_lr_multiplier: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "freeze", FreezePolicy.parse(self.freeze))
        check_choice("decay", self.decay, DECAYS)
        if self.epochs < 0 or self.learning_rate <= 0:
            raise ConfigError("A phase needs epochs >= 0 and learning_rate > 0. Received: "
                              f"epochs={self.epochs}, learning_rate={self.learning_rate}")


HEAD_PHASE = PhaseConfig(epochs=5, learning_rate=1e-3, freeze=FreezePolicy("all"))
# 1e-5 and the top blocks unfrozen with BN frozen follow the Keras fine-tuning guides.
FINETUNE_PHASE = PhaseConfig(epochs=5, learning_rate=1e-5,
                             freeze=FreezePolicy("last_blocks", 2))


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Both phases plus what they share (defaults: 5 + 5 epochs, 1e-3 then 1e-5)."""

    head: PhaseConfig = HEAD_PHASE
    finetune: PhaseConfig = FINETUNE_PHASE
    label_smoothing: float = 0.0
    monitor: str = "val_loss"
    batch_size: int = 32


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
    """What `fine_tune` returns: per-epoch records (each with its "phase") and audits."""

    history: tuple
    audits: dict

    def metric(self, name, phase=None):
        """The values of metric `name` over epochs, optionally of one phase."""
        return [r[name] for r in self.history if name in r and phase in (None, r["phase"])]


def fine_tune(model, train, val=None, *, config=ScheduleConfig(), callbacks=(),
              class_weight=None, verbose="auto", phases=("head", "finetune"),
              initial_epoch=0):
    """Run the two-phase schedule on a transferkit model; returns a `FineTuneResult`.

    train, val: tf.data datasets of (image, label) batches, or (x, y) numpy tuples.
        Integer class labels are one-hot encoded for multiclass heads.
    phases: which phases to run, in order (default both).
    initial_epoch: epochs already run (e.g. phase 1 on cached features), so epoch
        numbers continue (default 0).
    """
    for name in phases:  # up front: a typo must not surface after a whole phase trained
        check_choice("phases", name, ("head", "finetune"))
    task = task_of(model)
    outputs = model.output_shape[-1]
    train = as_dataset(train, task, outputs, config.batch_size, training=True)
    val = as_dataset(val, task, outputs, config.batch_size, training=False)
    history, audits, epoch = [], {}, initial_epoch
    for name in phases:
        phase = check_choice("phases", name, ("head", "finetune")) and getattr(config, name)
        if phase.epochs == 0:
            continue
        audits[name] = compile_for_phase(model, phase, config, task, train)
        for callback in callbacks:  # e.g. checkpoint.Checkpointer records the phase
            if hasattr(callback, "set_phase"):
                callback.set_phase(name, epoch, phase)
        records = train_phase(model, train, val, phase, name=name, initial_epoch=epoch,
                              monitor=config.monitor if val is not None else "loss",
                              callbacks=callbacks, class_weight=class_weight,
                              verbose=verbose)
        history += records
        epoch += len(records)
    return FineTuneResult(tuple(history), audits)


def compile_for_phase(model, phase, config=ScheduleConfig(), task=None, train=None):
    """Freeze per `phase.freeze`, then compile with the phase's optimizer and schedule."""
    audit = freeze(model, phase.freeze)
    model.compile(**phase_compile_args(model, phase, config, task, _steps(train)))
    mark_compiled(model)
    return audit


def phase_compile_args(model, phase, config=ScheduleConfig(), task=None,
                       steps_per_epoch=None):
    """{optimizer, loss, metrics} for `phase` on transferkit `model` (its task, outputs,
    learning-rate schedule, discriminative rate, weight decay and label smoothing)."""
    loss, metrics = loss_and_metrics(task or task_of(model), model.output_shape[-1],
                                     config.label_smoothing)
    optimizer = make_optimizer(phase.optimizer,
                               learning_rate_schedule(phase, steps_per_epoch),
                               backbone_multiplier=phase.backbone_lr_multiplier,
                               weight_decay=phase.weight_decay)
    return {"optimizer": optimizer, "loss": loss, "metrics": metrics}


def train_phase(model, train, val, phase, *, name, initial_epoch=0, monitor="val_loss",
                callbacks=(), class_weight=None, verbose="auto"):
    """Fit one compiled phase; returns its per-epoch records."""
    recorder = EpochRecorder(name, initial_epoch)
    cbs = [RecompileGuard(), recorder, *callbacks]
    if phase.early_stopping_patience is not None:
        cbs.insert(1, keras.callbacks.EarlyStopping(
            monitor=monitor, patience=phase.early_stopping_patience,
            restore_best_weights=True))
    model.fit(train, validation_data=val, epochs=initial_epoch + phase.epochs,
              initial_epoch=initial_epoch, callbacks=cbs, class_weight=class_weight,
              shuffle=False,  # datasets arrive shuffled by the pipeline
              verbose=verbose)
    return recorder.records


class EpochRecorder(keras.callbacks.Callback):
    """Collects one record per epoch: epoch, phase, phase_epoch, learning_rate, metrics."""

    def __init__(self, phase, initial_epoch=0):
        super().__init__()
        self.phase, self.initial_epoch, self.records = phase, initial_epoch, []

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        record = {"epoch": epoch + 1, "phase": self.phase,
                  "phase_epoch": epoch + 1 - self.initial_epoch,
                  "learning_rate": float(keras.ops.convert_to_numpy(lr))}
        record.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        self.records.append(record)


def learning_rate_schedule(phase, steps_per_epoch=None):
    """A float, or a warmup + cosine `LearningRateSchedule` over the phase's steps."""
    if phase.decay == "constant" and not phase.warmup_epochs:
        return phase.learning_rate
    if not steps_per_epoch:
        raise ConfigError(f"decay={phase.decay!r} with warmup_epochs={phase.warmup_epochs} "
                          "needs a training dataset of known length (use a finite, "
                          "batched tf.data dataset or numpy arrays).")
    warmup = phase.warmup_epochs * steps_per_epoch
    total = max(1, phase.epochs * steps_per_epoch - warmup)
    if phase.decay == "constant":  # warmup, then hold: a cosine with alpha=1 is flat
        return keras.optimizers.schedules.CosineDecay(0.0, total, alpha=1.0,
                                                      warmup_target=phase.learning_rate,
                                                      warmup_steps=warmup)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(0.0, total,
                                                      warmup_target=phase.learning_rate,
                                                      warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(phase.learning_rate, total)


def as_dataset(data, task, num_outputs, batch_size=32, training=False, seed=0):
    """A batched tf.data dataset of (image, float label) from a dataset or (x, y) arrays."""
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        if len(data.element_spec[0].shape) == 3:  # unbatched examples
            data = data.batch(batch_size)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(a) for a in data)
        if len(x) != len(y):
            raise ConfigError(f"x and y have different lengths: {len(x)} and {len(y)}.")
        data = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
        if training:
            data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        data = data.batch(batch_size)
    else:
        raise ConfigError("Training data should be a tf.data.Dataset or an (x, y) tuple of "
                          f"arrays. Received: {type(data).__name__}")
    label = data.element_spec[1]
    if task == "multiclass" and label.dtype.is_integer:
        data = data.map(lambda x, y: (x, tf.one_hot(tf.reshape(y, [-1]), num_outputs)))
    elif not label.dtype.is_floating:
        data = data.map(lambda x, y: (x, tf.cast(y, tf.float32)))
    return data.prefetch(tf.data.AUTOTUNE)


def _steps(dataset):
    if dataset is None:
        return None
    n = int(dataset.cardinality())
    return n if n > 0 else None
