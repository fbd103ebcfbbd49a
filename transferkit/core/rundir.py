"""`RunDir`: the one object that owns a run directory, its file names, who may write it
and how it resumes (as fastai's `Learner.path` or Keras's `BackupAndRestore` own theirs).

Layout (a contract for the CLI, reports, resume and the tuner):

    run.json         the run's identity (run_id, which every checkpoint carries), a
                     record of each resume and the settings changed at it, and
                     "skipped_files" {path: reason} when files failed to decode
    config.json      the resolved recipe (nested JSON)
    class_names.json the class order the model's outputs follow
    scan.json        the data health scan (rejected and converted files)
    history.json     one record per epoch, each with its "phase"
    metrics.json     final validation (and test) metrics
    model.keras      the trained model, written atomically, with its metadata inside
                     (class names, task, input spec, backbone)
    lr_find_<phase>.json/.png  the range test of a phase with `lr_auto`
    logs/            TensorBoard logs
    report.html      learning curves, samples, confusion matrix (PNGs in report/)
    checkpoints/     the last K checkpoints (weights + optimizer, state JSON) for resume
    worker-<i>/      under multi-worker, the same files from worker i (the chief
                     writes the directory itself)

The names are this module's constants, and nothing else spells them (a test scans the
package): a command writing a report elsewhere (`evaluate --out`, the demo) names it
with `REPORT_FILE` / `REPORT_DIR` too, and `lr-find --out` its files with `lr_find_name`.

    run = RunDir("runs/pets")
    run_id, changed = run.claim(recipe.flat(), resume=True, may_change=("report",))
    run.write_history(records); run.read_metrics()

Every file is written atomically (`core.files`). Only the names above are ever deleted,
so `--out` at a folder holding other things is safe.
"""

import dataclasses
import os
import re
import shutil
import time
import uuid

from transferkit.core.errors import ConfigError
from transferkit.core.files import (TEMP_MARK, read_json, read_json_object,
                                   remove_stale_temp_files, write_json)
from transferkit.core.schema import Any, Int, List, Map, Nullable, Num, Obj, Str, check

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
CLASS_NAMES_FILE = "class_names.json"
SCAN_FILE = "scan.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
REPORT_FILE = "report.html"
LOGS_DIR, REPORT_DIR, CHECKPOINTS_DIR = "logs", "report", "checkpoints"
LR_FIND = "lr_find"  # the range test's record and plot: lr_find[_<phase>].json / .png
WORKER_DIR = "worker-{}"  # a multi-worker run's worker i writes into worker-<i>/
# What `train` writes into a run directory: the only names it ever deletes (on
# overwrite, and the temp files a kill left behind). Checkpoint files are deleted by
# the `clear_checkpoints` a RunDir is given: their names belong to the checkpoint code.
RUN_FILES = (RUN_FILE, CONFIG_FILE, CLASS_NAMES_FILE, SCAN_FILE, HISTORY_FILE,
             METRICS_FILE, MODEL_FILE, REPORT_FILE)
RUN_DIRS = (LOGS_DIR, REPORT_DIR)

# Wall and CPU seconds, as `core.timing.StageTimer.to_json` records a stage.
_SECONDS = Obj({"wall": Num(min=0), "cpu": Num(min=0)}, required=("wall", "cpu"))
# What run.json may hold, checked field by field when it is read (`core.schema`).
RUN_SCHEMA = Obj({
    "run_id": Str(nonempty=True),
    "created": Num(min=0),
    "resumes": List(Obj({"time": Num(min=0), "changed": Map()})),
    "skipped_files": Map(Str()),  # path -> reason
    "fixes": Nullable(Obj({"path": Str(), "sha256": Str(), "relabel": Int(min=0),
                           "exclude": Int(min=0), "not_in_data": List(Str())})),
    "tta": Map(),  # the flip-TTA decision record
    "derived_from": Map(),  # add-class: the run and data a run was made from
    "warnings": List(Obj({"step": Str(), "error": Str()}, required=("step", "error"))),
    # Where the run's time went (`core.timing`): the total, each stage, and the work
    # done in a thread beside them.
    "stages": Obj({"total": _SECONDS, "stages": Map(_SECONDS), "background": Map(_SECONDS)},
                  required=("total", "stages")),
})
CLASS_NAMES_SCHEMA = List(Str(), unique=True)
HISTORY_SCHEMA = List(Map())
METRICS_SCHEMA = Map(Any())


def lr_find_name(phase=None):
    """The base name of a range test's files (+ ".json", ".png"): `lr_find_<phase>` for
    a phase's test inside a run or a tuning directory, `lr_find` on its own."""
    return f"{LR_FIND}_{phase}" if phase else LR_FIND


def lr_find_plot(out_dir, phase=None):
    """The path of the range test's plot in `out_dir` (see `lr_find_name`)."""
    return os.path.join(out_dir, f"{lr_find_name(phase)}.png")


def worker_path(out_dir, task_id):
    """Where worker `task_id` of a multi-worker run writes (the chief: `out_dir`)."""
    return os.path.join(out_dir, WORKER_DIR.format(task_id))


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The run directory at `path`.

    clear_checkpoints: a function of the checkpoints folder that deletes the checkpoint
        files in it, called when a new run replaces an old one (default None: the
        checkpoints are left; `app.train` passes the checkpoint manager's `clear`).
    """

    path: str
    clear_checkpoints: object = None

    def __post_init__(self):
        object.__setattr__(self, "path", os.path.expanduser(os.fspath(self.path)))

    def file(self, name):
        """The path of `name` (e.g. MODEL_FILE) inside the run directory."""
        return os.path.join(self.path, name)

    @property
    def model_file(self):
        return self.file(MODEL_FILE)

    @property
    def config_file(self):
        return self.file(CONFIG_FILE)

    @property
    def scan_file(self):
        return self.file(SCAN_FILE)

    @property
    def logs(self):
        return self.file(LOGS_DIR)

    @property
    def report_file(self):
        return self.file(REPORT_FILE)

    @property
    def report_dir(self):
        return self.file(REPORT_DIR)

    @property
    def checkpoints(self):
        return self.file(CHECKPOINTS_DIR)

    # What the folder holds ----------------------------------------------------------

    def holds_run(self):
        """Whether the folder holds a run with something to lose: a model or a checkpoint
        (a run stopped before either, e.g. by a data error, can simply be started again)."""
        if os.path.lexists(self.model_file):
            return True
        folder = self.checkpoints
        return os.path.isdir(folder) and any(name.endswith(".json")
                                             for name in os.listdir(folder))

    def is_run_dir(self):
        """Whether `train` wrote the folder, for commands that must not write their own
        model.keras or report.html over a run's."""
        return os.path.isfile(self.file(RUN_FILE)) or self.holds_run() and all(
            os.path.isfile(self.file(n)) for n in (CONFIG_FILE, CLASS_NAMES_FILE))

    # Claiming it for a run ------------------------------------------------------------

    def claim(self, config, *, resume=False, overwrite=False, may_change=(),
              read_config=None, resumable=True):
        """Make the folder this run's directory; returns (run_id, keys changed at resume).

        config: the run's settings as a flat {key: value} dict. A folder holding a run
        is refused unless `resume` (then only keys in `may_change` may differ from its
        config.json, see `check_resume`) or `overwrite` (then the old run's files are
        deleted, see `remove`). read_config: turns the saved config.json into the same
        flat form (default: used as read). Temp files a kill left are removed; run.json
        gets a new run_id, or on resume a record of the keys changed. resumable: the
        command can resume (its refusal then suggests --resume; default True).
        """
        changed = self.check_claim(config, resume=resume, overwrite=overwrite,
                                   may_change=may_change, read_config=read_config,
                                   resumable=resumable)
        if not resume:  # a new run: nothing of an earlier one may survive into it
            self.remove()
        os.makedirs(self.path, exist_ok=True)
        self.remove_temp_files()
        info = self.read_info() if resume else None
        if not isinstance(info, dict) or not isinstance(info.get("run_id"), str):
            info = {"run_id": uuid.uuid4().hex, "created": time.time(), "resumes": []}
        if resume:
            info.setdefault("resumes", []).append({"time": time.time(), "changed": {
                k: config[k] for k in changed}})
        write_json(self.file(RUN_FILE), info)
        return info["run_id"], changed

    def check_claim(self, config, *, resume=False, overwrite=False, may_change=(),
                    read_config=None, resumable=True):
        """What `claim` checks, without writing anything (so a command can refuse
        before any slow work): returns the keys a resume changes; raises ConfigError
        as `claim` would."""
        if resume and overwrite:
            raise ConfigError("Give either `--resume` (continue the run) or `--overwrite` "
                              "(replace it), not both.")
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ConfigError(f"The `--out` argument should be a directory. Received: "
                              f"out={self.path} (a file)")
        if self.holds_run() and not (resume or overwrite):
            if resumable:
                raise ConfigError(
                    f"{self.path} already holds a run. Pass --resume to continue it, "
                    "--overwrite to replace it (resume=True / overwrite=True in the API), "
                    "or choose another --out.")
            raise ConfigError(f"{self.path} already holds a run. Pass --overwrite to "
                              "replace it (overwrite=True in the API), or choose another "
                              "--out.")
        saved = self.read_config() if resume else None
        if saved is None:
            return []
        if read_config:
            try:
                saved = read_config(saved)
            except ConfigError as error:
                raise ConfigError(f"The run config {self.config_file} is not valid: "
                                  f"{error}") from None
        return self.check_resume(saved, config, may_change)

    def check_resume(self, saved, given, may_change=()):
        """The keys whose values differ between the run's `saved` and the `given`
        settings (flat {key: value} dicts); raises ConfigError naming them unless all
        are in `may_change` (any other change would make the checkpoints mean
        something else). A path spelled another way is the same setting."""
        changed = [k for k in saved if not _same(saved[k], given.get(k))]
        meaning = [k for k in changed if k not in may_change]
        if meaning:
            key = meaning[0]
            raise ConfigError(
                f"--resume cannot change {', '.join(repr(k) for k in meaning)}: the run "
                f"in {self.path} was made with {key}={saved[key]!r}, given "
                f"{key}={given.get(key)!r}. Changing it would make the checkpoints "
                f"mean something else; start a new run (another --out, or --overwrite). "
                f"Keys a resume may change: {', '.join(may_change)}.")
        return changed

    def check_classes(self, class_names):
        """Refuse a resume whose data has other classes (or another order) than the run."""
        saved = self.read_class_names()
        if saved is not None and list(saved) != list(class_names):
            raise ConfigError(f"--resume cannot change the classes: the run in "
                              f"{self.path} has {saved}, the data now gives "
                              f"{list(class_names)}.")

    def remove(self):
        """Delete what `train` wrote into the folder (and nothing else); a no-op unless
        the folder holds a run or its run.json, so a folder of other things is safe."""
        if not (os.path.isfile(self.file(RUN_FILE)) or self.holds_run()):
            return
        for name in RUN_FILES:
            path = self.file(name)
            if os.path.isfile(path) or os.path.islink(path):
                os.remove(path)
        for name in RUN_DIRS:
            path = self.file(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
        if self.clear_checkpoints is not None:
            self.clear_checkpoints(self.checkpoints)

    def remove_temp_files(self):
        """Delete the temp files a kill mid-write left: of the run's own files (by name)
        and in report/ (those of dead writers)."""
        # atomic_path's temp names for the run files: ".<base>.<random>.tmp<ext>"
        bases = "|".join(re.escape(os.path.splitext(n)[0]) for n in RUN_FILES)
        pattern = re.compile(rf"\.({bases})\.[^/]*{re.escape(TEMP_MARK)}\.[a-z]+")
        for name in os.listdir(self.path):
            path = self.file(name)
            if pattern.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)
        remove_stale_temp_files(self.file(REPORT_DIR))

    # The records ----------------------------------------------------------------------

    def read_info(self):
        """run.json ({run_id, created, resumes, skipped_files?, ...}: RUN_SCHEMA), or
        None; a file that does not fit the schema is a ConfigError naming the field."""
        return self._read(RUN_FILE, "run file", RUN_SCHEMA)

    def _read(self, name, what, schema):
        path = self.file(name)
        value = read_json(path, what)
        return None if value is None else check(value, schema, f"{what} {path}")

    def record_skipped(self, skipped):
        """Record {path: reason} of files skipped during training in run.json."""
        self.record("skipped_files", dict(skipped))

    def record(self, key, value):
        """Set `key` of run.json to `value` (JSON-able), keeping the rest."""
        write_json(self.file(RUN_FILE), {**(self.read_info() or {}), key: value})

    def read_config(self):
        """The config.json object, or None when there is none."""
        if not os.path.exists(self.config_file):
            return None
        return read_json_object(self.config_file, "run config")

    def write_config(self, config):
        write_json(self.config_file, config)

    def read_class_names(self):
        """The class names (a list of distinct strings), or None."""
        return self._read(CLASS_NAMES_FILE, "class names file", CLASS_NAMES_SCHEMA)

    def write_class_names(self, class_names):
        write_json(self.file(CLASS_NAMES_FILE), list(class_names))

    def read_history(self):
        """The per-epoch records (a list; empty when there is no history.json)."""
        return self._read(HISTORY_FILE, "run history", HISTORY_SCHEMA) or []

    def write_history(self, records):
        write_json(self.file(HISTORY_FILE), list(records))

    def read_metrics(self):
        """{split: metrics} of the finished run, or None."""
        return self._read(METRICS_FILE, "run metrics", METRICS_SCHEMA)

    def write_metrics(self, metrics):
        write_json(self.file(METRICS_FILE), metrics)


def _same(saved, given):
    # A path spelled another way (relative, through a link) is the same setting.
    if saved == given:
        return True
    return (isinstance(saved, str) and isinstance(given, str) and os.path.exists(saved)
            and os.path.exists(given) and os.path.realpath(saved) == os.path.realpath(given))
