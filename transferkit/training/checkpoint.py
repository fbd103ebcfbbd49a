"""Crash-safe checkpoints and resume across both phases of the schedule.

A checkpoint is two files in `<run>/checkpoints/`: `ckpt-<step>.weights.h5` (model
weights *and* optimizer variables, as Keras' `save_weights` writes them) and
`ckpt-<step>.json`, the state: phase, epoch, step within the epoch, the optimizer's
iteration count (which is the learning-rate schedule's position), the freeze policy,
the trainable parameter count and the per-epoch history so far. Both are written
atomically (temp file, fsync, rename) and the JSON goes last, so it is the commit mark:
a kill at any moment leaves the previous checkpoint whole. The last `keep` are kept.

Resume rebuilds the model, freezes and compiles it for the saved phase, loads weights
and optimizer state, finishes the interrupted epoch (skipping the batches already
trained), then runs the rest of the schedule.
"""

import contextlib
import dataclasses
import glob
import json
import math
import os
import re
import signal
import time

import keras

from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.training.freezing import count_params, trainable_signature
from transferkit.models.saving import atomic_path, write_json
from transferkit.training.schedule import EpochRecorder, compile_for_phase, fine_tune, train_phase

FORMAT = 1
PHASES = ("head", "finetune")
# Test hooks for the kill harness: "SECONDS[@STEP]" to sleep inside weights writes (from
# global step STEP on), so a kill can land mid-save; a file that receives the global
# step, phase, epoch and step after every batch.
SLEEP_IN_SAVE_ENV = "TRANSFERKIT_TEST_SLEEP_IN_SAVE"
PROGRESS_ENV = "TRANSFERKIT_TEST_PROGRESS"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """every_steps: also save every N optimizer steps (0: at epoch ends only, default).
    keep: how many checkpoints to keep (default 3)."""

    every_steps: int = 0
    keep: int = 3

    def __post_init__(self):
        if self.every_steps < 0 or self.keep < 1:
            raise ConfigError("CheckpointConfig needs every_steps >= 0 and keep >= 1. "
                              f"Received: every_steps={self.every_steps}, keep={self.keep}")


class CheckpointManager:
    """Writes, lists, prunes and restores the checkpoints of one directory."""

    def __init__(self, directory, keep=3):
        self.directory, self.keep = os.fspath(directory), keep

    def save(self, model, state):
        """Write weights + optimizer, then the state JSON; prune to the last `keep`."""
        name = f"ckpt-{state['global_step']:08d}"
        weights = os.path.join(self.directory, name + ".weights.h5")
        with atomic_path(weights) as tmp:
            model.save_weights(tmp)
            _test_sleep(state["global_step"])
        write_json(os.path.join(self.directory, name + ".json"),
                   {**state, "format": FORMAT, "weights": os.path.basename(weights)})
        self.prune()
        return weights

    def states(self):
        """Every committed state, oldest first."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.directory, "ckpt-*.json"))):
            try:
                with open(path) as f:
                    state = json.load(f)
            except (OSError, json.JSONDecodeError):
                continue  # not committed (cannot happen with atomic writes; be safe)
            if os.path.exists(os.path.join(self.directory, state.get("weights", ""))):
                out.append(state)
        return out

    def latest(self):
        """The newest committed state, or None."""
        states = self.states()
        return states[-1] if states else None

    def prune(self):
        # The JSON goes first: a kill in between leaves an orphan weights file, never a
        # state that points at nothing.
        for state in self.states()[:-self.keep]:
            for name in (re.sub(r"\.weights\.h5$", ".json", state["weights"]),
                         state["weights"]):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, name))

    def clean(self):
        """Remove temp files of writes a kill interrupted, and uncommitted weights."""
        committed = {s["weights"] for s in self.states()}
        for path in glob.glob(os.path.join(self.directory, "*.weights.h5")) + \
                glob.glob(os.path.join(self.directory, ".*.tmp*")):
            if os.path.basename(path) not in committed:
                os.remove(path)

    def restore(self, model, state):
        """Load weights and optimizer state into a model compiled for `state`'s phase."""
        model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.directory, state["weights"]))
        # Keras only warns when optimizer variables do not match; a silently fresh
        # optimizer would restart the learning-rate schedule, so check and refuse.
        iterations = int(model.optimizer.iterations.numpy())
        if iterations != state["optimizer_iterations"]:
            raise TransferkitError(
                f"Checkpoint {state['weights']} in {self.directory} did not restore the "
                f"optimizer (iterations {iterations}, saved "
                f"{state['optimizer_iterations']}): the trainable layers differ from "
                f"phase {state['phase']!r} with freeze policy {state['freeze_policy']}.")


class Checkpointer(keras.callbacks.Callback):
    """Saves every N steps, at epoch ends and at each phase's end; stops on NaN loss.

    target: the full model to save (phase 1 on cached features fits only the head).
    history: per-epoch records so far (given on resume).
    """

    def __init__(self, manager, target, config=CheckpointConfig(), history=(),
                 global_step=0):
        super().__init__()
        self.manager, self.target, self.config = manager, target, config
        self.history, self.global_step = list(history), global_step
        self.phase, self.phase_start, self.phase_epochs, self.freeze_policy = None, 0, 0, ""
        self.epoch, self.step, self.skipped = 0, 0, 0
        self.stop_requested = False

    def set_phase(self, name, phase_start, phase, skipped=0):
        """Called before each fit: phase name, its first epoch, its PhaseConfig, and
        how many batches of the first epoch were skipped (trained before a kill)."""
        self.phase, self.phase_start, self.phase_epochs = name, phase_start, phase.epochs
        self.freeze_policy, self.skipped = str(phase.freeze), skipped

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.step = epoch, self.skipped

    def on_train_batch_end(self, batch, logs=None):
        self.global_step += 1
        self.step = self.skipped + batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            last = self.manager.latest()
            raise TransferkitError(
                f"The loss became {float(loss)} at epoch {self.epoch + 1}, step "
                f"{self.step} (phase {self.phase!r}); training stopped. The last good "
                f"checkpoint is {last['weights'] if last else 'none'} in "
                f"{self.manager.directory}: lower the learning rate and --resume.")
        _test_progress(self.global_step, self.phase, self.epoch, self.step)
        if self.config.every_steps and self.global_step % self.config.every_steps == 0:
            self.save()
        if self.stop_requested:
            self.save()
            raise SystemExit(128 + signal.SIGTERM)

    def on_epoch_end(self, epoch, logs=None):
        recorder = EpochRecorder(self.phase, self.phase_start)
        recorder.set_model(self.model)
        recorder.on_epoch_end(epoch, logs)
        self.history += recorder.records
        self.epoch, self.step, self.skipped = epoch + 1, 0, 0
        self.save()

    def on_train_end(self, logs=None):
        # After EarlyStopping restored the best weights; a resumed partial epoch's fit
        # ends too, without ending the phase.
        done = self.model.stop_training or self.epoch >= self.phase_start + self.phase_epochs
        if done:
            self.save(phase_complete=True)

    def save(self, phase_complete=False):
        if self.model is not self.target:
            return None  # phase 1 on cached features fits the head alone: nothing to resume
        optimizer = self.target.optimizer
        state = {"phase": self.phase, "phase_start_epoch": self.phase_start,
                 "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                 "phase_complete": phase_complete,
                 "optimizer_iterations": int(optimizer.iterations.numpy()),
                 "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                 "freeze_policy": self.freeze_policy,
                 "trainable_params": count_params(self.target.trainable_weights),
                 "trainable_layers": sum(t for _, t in trainable_signature(self.target)),
                 "history": self.history, "time": time.time()}
        return self.manager.save(self.target, state)


@contextlib.contextmanager
def save_on_sigterm(checkpointer):
    """While inside, SIGTERM saves a checkpoint at the next batch end, then exits 143.

    A flag, not a save in the handler: the handler can fire mid-step, when the weights
    are half updated. Outside the main thread signals cannot be caught; then a no-op.
    """
    def handler(signum, frame):
        checkpointer.stop_requested = True

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume(model, train, val, schedule, checkpointer, state, *, callbacks=(),
           class_weight=None, verbose="auto"):
    """Continue the schedule from `state` (see `CheckpointManager.latest`); returns audits.

    The model must be freshly built (inside the strategy scope); its trainable flags
    are re-applied for the saved phase before its weights and optimizer are loaded.
    """
    name = state["phase"]
    if name not in PHASES:
        raise TransferkitError(f"Checkpoint state has phase={name!r}; expected one of "
                               f"{PHASES}.")
    phase = getattr(schedule, name)
    audits = {name: compile_for_phase(model, phase, schedule, train=train)}
    checkpointer.manager.restore(model, state)
    epoch, cbs = state["epoch"], [checkpointer, *callbacks]
    if not state["phase_complete"]:
        end = state["phase_start_epoch"] + phase.epochs
        monitor = schedule.monitor if val is not None else "loss"
        pieces = []
        if state["step"]:  # finish the interrupted epoch without its trained batches
            pieces.append((train.skip(state["step"]), 1, state["step"]))
        pieces.append((train, end - epoch - len(pieces), 0))
        for data, epochs, skipped in pieces:
            if epochs <= 0:
                continue
            checkpointer.set_phase(name, state["phase_start_epoch"], phase, skipped)
            train_phase(model, data, val, dataclasses.replace(phase, epochs=epochs),
                        name=name, initial_epoch=epoch, monitor=monitor, callbacks=cbs,
                        class_weight=class_weight, verbose=verbose)
            epoch = checkpointer.epoch
            if model.stop_training:  # early stopping ended the phase
                break
    rest = PHASES[PHASES.index(name) + 1:]
    if rest:
        result = fine_tune(model, train, val, config=schedule, callbacks=cbs,
                           class_weight=class_weight, verbose=verbose, phases=rest,
                           initial_epoch=epoch)
        audits.update(result.audits)
    return audits


def _test_sleep(global_step):
    seconds, _, from_step = (os.environ.get(SLEEP_IN_SAVE_ENV) or "0").partition("@")
    if float(seconds) and global_step >= int(from_step or 0):
        time.sleep(float(seconds))


def _test_progress(*fields):
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(" ".join(map(str, fields)) + "\n")
