"""Crash-safe checkpoints, and the `Position` a run resumes from.

A checkpoint is files in `<run>/checkpoints/`: `ckpt-<step>.weights.h5` (model weights
*and* optimizer variables, as Keras' `save_weights` writes them), the early-stopping
phase's best weights `best-<step>.npz` when they changed, and `ckpt-<step>.json`, the
state: phase, epoch, step within the epoch, the optimizer's iteration count (the
learning-rate schedule's position), the early-stopping state, the freeze policy, the
trainable parameter count and the per-epoch history so far. Every file is written
atomically (temp file, fsync, rename) and the JSON goes last, so it is the commit mark:
a kill at any moment leaves the previous checkpoint whole. The last `keep` are kept.

Resume: `position(state)` says where the orchestrator restarts; the `Checkpointer`
loads weights and optimizer once the model is frozen and compiled for that phase.
"""

import contextlib
import dataclasses
import glob
import json
import math
import os
import signal
import time

import keras
import numpy as np

from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.core.files import TEMP_MARK, atomic_path, write_json
from transferkit.training.freezing import count_params, trainable_signature
from transferkit.training.orchestrator import PhaseCallback, Position, StopperState
from transferkit.training.schedule import PHASES

FORMAT = 2
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

    def _path(self, name):
        return os.path.join(self.directory, name)

    def save(self, model, state, best_file=None, best_weights=None):
        """Write weights + optimizer, `best_weights` (a list of arrays) to `best_file`
        if given, then the state JSON (which refers to `best_file`); prune to the last
        `keep`. Returns the weights path."""
        name = f"ckpt-{state['global_step']:08d}"
        with atomic_path(self._path(name + ".weights.h5")) as tmp:
            model.save_weights(tmp)
            _test_sleep(state["global_step"])
        if best_weights is not None:
            with atomic_path(self._path(best_file)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, *best_weights)
        files = {"weights": name + ".weights.h5", "best_weights": best_file}
        write_json(self._path(name + ".json"), {**state, **files, "format": FORMAT})
        self.prune()
        return self._path(files["weights"])

    def states(self):
        """Every committed state whose files exist, oldest first."""
        out = []
        for path in sorted(glob.glob(self._path("ckpt-*.json"))):
            try:
                with open(path) as f:
                    state = json.load(f)
            except (OSError, json.JSONDecodeError):
                continue  # not committed (cannot happen with atomic writes; be safe)
            if all(os.path.exists(self._path(state[k])) for k in _files(state)):
                out.append(state)
        return out

    def latest(self):
        """The newest committed state, or None."""
        states = self.states()
        return states[-1] if states else None

    def prune(self):
        """Delete all but the newest `keep` checkpoints, and best-weights files no kept
        state refers to. The JSON goes first: a kill in between leaves an orphan
        weights file, never a state that points at nothing."""
        states = self.states()
        kept = {state[k] for state in states[-self.keep:] for k in _files(state)}
        for state in states[:-self.keep]:
            name = state["weights"].replace(".weights.h5", ".json")
            for file in [name] + [state[k] for k in _files(state)]:
                if file not in kept:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self._path(file))

    def clean(self):
        """Remove temp files of writes a kill interrupted, and uncommitted files."""
        committed = {s[k] for s in self.states() for k in _files(s)}
        for path in (glob.glob(self._path("ckpt-*.weights.h5"))
                     + glob.glob(self._path("best-*.npz"))
                     + glob.glob(self._path(f".*{TEMP_MARK}*"))):
            if os.path.basename(path) not in committed:
                os.remove(path)

    def position(self, state):
        """The orchestrator `Position` that continues the run `state` records."""
        name = state["phase"]
        if name not in PHASES:
            raise TransferkitError(f"Checkpoint state in {self.directory} has phase="
                                   f"{name!r}; expected one of {PHASES}.")
        if state["phase_complete"]:
            following = PHASES[PHASES.index(name) + 1:]
            if not following:
                return None  # the schedule is done
            return Position(following[0], state["epoch"], state["epoch"], 0)
        stopper = state.get("early_stopping")
        if stopper is not None:
            weights = None
            if state.get("best_weights"):
                with np.load(self._path(state["best_weights"])) as archive:
                    weights = [archive[f"arr_{i}"] for i in range(len(archive.files))]
            stopper = StopperState(stopper["best"], stopper["best_epoch"], stopper["wait"],
                                   weights)
        return Position(name, state["phase_start_epoch"], state["epoch"], state["step"],
                        stopper)

    def restore(self, model, state, *, optimizer=True):
        """Load a checkpoint's weights into `model`; with `optimizer`, also its optimizer
        state, into a model compiled for the state's phase (checked, not assumed)."""
        path = self._path(state["weights"])
        if not optimizer:
            model.load_weights(path)  # an uncompiled model: the weights alone
            return
        model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
        # Keras only warns when optimizer variables do not match; a silently fresh
        # optimizer would restart the learning-rate schedule, so check and refuse.
        iterations = int(model.optimizer.iterations.numpy())
        if iterations != state["optimizer_iterations"]:
            raise TransferkitError(
                f"Checkpoint {state['weights']} in {self.directory} did not restore the "
                f"optimizer (iterations {iterations}, saved "
                f"{state['optimizer_iterations']}): the trainable layers differ from "
                f"phase {state['phase']!r} with freeze policy {state['freeze_policy']}.")


def _files(state):
    return [k for k in ("weights", "best_weights") if state.get(k)]


class Checkpointer(PhaseCallback):
    """Saves every N steps, at epoch ends and at each phase's end; stops on NaN loss.

    target: the full model to save (phase 1 on cached features fits only the head,
        and is saved only when it ends; phase 2 on boundary activations trains the
        full model's own variables with its optimizer, and is saved as usual).
    history: per-epoch records of the run before this process (given on resume).
    resume: the state to restore once the model is compiled for its phase (a state
        whose phase was complete is restored before training, weights only).
    """

    def __init__(self, manager, target, config=CheckpointConfig(), history=(),
                 global_step=0, resume=None):
        super().__init__()
        self.manager, self.target, self.config = manager, target, config
        self.prior, self.global_step, self.resume = list(history), global_step, resume
        self.run, self.epoch, self.step, self.skip = None, 0, 0, 0
        self.stop_requested = False
        self._best = None  # ((phase, best epoch), file) of the best weights last written

    def finish_call(self):
        """Keep the epochs of the `fine_tune` call that just ended in `history`, when
        another call continues the same run (each call collects its own records)."""
        if self.run is not None:
            self.prior, self.run = self.history, None

    @property
    def history(self):
        """Every epoch record of the run, including those before a resume."""
        return self.prior + (self.run.history if self.run else [])

    def on_phase_begin(self, run):
        self.run, self.skip = run, run.skipped
        if self.resume is not None and run.live:
            self.manager.restore(self.target, self.resume)
        self.resume = None

    def on_epoch_begin(self, epoch, logs=None):
        # Only the first epoch of a resumed phase starts after batches trained before.
        self.epoch, self.step = epoch, self.skip

    def on_train_batch_end(self, batch, logs=None):
        self.global_step += 1
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            last = self.manager.latest()
            raise TransferkitError(
                f"The loss became {float(loss)} at epoch {self.epoch + 1}, step "
                f"{self.step} (phase {self.run.name!r}); training stopped. The last good "
                f"checkpoint is {last['weights'] if last else 'none'} in "
                f"{self.manager.directory}: lower the learning rate and --resume.")
        _test_progress(self.global_step, self.run.name, self.epoch, self.step)
        if self.config.every_steps and self.global_step % self.config.every_steps == 0:
            self.save()
        if self.stop_requested:
            self.save()
            raise SystemExit(128 + signal.SIGTERM)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.step, self.skip = epoch + 1, 0, 0
        self.save()

    def on_phase_end(self, run):
        self.save(phase_complete=True)

    def save(self, phase_complete=False):
        """Write a checkpoint of the target model at the current position."""
        run = self.run
        if not (run.live or run.boundary or phase_complete):
            return None  # the head alone is training on features: nothing to resume
        optimizer = self.target.optimizer
        stopper = None if phase_complete or run.stopper is None else run.stopper.state()
        best_file, best_weights = None, None
        if stopper is not None and stopper.weights is not None:
            key = (run.name, stopper.best_epoch)
            if self._best is None or self._best[0] != key:  # new best: write it once
                self._best = (key, f"best-{self.global_step:08d}.npz")
                best_weights = stopper.weights
            best_file = self._best[1]
        state = {"phase": run.name, "phase_start_epoch": run.start, "epoch": self.epoch,
                 "step": self.step, "global_step": self.global_step,
                 "phase_complete": phase_complete,
                 "optimizer_iterations": int(optimizer.iterations.numpy()),
                 "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                 "freeze_policy": str(run.config.freeze),
                 "trainable_params": count_params(self.target.trainable_weights),
                 "trainable_layers": sum(t for _, t in trainable_signature(self.target)),
                 "early_stopping": None if stopper is None else {
                     "best": stopper.best, "best_epoch": stopper.best_epoch,
                     "wait": stopper.wait},
                 "history": self.history, "time": time.time()}
        return self.manager.save(self.target, state, best_file, best_weights)


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


def _test_sleep(global_step):
    seconds, _, from_step = (os.environ.get(SLEEP_IN_SAVE_ENV) or "0").partition("@")
    if float(seconds) and global_step >= int(from_step or 0):
        time.sleep(float(seconds))


def _test_progress(*fields):
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(" ".join(map(str, fields)) + "\n")
