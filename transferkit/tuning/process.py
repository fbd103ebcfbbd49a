"""Each tuning trial in a fresh Python process, so memory cannot grow across trials.

`keras.backend.clear_session()` between trials (which keras-tuner already does) does
not stop the growth: TensorFlow keeps ~50-80 MiB per built-and-trained MobileNetV2 even
in a plain Keras loop with clear_session and gc (benchmarks/tuning_memory.py). A
process that exits returns everything, at the price of one TensorFlow import per trial
(seconds, next to trials of minutes).

The parent keeps keras-tuner's oracle, trial files and checkpoints as usual; the child
gets a JSON job (base recipe, space, the trial's hyperparameters, Hyperband's epoch span
and warm-start checkpoint), builds and fits through `TransferHyperModel` (in
`tuning.trial`), writes the
trial's checkpoint and returns the metrics as JSON. Phase-1 features are shared through
the out directory's file-backed feature cache.
"""

import json
import os
import subprocess
import sys
import tempfile

from transferkit.core.errors import TransferkitError


class IsolatedTrials:
    """Mixin for a keras-tuner `Tuner` whose hypermodel is a `TransferHyperModel`.

    Callbacks passed to `search()` stay in the parent and are not run (they cannot
    cross a process boundary); keras-tuner's own checkpointing is done by the child.
    """

    def run_trial(self, trial, *args, callbacks=(), verbose=None, **kwargs):
        hp = trial.hyperparameters
        hypermodel = self.hypermodel
        values = hp.values
        job = {"base": hypermodel.base.to_dict(), "space": hypermodel.space.to_dict(),
               "hp": hp.get_config(), "checkpoint": self._get_checkpoint_fname(trial.trial_id),
               "store": hypermodel.store.directory,
               "verbose": hypermodel.verbose if verbose is None else verbose,
               # Hyperband: the span of the trial's epoch timeline and, for a continued
               # trial, the checkpoint it starts from.
               "epochs": values.get("tuner/epochs"),
               "initial_epoch": values.get("tuner/initial_epoch", 0),
               "warm_start": (self._get_checkpoint_fname(values["tuner/trial_id"])
                              if "tuner/trial_id" in values else None)}
        return run_in_process(job)


def run_in_process(job, timeout=None):
    """Run one trial `job` (see `_trial`) in a child Python; returns its metrics dict."""
    with tempfile.TemporaryDirectory(prefix="transferkit-trial-") as work:
        job_path, result_path = (os.path.join(work, n) for n in ("job.json", "result.json"))
        with open(job_path, "w") as f:
            json.dump(job, f)
        # The child must import this package: put its parent folder on the path.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        # Not a distributed tuner itself: the parent talks to the chief.
        for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
            env.pop(key, None)
        done = subprocess.run([sys.executable, "-m", "transferkit.tuning.trial", job_path,
                               result_path], env=env, timeout=timeout,
                              stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        if done.returncode != 0 or not os.path.exists(result_path):
            raise TransferkitError(f"The trial process exited with code {done.returncode}:"
                                   f"\n{done.stderr[-4000:]}")
        with open(result_path) as f:
            return json.load(f)


def _die_with_parent():
    # A killed tuner must not leave its trial training on as an orphan: Linux delivers
    # SIGKILL to the child when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere the
    # child finishes its trial and exits.
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
