"""The two-phase schedule's configuration, and how a phase is compiled.

Phase 1 ("head") trains the head on a frozen backbone; phase 2 ("finetune") unfreezes
the upper backbone at a learning rate 10-100x lower, BatchNorm kept in inference mode.
The loop that runs them is `orchestrator.fine_tune`; this module holds what each phase
is (frozen dataclasses) and turns a phase into compile arguments.
"""

import dataclasses

import keras

from transferkit.core.config import section, setting
from transferkit.core.errors import ConfigError, check_choice
from transferkit.models.parts import resolve
from transferkit.training.freezing import FreezePolicy, freeze, layer_depths, mark_compiled
from transferkit.training.optimizers import OPTIMIZERS, make_optimizer

DECAYS = ("constant", "cosine")
PHASES = ("head", "finetune")


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """One phase of training (defaults: the head phase's; `FINETUNE_PHASE` holds the
    fine-tuning phase's). Every field is a recipe key and a flag, prefixed with the
    phase: `head_epochs`, `finetune_lr`, ..."""

    epochs: int = setting(5, "epochs of this phase (0: skip it)")
    learning_rate: float = setting(1e-3, "peak learning rate of this phase", key="lr")
    lr_auto: bool = setting(False, "run the LR range test when the phase starts and use "
                            "its suggestion instead of the learning rate (recorded in "
                            "config.json, so a resumed run keeps it)")
    freeze: FreezePolicy = setting(
        FreezePolicy("all"), "which backbone layers train: all (frozen), none, "
        "last_blocks:K, top_layers:N, fraction:F, from_layer:NAME or regex:PATTERN",
        key="unfreeze", parse=FreezePolicy.parse, show=str,
        also=[("train_batchnorm", "train_batchnorm",
               "let unfrozen BatchNorm layers train (normally they stay in inference "
               "mode: small target batches would wreck ImageNet's moving statistics)")])
    optimizer: str = setting("adam", f"optimizer: one of {', '.join(OPTIMIZERS)}")
    weight_decay: float = setting(0.0, "decoupled weight decay (0: off)")
    decay: str = setting("constant", "learning-rate shape over the phase after warmup: "
                         "constant or cosine")
    warmup_epochs: int = setting(0, "epochs of linear warmup from 0 to the learning rate")
    early_stopping_patience: int = setting(
        3, "epochs without improvement of the monitored metric before the phase stops "
        "and restores its best weights (0: off, the phase runs all its epochs and "
        "keeps its last weights)")
    cached_epochs: int = setting(
        0, "epochs of this phase when it runs on cached tensors (phase 1 on cached "
        "features, phase 2 on boundary activations), where an epoch costs milliseconds: "
        "a cap that early stopping ends, with cached_patience (0: epochs, as live; a "
        "recipe or flag that sets epochs but not this sets it to 0)")
    cached_patience: int = setting(
        0, "early-stopping patience on cached tensors (0: early_stopping_patience)")
    backbone_lr_multiplier: float = setting(
        1.0, "backbone learning rate relative to the head's (discriminative rates)")
    layer_lr_decay: float = setting(
        1.0, "layer-wise learning-rate decay in (0, 1]: the backbone block at depth d "
        "from the top learns at rate x decay**d (1.0: off)")

    def __post_init__(self):
        object.__setattr__(self, "freeze", FreezePolicy.parse(self.freeze))
        # None was the API's "off" before 0 was: both mean "no early stopping".
        object.__setattr__(self, "early_stopping_patience",
                           int(self.early_stopping_patience or 0))
        check_choice("decay", self.decay, DECAYS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError("The `layer_lr_decay` setting should be in (0, 1] (1.0: off; "
                              "below 1, each block down from the top learns that much "
                              f"slower). Received: layer_lr_decay={self.layer_lr_decay}")
        if self.epochs < 0 or self.learning_rate <= 0:
            raise ConfigError("A phase needs epochs >= 0 and learning_rate > 0. Received: "
                              f"epochs={self.epochs}, learning_rate={self.learning_rate}")
        if min(self.warmup_epochs, self.early_stopping_patience, self.cached_epochs,
               self.cached_patience) < 0:
            raise ConfigError("A phase needs warmup_epochs >= 0 and "
                              "early_stopping_patience, cached_epochs, cached_patience "
                              f">= 0. Received: warmup_epochs={self.warmup_epochs}, "
                              f"early_stopping_patience={self.early_stopping_patience}, "
                              f"cached_epochs={self.cached_epochs}, "
                              f"cached_patience={self.cached_patience}")

    def on_cache(self):
        """This phase as it runs on cached tensors: `cached_epochs` and `cached_patience`
        in place of `epochs` and `early_stopping_patience` where set (a skipped phase,
        epochs=0, stays skipped)."""
        if not self.epochs or not (self.cached_epochs or self.cached_patience):
            return self
        return dataclasses.replace(
            self, epochs=self.cached_epochs or self.epochs,
            early_stopping_patience=self.cached_patience or self.early_stopping_patience)


# On cached features an epoch of the head costs milliseconds: phase 1 trains to
# convergence (validation loss stops improving for 10 epochs, best weights restored)
# within a cap of 200, instead of stopping after a handful of epochs.
HEAD_PHASE = PhaseConfig(cached_epochs=200, cached_patience=10)
# 1e-5 and the top blocks unfrozen with BN frozen follow the Keras fine-tuning guides;
# cosine decay to 0 over the phase lets the last epochs settle at a tiny rate. On
# boundary activations only the top runs, so the phase can afford more epochs.
FINETUNE_PHASE = PhaseConfig(learning_rate=1e-5, freeze=FreezePolicy("last_blocks", 2),
                             decay="cosine", cached_epochs=15, cached_patience=5)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Both phases plus what they share (defaults: 5 + 5 epochs live; on cached tensors
    phase 1 up to 200 epochs with patience 10 and phase 2 up to 15 with patience 5;
    1e-3 then 1e-5 with cosine decay, the top 2 blocks unfrozen)."""

    head: PhaseConfig = section(HEAD_PHASE, prefix="head_")
    finetune: PhaseConfig = section(FINETUNE_PHASE, prefix="finetune_")
    label_smoothing: float = setting(0.0, "label smoothing of the classification loss")
    monitor: str = setting("val_loss", "metric early stopping watches (val_loss, "
                           "val_accuracy, ...; loss when there is no validation split)")
    batch_size: int = setting(32, "images per training step (global, across replicas)")
    batchnorm_stats_batches: int = setting(
        100, "after a phase in which BatchNorm layers trained (from scratch, "
        "train_batchnorm, a decoder's own BN), recompute their moving mean and variance "
        "exactly over up to this many training batches without augmentation (0: off, "
        "keep Keras's moving averages, which lag the weights on small data)")

    def __post_init__(self):
        if self.batch_size < 1 or self.batchnorm_stats_batches < 0:
            raise ConfigError(f"The `batch_size` setting should be >= 1 and "
                              f"`batchnorm_stats_batches` >= 0. Received: "
                              f"batch_size={self.batch_size}, "
                              f"batchnorm_stats_batches={self.batchnorm_stats_batches}")

    def fixed(self):
        """This schedule with each phase's epochs and patience on cached tensors too (no
        `cached_epochs`/`cached_patience`): for callers whose epoch timeline must not
        depend on where a phase runs (a tuner's trials)."""
        fixed = {name: dataclasses.replace(self.phase(name), cached_epochs=0,
                                           cached_patience=0) for name in PHASES}
        return dataclasses.replace(self, **fixed)

    def phase(self, name):
        """The PhaseConfig of phase `name` ("head" or "finetune")."""
        return getattr(self, check_choice("phase", name, PHASES))

    def span(self, name, start=0):
        """(first, end) global epochs of phase `name` if phase 1 began at `start` and
        ran all its epochs (the timeline a tuner's epoch budget refers to)."""
        first = start + (self.head.epochs if name == "finetune" else 0)
        return first, first + self.phase(name).epochs


def compile_args(phase, config, task, units, steps_per_epoch=None, head_paths=(),
                 depths=None):
    """{optimizer, loss, metrics} for `phase`: the task's loss and metrics, the phase's
    optimizer with its learning-rate schedule (see `phase_optimizer`)."""
    return {"optimizer": phase_optimizer(phase, learning_rate_schedule(phase, steps_per_epoch),
                                         head_paths, depths),
            "loss": task.loss(config.label_smoothing), "metrics": task.metrics(units)}


def phase_optimizer(phase, learning_rate, head_paths=(), depths=None):
    """The optimizer of `phase` at `learning_rate` (a float or schedule): its kind,
    weight decay, discriminative rate and layer-wise decay (head_paths and depths from
    `optimizer_paths`)."""
    return make_optimizer(phase.optimizer, learning_rate,
                          backbone_multiplier=phase.backbone_lr_multiplier,
                          weight_decay=phase.weight_decay, head_paths=head_paths,
                          layer_lr_decay=phase.layer_lr_decay, depths=depths)


def optimizer_paths(model, phase, parts=None):
    """(head variable paths, {backbone variable path: block depth} or None when
    `phase` has no layer-wise decay) of `model`, for `phase_optimizer`."""
    head_paths = [v.path for v in resolve(model, parts).head_variables()]
    depths = layer_depths(model, parts=parts) if phase.layer_lr_decay != 1.0 else None
    return head_paths, depths


def compile_phase(model, phase, config, task, *, parts=None, steps_per_epoch=None):
    """Freeze `model` per `phase.freeze`, then compile it for the phase; returns the
    `FreezeAudit`. (Compiling after freezing is what makes the change take effect.)"""
    audit = freeze(model, phase.freeze, parts=parts)
    model.compile(**compile_args(phase, config, task, model.output_shape[-1],
                                 steps_per_epoch, *optimizer_paths(model, phase, parts)))
    mark_compiled(model)
    return audit


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
