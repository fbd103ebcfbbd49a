"""How a phase of the two-phase schedule is compiled.

Phase 1 ("head") trains the head on a frozen backbone; phase 2 ("finetune") unfreezes
the upper backbone at a learning rate 10-100x lower, BatchNorm kept in inference mode.
The loop that runs them is `orchestrator.fine_tune`; what each phase is (the frozen
`PhaseConfig`, `ScheduleConfig`) lives in `training.config`; this module turns a phase
into compile arguments.
"""

import keras

from transferkit.core.errors import ConfigError
from transferkit.models.parts import resolve
# The configs live in the light `training.config`; importable from here as before.
from transferkit.training.config import (DECAYS, FINETUNE_PHASE, HEAD_PHASE,  # noqa: F401
                                         PHASES, PhaseConfig, ScheduleConfig)
from transferkit.training.freezing import freeze, layer_depths, mark_compiled
from transferkit.training.optimizers import make_optimizer

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
