"""`train(recipe, out_dir)`: one training run, written to a run directory.

Run directory layout (a contract for the CLI, reports, resume and the tuner):

    run.json         the run's identity (run_id, which every checkpoint carries), a
                     record of each resume and the settings changed at it, and
                     "skipped_files" {path: reason} when files failed to decode
    config.json      the resolved RecipeConfig
    class_names.json the class order the model's outputs follow
    scan.json        the data health scan (rejected and converted files)
    history.json     one record per epoch, each with its "phase"
    metrics.json     final validation (and test) metrics
    model.keras      the trained model, written atomically, with its metadata inside
                     (class names, task, input spec, backbone)
    logs/            TensorBoard logs
    report.html      learning curves, samples, confusion matrix (PNGs in report/)
    checkpoints/     the last K checkpoints (weights + optimizer, state JSON) for resume
    worker-<i>/      under multi-worker, the same files from worker i (the chief
                     writes the directory itself)
"""

import dataclasses
import os
import re
import shutil
import time
import uuid
import warnings

import keras

from transferkit.core.errors import ConfigError
from transferkit.core.files import (TEMP_MARK, read_json, read_json_object,
                                   remove_stale_temp_files, write_json)
from transferkit.core.task_registry import get_task
from transferkit.data.augment import augment_config
from transferkit.data.files import undecodable
from transferkit.data.load import load_data
from transferkit.evaluation.evaluate import evaluate_splits
from transferkit.models.backbones import check_weights_path
from transferkit.models.registry import is_model_file, register_backbone
from transferkit.models.saving import save_model
from transferkit.training.cache import FeatureStore
from transferkit.training.checkpoint import (CheckpointConfig, CheckpointManager,
                                             Checkpointer, save_on_sigterm)
from transferkit.training.distribute import (local_copy, make_strategy, per_replica_batch,
                                             precision, prepare_dataset, worker_dir)
from transferkit.training.lr_find import find_lr
from transferkit.training.orchestrator import Position, fine_tune
from transferkit.training.recipe import FIELDS, recipe_from_dict

RUN_FILE = "run.json"
# What `train` writes into a run directory: the only names it ever deletes (on
# overwrite, and the temp files a kill left behind).
RUN_FILES = ("run.json", "config.json", "class_names.json", "scan.json", "history.json",
             "metrics.json", "model.keras", "report.html")
RUN_DIRS = ("logs", "report")
# Recipe keys a resume may change: they do not alter what the run trains on or how.
# Any other change (data, task, classes, batch size, epochs, image size, backbone,
# weights, learning rates, ...) would make the checkpoints mean something else.
RESUME_HARMLESS = ("report", "strategy", "cache_features")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What `train` leaves behind: the run directory, the model and its records."""

    out_dir: str
    model: keras.Model
    history: tuple
    metrics: dict
    class_names: tuple
    skipped_files: dict = dataclasses.field(default_factory=dict)  # path -> reason


def load_run_data(recipe, verbose=True):
    """The `DataSplits` a recipe trains on, at the recipe's input size."""
    source = {"train": recipe.data, "val": recipe.val_data} if recipe.val_data else recipe.data
    return load_data(source, image_size=recipe.input_spec(), batch_size=recipe.batch_size,
                     task=recipe.task, val_split=recipe.val_split,
                     test_split=recipe.test_split, seed=recipe.seed,
                     augment=augment_config(recipe.augment), scan=recipe.scan,
                     class_weights=recipe.class_weights,
                     follow_links=recipe.follow_links, verbose=verbose)


def build_run_model(recipe, num_outputs, *, trusted=False):
    """The model a recipe describes, with `num_outputs` classes (or targets).

    trusted: load a `.keras` weights file without safe mode (only from the caller,
        never from a recipe file)."""
    # The task picks the model: a head on pooled features, or e.g. a U-Net decoder.
    return get_task(recipe.task).build_model(
        recipe.backbone, num_outputs, weights=recipe.weights_arg(),
        image_size=recipe.input_spec(), head=recipe.head_config(),
        decoder_width=recipe.decoder_width, trusted=trusted,
        backbone_kwargs=dict(recipe.backbone_kwargs))


def model_metadata(recipe, class_names):
    """What `model.keras` carries so every command can use it without the run folder."""
    return {"class_names": list(class_names), "task": recipe.task,
            "backbone": recipe.backbone, "input": recipe.input_spec().to_json()}


def train(recipe, out_dir, *, callbacks=(), verbose="auto", resume=False,
          checkpoint=CheckpointConfig(), data_service=None, trusted=False,
          overwrite=False):
    """Run `recipe` (a RecipeConfig) end to end and fill `out_dir`; returns RunResult.

    A directory that already holds a run is refused unless `resume` or `overwrite`.
    resume: continue that run from its newest intact checkpoint (at its phase, epoch,
        step, learning-rate position, trainable flags, optimizer and early-stopping
        state); starts afresh when there is none. Only RESUME_HARMLESS keys of the
        recipe may differ from the run's config.json. overwrite: delete the run's files
        (only those `train` writes) and start a new run. checkpoint: a CheckpointConfig
        (save frequency, how many to keep). data_service: a tf.data service dispatcher
        address. trusted: the `weights` or `backbone` .keras file may run code when
        loaded (see `models.saving.load_model`).
    """
    if resume and overwrite:
        raise ConfigError("Give either `--resume` (continue the run) or `--overwrite` "
                          "(replace it), not both.")
    if trusted and is_model_file(recipe.backbone):
        # Before anything looks the backbone file up (which loads it in safe mode).
        register_backbone(recipe.backbone, trusted=True)
    # Before any slow work, and before touching out_dir: the backbone name, the image
    # size range, and the data and weights paths.
    recipe.input_spec()
    check_recipe_paths(recipe)
    strategy = make_strategy(recipe.strategy)  # first: multi-worker needs a fresh runtime
    per_replica_batch(recipe.batch_size, strategy)  # batch_size is global: check it splits
    out_dir = worker_dir(out_dir, strategy)
    run_id, changed = claim_run(out_dir, recipe, resume=resume, overwrite=overwrite)
    manager = CheckpointManager(os.path.join(out_dir, "checkpoints"), checkpoint.keep,
                                run_id=run_id)
    manager.clean()  # temp files and uncommitted weights a kill left behind
    state = manager.latest() if resume else None
    if resume and state is None and manager.others():
        warnings.warn(f"{manager.directory} holds {manager.others()} checkpoint(s) of "
                      "another run (or from before runs had ids): not loaded; the run "
                      "starts from the beginning.", stacklevel=2)
    write_json(os.path.join(out_dir, "config.json"), recipe.to_dict())
    if changed:
        print(f"resuming with changed settings (recorded in config.json): "
              f"{', '.join(changed)}")
    data = load_run_data(recipe)
    data = dataclasses.replace(
        data, train=prepare_dataset(data.train, strategy, service=data_service),
        val=prepare_dataset(data.val, strategy), test=prepare_dataset(data.test, strategy))
    class_names = list(data.class_names)
    if state is not None:
        check_same_classes(out_dir, class_names)
    write_json(os.path.join(out_dir, "class_names.json"), class_names)
    if data.scan_report is not None:
        data.scan_report.to_json(os.path.join(out_dir, "scan.json"))
    with strategy.scope(), precision(recipe.mixed_precision):
        model = build_run_model(recipe, data.num_classes, trusted=trusted)
    schedule = recipe.schedule_config()
    if recipe.weights_arg() is None and schedule.head.epochs:
        # A frozen random backbone gives near-constant features (MobileNetV2's pooled
        # output is ~1e-12): phase 1 then trains a head on noise. Say so, don't refuse:
        # a from-scratch baseline may want exactly this.
        warnings.warn(f"weights=none with head_epochs={schedule.head.epochs}: phase 1 "
                      "trains the head on a frozen, randomly initialised backbone. For "
                      "training from scratch use --head-epochs 0 --unfreeze none.",
                      stacklevel=2)
    start = Position()
    if state is not None:
        print(f"resuming {out_dir} from {state['weights']}: phase {state['phase']}, "
              f"epoch {state['epoch']}, step {state['step']}")
        start = manager.position(state)
        if state["phase_complete"]:  # the next phase compiles anew: weights only
            manager.restore(model, state, optimizer=False)
    saver = Checkpointer(manager, model, checkpoint,
                         history=state["history"] if state else (),
                         global_step=state["global_step"] if state else 0,
                         resume=None if state is None or state["phase_complete"] else state)
    tensorboard = keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"))
    with strategy.scope(), save_on_sigterm(saver):
        if start is not None:
            # A resumed run trains phase 1 live: its cached features would not know
            # where the interrupted run stood. Phase 2 may use the boundary cache when
            # it starts afresh (the orchestrator decides; mid-phase it runs live).
            cache = recipe.feature_cache(FeatureStore.default())
            if state is not None and cache is not None:
                cache = dataclasses.replace(cache, head=False)
            run = dict(task=recipe.task_config(), cache=cache,
                       callbacks=[tensorboard, saver, *callbacks], verbose=verbose)
            recipe, schedule = _auto_rate(recipe, "head", model, data, schedule, out_dir,
                                          start, run)
            if recipe.finetune_lr_auto and start.phase == "head" and schedule.finetune.epochs:
                # Phase 1 alone first (it may stop early), then phase 2's rate is found
                # from where phase 1 left the model.
                head_only = dataclasses.replace(
                    schedule, finetune=dataclasses.replace(schedule.finetune, epochs=0))
                result = fine_tune(model, data, config=head_only, start=start, **run)
                done = result.history[-1]["epoch"] if result.history else start.epoch
                start = Position("finetune", done, done)
                saver.finish_call()  # the next fine_tune call continues its history
            recipe, schedule = _auto_rate(recipe, "finetune", model, data, schedule,
                                          out_dir, start, run)
            fine_tune(model, data, config=schedule, start=start, **run)
    skipped = name_skipped_files(data, out_dir)
    history = saver.history
    write_json(os.path.join(out_dir, "history.json"), history)
    metrics = evaluate_splits(local_copy(model), data, get_task(recipe.task))
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    save_model(model, os.path.join(out_dir, "model.keras"),
               metadata=model_metadata(recipe, class_names))
    if recipe.report:
        from transferkit.evaluation.report import write_report  # matplotlib at the end

        write_report(out_dir, local_copy(model), data, history)
    return RunResult(out_dir, model, tuple(history), metrics, tuple(class_names), skipped)


def name_skipped_files(data, out_dir):
    """{path: reason} of the files that failed to read or decode during the run (after
    the scan accepted them, or under --no-scan) and were skipped: named in one warning
    and recorded in run.json "skipped_files". Only when images went missing are the
    files checked, so a run without failures pays nothing for it."""
    watch = data.skipped
    if watch is None or not (watch.missing() or watch.named):
        return {}
    bad = dict(watch.named)
    if watch.missing():
        bad.update(undecodable(data.example_files()))
    if not bad:
        print(f"warning: {watch.missing()} image(s) failed to read or decode during "
              "training and were skipped; their files decode now (changed again?), so "
              "none can be named.")
        return {}
    # Printed, like the scan's report: a warning would be hidden by warning filters.
    print(f"warning: {len(bad)} file(s) failed to read or decode during training and "
          "were skipped (recorded in run.json):\n  " + "\n  ".join(
              f"{path}: {reason}" for path, reason in sorted(bad.items())))
    path = os.path.join(out_dir, RUN_FILE)
    info = read_json(path, "run file") or {}
    write_json(path, {**info, "skipped_files": bad})
    return bad


def check_recipe_paths(recipe):
    """Raise ConfigError/WeightsError if the recipe's data or weights file is missing."""
    for key in ("data", "val_data"):
        path = getattr(recipe, key)
        if path and not path.startswith("tfds:") and not os.path.exists(path):
            raise ConfigError(f"The `{key}` argument should be a folder of class "
                              f"subfolders, a CSV file or tfds:NAME. Received: "
                              f"{key}={path!r} (no such file or folder)")
    weights = recipe.weights_arg()
    if weights is not None and weights != "imagenet":
        check_weights_path(weights)


def holds_run(out_dir):
    """Whether `out_dir` holds a run with something to lose: a model or a checkpoint
    (a run stopped before either, e.g. by a data error, can simply be started again)."""
    if os.path.lexists(os.path.join(out_dir, "model.keras")):
        return True
    folder = os.path.join(out_dir, "checkpoints")
    return os.path.isdir(folder) and any(name.endswith(".json")
                                         for name in os.listdir(folder))


def claim_run(out_dir, recipe, *, resume=False, overwrite=False):
    """Make `out_dir` this run's directory; returns (run_id, keys changed at resume).

    Refuses a directory holding a run unless `resume` (then only RESUME_HARMLESS keys
    may differ from its config.json) or `overwrite` (then its files are deleted)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"The `--out` argument should be a directory. Received: "
                          f"out={out_dir} (a file)")
    if holds_run(out_dir) and not (resume or overwrite):
        raise ConfigError(
            f"{out_dir} already holds a run. Pass --resume to continue it, --overwrite "
            "to replace it (resume=True / overwrite=True in the API), or choose another "
            "--out.")
    if not resume:  # a new run: nothing of an earlier one may survive into it
        remove_run(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    _remove_temp_files(out_dir)
    remove_stale_temp_files(os.path.join(out_dir, "report"))  # a kill mid-report
    path = os.path.join(out_dir, RUN_FILE)
    info = read_json(path, "run file") if resume else None
    changed = []
    if resume and os.path.exists(os.path.join(out_dir, "config.json")):
        saved = recipe_from_dict(read_json_object(os.path.join(out_dir, "config.json"),
                                                  "run config"))
        changed = [k for k in FIELDS if not _same(getattr(saved, k), getattr(recipe, k))]
        meaning = [k for k in changed if k not in RESUME_HARMLESS]
        if meaning:
            key = meaning[0]
            raise ConfigError(
                f"--resume cannot change {', '.join(repr(k) for k in meaning)}: the run "
                f"in {out_dir} was made with {key}={getattr(saved, key)!r}, given "
                f"{key}={getattr(recipe, key)!r}. Changing it would make the checkpoints "
                f"mean something else; start a new run (another --out, or --overwrite). "
                f"Keys a resume may change: {', '.join(RESUME_HARMLESS)}.")
    if not isinstance(info, dict) or not isinstance(info.get("run_id"), str):
        info = {"run_id": uuid.uuid4().hex, "created": time.time(), "resumes": []}
    if resume:
        info.setdefault("resumes", []).append({"time": time.time(), "changed": {
            k: getattr(recipe, k) for k in changed}})
    write_json(path, info)
    return info["run_id"], changed


def _same(saved, given):
    # A path spelled another way (relative, through a link) is the same setting.
    if saved == given:
        return True
    return (isinstance(saved, str) and isinstance(given, str) and os.path.exists(saved)
            and os.path.exists(given) and os.path.realpath(saved) == os.path.realpath(given))


def is_run_dir(path):
    """Whether `path` is a run directory (`train` wrote it), for commands that must not
    write their own model.keras or report.html over a run's."""
    return os.path.isfile(os.path.join(path, RUN_FILE)) or holds_run(path) and all(
        os.path.isfile(os.path.join(path, n)) for n in ("config.json", "class_names.json"))


def check_same_classes(out_dir, class_names):
    """Refuse a resume whose data has other classes (or another order) than the run."""
    saved = read_json(os.path.join(out_dir, "class_names.json"), "class names file")
    if saved is not None and list(saved) != list(class_names):
        raise ConfigError(f"--resume cannot change the classes: the run in {out_dir} has "
                          f"{saved}, the data now gives {list(class_names)}.")


def remove_run(out_dir):
    """Delete what `train` wrote into `out_dir` (and nothing else); a no-op unless the
    folder holds a run or its run.json, so `--out` at a folder of other things is safe."""
    if not (os.path.isfile(os.path.join(out_dir, RUN_FILE)) or holds_run(out_dir)):
        return
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path) or os.path.islink(path):
            os.remove(path)
    for name in RUN_DIRS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
    CheckpointManager(os.path.join(out_dir, "checkpoints")).clear()


def _remove_temp_files(out_dir):
    # atomic_path's temp names for the run files: ".<base>.<random>.tmp<ext>"
    bases = "|".join(re.escape(os.path.splitext(n)[0]) for n in RUN_FILES)
    pattern = re.compile(rf"\.({bases})\.[^/]*{re.escape(TEMP_MARK)}\.[a-z]+")
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if pattern.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)


def _auto_rate(recipe, phase, model, data, schedule, out_dir, start, run):
    """With `<phase>_lr_auto`, when `phase` is about to start from its beginning: run
    the LR range test, take its suggestion, and record it in config.json (auto off), so
    a resumed run keeps the same rate. Returns (recipe, schedule)."""
    settings = schedule.phase(phase)
    starts_now = start.phase == phase and start.epoch == start.phase_start and not start.step
    if not (getattr(recipe, f"{phase}_lr_auto") and settings.epochs and starts_now):
        return recipe, schedule
    finding = find_lr(model, data, phase=phase, config=schedule, task=run["task"],
                      cache=run["cache"], verbose=run["verbose"])
    finding.save(out_dir, f"lr_find_{phase}")
    print(f"{phase} learning rate: {finding.reason}")
    recipe = dataclasses.replace(recipe, **{f"{phase}_lr": finding.suggestion,
                                            f"{phase}_lr_auto": False})
    write_json(os.path.join(out_dir, "config.json"), recipe.to_dict())
    return recipe, recipe.schedule_config()


def find_lr_for_recipe(recipe, out_dir, *, phase="finetune", min_lr=1e-7, max_lr=1.0,
                       steps=100, trusted=False, store=None, name="lr_find",
                       verbose="auto"):
    """The range test of `recipe`'s `phase`, written to `out_dir` (`<name>.json`,
    `<name>.png`, name "lr_find" by default); returns the `LRFinding`. For "finetune",
    phase 1 runs first (on cached features when the recipe caches them: seconds), as the
    rate is phase 2's from there. trusted: as for `train`. store: the FeatureStore of
    the feature cache (default: `FeatureStore.default()`)."""
    data = load_run_data(recipe, verbose=bool(verbose))
    model = build_run_model(recipe, data.num_classes, trusted=trusted)
    schedule = recipe.schedule_config()
    cache = recipe.feature_cache(store or FeatureStore.default())
    if phase == "finetune" and schedule.head.epochs:
        fine_tune(model, data, config=schedule, task=recipe.task, cache=cache,
                  stop_epoch=schedule.head.epochs, verbose=verbose)
    finding = find_lr(model, data, phase=phase, config=schedule, task=recipe.task,
                      cache=cache, min_lr=min_lr, max_lr=max_lr, steps=steps,
                      verbose=verbose)
    finding.save(out_dir, name)
    return finding


def read_history(out_dir):
    """The per-epoch records of a run directory."""
    return read_json(os.path.join(out_dir, "history.json"), "run history") or []
