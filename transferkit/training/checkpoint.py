"""Crash-safe checkpoints, and the `Position` a run resumes from.

A checkpoint is files in `<run>/checkpoints/`: `ckpt-<step>.weights.h5` (model weights
*and* optimizer variables, as Keras' `save_weights` writes them), the early-stopping
phase's best weights `best-<step>.npz` when they changed, and `ckpt-<step>.json`, the
state: phase, epoch, step within the epoch, the optimizer's iteration count (the
learning-rate schedule's position), the early-stopping state, the freeze policy, the
trainable parameter count and the per-epoch history so far. Every file is written
atomically (temp file, fsync, rename) and the JSON goes last, so it is the commit mark:
a kill at any moment leaves the previous checkpoint whole. The last `keep` are kept.

Ownership and damage: each state carries its run's id (a manager made with `run_id`
sees only that run's checkpoints) and the size and SHA-256 of the files it refers to;
`latest()` skips (and reports) a state whose files are missing, torn or altered and
falls back to the previous one. File names in a state must be names this module makes,
so a state never points outside the folder, and only such names are ever deleted.

Resume: `position(state)` says where the orchestrator restarts; the `Checkpointer`
loads weights and optimizer once the model is frozen and compiled for that phase.
"""

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import sys
import time
import warnings

import keras
import numpy as np

from transferkit.core.errors import TransferkitError
from transferkit.core.files import (MAX_JSON_BYTES, TEMP_MARK, atomic_path, read_regular_file,
                                    write_json)
from transferkit.core.timing import stage
# The config lives in the light `training.config`; importable from here as before.
from transferkit.training.config import PHASES, CheckpointConfig
from transferkit.training.freezing import count_params, trainable_signature
from transferkit.training.orchestrator import PhaseCallback, Position, StopperState

FORMAT = 3
# The only names the manager writes, reads and deletes (a state naming anything else
# is refused: its paths would leave the folder or hit files the manager never made).
STATE_NAME = re.compile(r"ckpt-\d{8}\.json")
FILE_NAMES = {"weights": re.compile(r"ckpt-\d{8}\.weights\.h5"),
              "best_weights": re.compile(r"best-\d{8}\.npz")}
# atomic_path's temp files for those names: ".<base>.<random>.tmp<ext>"
TEMP_NAME = re.compile(rf"\.(ckpt|best)-\d{{8}}(\.weights)?\.[^/]*"
                       rf"{re.escape(TEMP_MARK)}[.a-z0-9]*")


class CheckpointManager:
    """Writes, lists, prunes and restores the checkpoints of one directory.

    run_id: the run these checkpoints belong to; states of other runs (or of none) are
        invisible to `states`, `latest` and `prune` (None: any run's, e.g. to `clear`
        a folder before an overwrite).
    """

    def __init__(self, directory, keep=CheckpointConfig.keep, run_id=None):
        self.directory, self.keep, self.run_id = os.fspath(directory), keep, run_id

    def _path(self, name):
        return os.path.join(self.directory, name)

    def save(self, model, state, best_file=None, best_weights=None):
        """Write weights + optimizer, `best_weights` (a list of arrays) to `best_file`
        if given, then the state JSON (which refers to `best_file` and records the
        files' sizes and checksums); prune to the last `keep`. Returns the weights
        path."""
        name = f"ckpt-{state['global_step']:08d}"
        with atomic_path(self._path(name + ".weights.h5")) as tmp:
            model.save_weights(tmp)
        if best_weights is not None:
            with atomic_path(self._path(best_file)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, *best_weights)
        files = {"weights": name + ".weights.h5", "best_weights": best_file}
        digests = {files[k]: _digest(self._path(files[k])) for k in files if files[k]}
        write_json(self._path(name + ".json"), {**state, **files, "files": digests,
                                                "run_id": self.run_id, "format": FORMAT})
        self.prune()
        return self._path(files["weights"])

    def _read_states(self, any_run=False):
        """(state, problem) for every state JSON, oldest first; problem is None for a
        usable state (own run, names this module makes, files present, sizes match)."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if STATE_NAME.fullmatch(n))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:  # a regular file, read non-blocking: a FIFO here cannot hang a resume
                state = json.loads(read_regular_file(self._path(name), MAX_JSON_BYTES))
            except (OSError, ValueError, RecursionError) as error:
                out.append(({"name": name}, f"unreadable ({error})"))
                continue
            if not isinstance(state, dict):
                out.append(({"name": name}, "not a checkpoint state"))
                continue
            state["name"] = name
            if not any_run and self.run_id is not None and state.get("run_id") != self.run_id:
                continue  # another run's checkpoint: not ours to load or prune
            out.append((state, _problem(self.directory, state)))
        return out

    def others(self):
        """How many states in the folder belong to another run (or to no run id)."""
        own = {s["name"] for s, _ in self._read_states()}
        return sum(s["name"] not in own for s, _ in self._read_states(any_run=True))

    def states(self):
        """Every usable state of this run, oldest first (sizes checked, not checksums)."""
        return [state for state, problem in self._read_states() if problem is None]

    def latest(self):
        """The newest state of this run whose files are whole (checksums verified), or
        None. Newer states that are damaged are reported (a warning) and skipped."""
        for state, problem in reversed(self._read_states()):
            if problem is None:
                problem = _verify(self.directory, state)
            if problem is None:
                return state
            warnings.warn(f"Checkpoint {self._path(state['name'])} is damaged ({problem}); "
                          "falling back to the previous one.", stacklevel=2)
        return None

    def prune(self):
        """Delete all but the newest `keep` checkpoints, and best-weights files no kept
        state refers to. The JSON goes first: a kill in between leaves an orphan
        weights file, never a state that points at nothing."""
        states = self.states()
        kept = {state[k] for state in states[-self.keep:] for k in _files(state)}
        for state in states[:-self.keep]:
            for file in [state["name"]] + [state[k] for k in _files(state)]:
                if file not in kept:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self._path(file))

    def clean(self):
        """Remove temp files of writes a kill interrupted, and weights no state (of any
        run) refers to. Only names this module makes are touched."""
        committed = {s[k] for s, _ in self._read_states(any_run=True) for k in _files(s)
                     if FILE_NAMES[k].fullmatch(str(s[k]))}
        for name in self._own_names():
            if TEMP_NAME.fullmatch(name) or (not STATE_NAME.fullmatch(name)
                                             and name not in committed):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self._path(name))

    def clear(self):
        """Delete every checkpoint file this module could have written (any run's), and
        the folder if that leaves it empty: for `train(..., overwrite=True)`."""
        for name in self._own_names():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(name))
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)

    def _own_names(self):
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        patterns = (STATE_NAME, TEMP_NAME, *FILE_NAMES.values())
        return [n for n in names if any(p.fullmatch(n) for p in patterns)
                and os.path.isfile(self._path(n)) and not os.path.islink(self._path(n))]

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
                        stopper, cached=state.get("cached", False))

    def restore(self, model, state, *, optimizer=True):
        """Load a checkpoint's weights into `model`; with `optimizer`, also its optimizer
        state, into a model compiled for the state's phase (checked, not assumed)."""
        path = self._path(state["weights"])
        if not optimizer:
            _load_weights(model, path)  # an uncompiled model: the weights alone
            return
        model.optimizer.build(model.trainable_variables)
        _load_weights(model, path)
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


def _digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return {"size": os.path.getsize(path), "sha256": sha.hexdigest()}


def _problem(directory, state):
    """Why `state` cannot be used without reading its files (None: it can)."""
    for key in ("phase", "epoch", "step", "global_step", "phase_complete", "weights"):
        if key not in state:
            return f"no {key!r}"
    for key in _files(state):
        name = state[key]
        if not (isinstance(name, str) and FILE_NAMES[key].fullmatch(name)):
            return f"{key}={name!r} is not a checkpoint file name"
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        expected = (state.get("files") or {}).get(name)
        if expected and os.path.getsize(path) != expected.get("size"):
            return f"{name} has {os.path.getsize(path)} bytes, {expected.get('size')} saved"
    return None


def _verify(directory, state):
    """Why the files of `state` differ from what was saved (None: they are whole)."""
    for key in _files(state):
        name = state[key]
        expected = (state.get("files") or {}).get(name)
        if expected and _digest(os.path.join(directory, name)) != expected:
            return f"{name} changed since it was saved (checksum)"
    return None


def _load_weights(model, path):
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        raise TransferkitError(f"Cannot load checkpoint weights {path}: {error}") from None


class Checkpointer(PhaseCallback):
    """Saves every N steps, at the ends of live epochs and at each phase's end; stops
    on NaN loss.

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
        self.stop_requested = False  # or the number of the signal that asked to stop
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
        if self.config.every_steps and self.global_step % self.config.every_steps == 0:
            self.save()
        if self.stop_requested:
            path = self.save()
            signum = self.stop_requested
            signum = signal.SIGTERM if isinstance(signum, bool) else signum
            saved = f"checkpoint {path}" if path else "no checkpoint (phase 1 on cached " \
                "features saves at its end)"
            print(f"stopped by {signal.Signals(signum).name}: {saved}; continue with "
                  "--resume", file=sys.stderr)
            raise SystemExit(128 + signum)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.step, self.skip = epoch + 1, 0, 0
        if self.run.live:
            self.save()
        # On cached tensors an epoch costs less than writing the full model and its
        # optimizer (Lite0: 26 MB and more, every epoch), and a run killed mid-phase
        # does better to redo the phase from its start on the cache (seconds) than to
        # resume it live from a mid-phase checkpoint: the phase saves at its end
        # (`every_steps` and SIGTERM still save mid-phase).

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
                 "cached": run.boundary,  # sized for cached tensors (PhaseConfig.on_cache)
                 "optimizer_iterations": int(optimizer.iterations.numpy()),
                 "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                 "freeze_policy": str(run.config.freeze),
                 "trainable_params": count_params(self.target.trainable_weights),
                 "trainable_layers": sum(t for _, t in trainable_signature(self.target)),
                 "early_stopping": None if stopper is None else {
                     "best": stopper.best, "best_epoch": stopper.best_epoch,
                     "wait": stopper.wait},
                 "history": self.history, "time": time.time()}
        with stage("checkpointing"):
            return self.manager.save(self.target, state, best_file, best_weights)


@contextlib.contextmanager
def save_on_sigterm(checkpointer):
    """While inside, SIGTERM or Ctrl-C (SIGINT) saves a checkpoint at the next batch end,
    then exits 128 + the signal (143, 130). A second Ctrl-C interrupts at once.

    A flag, not a save in the handler: the handler can fire mid-step, when the weights
    are half updated. Outside the main thread signals cannot be caught; then a no-op.
    """
    def handler(signum, frame):
        if signum == signal.SIGINT and checkpointer.stop_requested:
            raise KeyboardInterrupt  # asked twice: stop now (the last checkpoint stands)
        checkpointer.stop_requested = signum
        if signum == signal.SIGINT:
            print("\nstopping at the end of this batch, after a checkpoint (Ctrl-C again "
                  "to stop now)", file=sys.stderr, flush=True)

    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:
        pass  # not the main thread
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)

