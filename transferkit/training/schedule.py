"""The two-phase schedule's configuration, and how a phase is compiled.

Phase 1 ("head") trains the head on a frozen backbone; phase 2 ("finetune") unfreezes
the upper backbone at a learning rate 10-100x lower, BatchNorm kept in inference mode.
The loop that runs them is `orchestrator.fine_tune`; this module holds what each phase
is (frozen dataclasses) and turns a phase into compile arguments.
"""

import dataclasses

import keras

from transferkit.core.errors import ConfigError, check_choice
from transferkit.models.parts import resolve
from transferkit.training.freezing import FreezePolicy, freeze, layer_depths, mark_compiled
from transferkit.training.optimizers import make_optimizer

DECAYS = ("constant", "cosine")
PHASES = ("head", "finetune")


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """One phase of training.

    decay: "constant" or "cosine" (over the phase, after `warmup_epochs` of linear
        warmup from 0). early_stopping_patience: None (off: the phase runs all its
        epochs and keeps its last weights) or epochs without improvement of the
        monitored metric before stopping; the best weights are then restored at the
        end of the phase.
    backbone_lr_multiplier: backbone learning rate relative to the head's (1.0).
    layer_lr_decay: layer-wise learning-rate decay in (0, 1] (1.0: off): the backbone
        block at depth d from the top (top block 0) learns at rate x decay**d.
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
    layer_lr_decay: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "freeze", FreezePolicy.parse(self.freeze))
        check_choice("decay", self.decay, DECAYS)
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError("The `layer_lr_decay` setting should be in (0, 1] (1.0: off; "
                              "below 1, each block down from the top learns that much "
                              f"slower). Received: layer_lr_decay={self.layer_lr_decay}")
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
