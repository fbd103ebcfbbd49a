"""`train(recipe, out_dir)`: one training run, written to a run directory.

The run directory (its files, who may write it, how it resumes) is `core.rundir.RunDir`.
`train` reads as four steps, each a function here:

1. `prepare`: check the recipe, claim the run directory, load the data;
2. `build`: the model, and where training starts (a resume's checkpoint);
3. `run_schedule`: one `fine_tune` call from there, with checkpoints, TensorBoard and
   the LR finder (`AutoLR`, for phases with `lr_auto`) as its hooks;
4. `finish`: model.keras first, then the optional end steps (the flip-TTA decision,
   metrics, the novelty score, report.html), each a warning if it fails.

Every input (data, validation data, fixes, unknown-data images, weights) is read and
checked in `prepare` before anything is written to the run directory, and a trained
model is on disk before any step that could fail after training.
"""

import dataclasses
import os
import warnings

import keras
import numpy as np

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.core.task_registry import get_task
from transferkit.core.timing import StageTimer, format_summary, in_background, stage
from transferkit.data.fixes import read_fixes
from transferkit.data.files import folder_dataset, list_images, undecodable
from transferkit.data.pipeline import make_dataset
from transferkit.data.splits import stratified_sample
from transferkit.evaluation.evaluate import (evaluate_splits, flip_outputs, flip_record,
                                             predict_outputs)
from transferkit.models.bundle import bundle_metadata, save_bundle
from transferkit.models.novelty import MIN_VALIDATION, fit_model_novelty, head_outputs
from transferkit.models.tta import with_tta
from transferkit.models.backbones import check_weights_path
from transferkit.models.registry import is_model_file, register_backbone
from transferkit.training.cache import (FeatureStore, frozen_inputs, split_features,
                                        store_features)
from transferkit.training.checkpoint import (CheckpointConfig, CheckpointManager,
                                             Checkpointer, save_on_sigterm)
from transferkit.training.distribute import (local_copy, make_strategy, per_replica_batch,
                                             precision, prepare_dataset, worker_dir)
from transferkit.training.lr_find import AutoLR
from transferkit.training.orchestrator import Position, fine_tune
from transferkit.training.recipe import build_run_model, load_run_data, recipe_from_dict

# Recipe keys a resume may change: they do not alter what the run trains on or how.
# Any other change (data, task, classes, batch size, epochs, image size, backbone,
# weights, learning rates, ...) would make the checkpoints mean something else.
RESUME_HARMLESS = ("report", "strategy", "cache_features", "auto_tta")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What `train` leaves behind: the run directory, the model and its records."""

    out_dir: str
    model: keras.Model
    history: tuple
    metrics: dict
    class_names: tuple
    skipped_files: dict = dataclasses.field(default_factory=dict)  # path -> reason
    tta: dict = dataclasses.field(default_factory=dict)  # the flip-TTA decision record
    # Optional end steps that failed ({"step", "error"}; also in run.json "warnings").
    warnings: tuple = ()


@dataclasses.dataclass(frozen=True)
class Job:
    """A prepared run, handed from step to step: its RunDir, recipe, tf.distribute
    strategy, checkpoint manager, the checkpoint state it resumes from (or None), its
    data, the unknown-data images (a dataset, checked up front; or None) and the
    feature store its phases fill and its end reads back (one instance: what it holds
    in memory is not read from disk again)."""

    run: RunDir
    recipe: object
    strategy: object
    manager: CheckpointManager
    state: dict
    data: object
    unknown: object = None
    store: object = None


def model_metadata(recipe, class_names, **extra):
    """What `model.keras` carries so every command can use it without the run folder
    (`models.bundle.bundle_metadata` for the recipe's task, input and backbone)."""
    return bundle_metadata(class_names, recipe.task_config(bind=False),
                           recipe.input_spec(), backbone=recipe.model.backbone, **extra)


@renamed(**TRUSTED)
def train(recipe, out_dir, *, callbacks=(), verbose="auto", resume=False,
          checkpoint=CheckpointConfig(), data_service=None, safe_mode=True,
          overwrite=False, timer=None):
    """Run `recipe` (a RecipeConfig) end to end and fill `out_dir`; returns RunResult.

    A directory that already holds a run is refused unless `resume` or `overwrite`.
    resume: continue that run from its newest intact checkpoint (at its phase, epoch,
        step, learning-rate position, trainable flags, optimizer and early-stopping
        state); starts afresh when there is none. Only RESUME_HARMLESS keys of the
        recipe may differ from the run's config.json. overwrite: delete the run's files
        (only those `train` writes) and start a new run. checkpoint: a CheckpointConfig
        (save frequency, how many to keep). data_service: a tf.data service dispatcher
        address. safe_mode: False lets the `weights` or `backbone` .keras file run code
        when loaded (Keras safe mode off; see `models.saving.load_model`). callbacks:
        more Keras callbacks (`PhaseCallback`s hear the phases too). timer: the
        `core.timing.StageTimer` the run's stages are timed in (default: a new one; the
        CLI's counts the process's start-up too); run.json records them ("stages") and
        the run ends by printing them on one line.
    """
    timer = timer or StageTimer()
    with timer.active():
        job = prepare(recipe, out_dir, resume=resume, overwrite=overwrite,
                      keep=checkpoint.keep, data_service=data_service, safe_mode=safe_mode)
        with stage("build"):
            model, start, saver = build(job, checkpoint, safe_mode=safe_mode)
        run_schedule(job, model, start, saver, callbacks=callbacks, verbose=verbose)
        result = finish(job, model, saver.history)
    record = timer.to_json()
    job.run.record("stages", record)
    print(f"time: {format_summary(record)}")
    if recipe.runtime.report and os.path.exists(job.run.report_file):
        from transferkit.evaluation.report import add_section, stages_html

        add_section(job.run.report_file, "Where the time went", stages_html(record))
    return result


def prepare(recipe, out_dir, *, resume=False, overwrite=False, keep=CheckpointConfig.keep,
            data_service=None, safe_mode=True):
    """Check the recipe, load and check every input, then claim `out_dir` (see
    `claim_run`) and record the recipe; returns the `Job`. Cheap checks come first;
    nothing is written to out_dir before every input is known to be readable."""
    if not safe_mode and is_model_file(recipe.model.backbone):
        # Before anything looks the backbone file up (which loads it in safe mode).
        register_backbone(recipe.model.backbone, safe_mode=False)
    # Before any slow work, and before touching out_dir: the backbone name, the image
    # size range, and the data and weights paths.
    recipe.input_spec()
    check_recipe_paths(recipe)
    strategy = make_strategy(recipe.runtime.strategy)  # first: multi-worker needs a fresh runtime
    per_replica_batch(recipe.schedule.batch_size, strategy)  # batch_size is global: check it splits
    run = run_dir(worker_dir(out_dir, strategy))
    fixes = read_fixes(recipe.data.fixes) if recipe.data.fixes else None
    check_claim(run, recipe, resume=resume, overwrite=overwrite)  # before the slow part
    if resume:
        check_same_fixes(run, fixes)
    # Every input read and checked (the scan decodes each image) before out_dir is
    # written: a bad file is refused now, not after training.
    with stage("scan"):
        data = load_run_data(recipe, fixes=fixes)
        unknown = unknown_images(recipe, data)
    check_minimums(recipe, data)
    run_id, changed = claim_run(run, recipe, resume=resume, overwrite=overwrite)
    run.record("fixes", fixes_record(fixes, data.fixes))
    manager = CheckpointManager(run.checkpoints, keep, run_id=run_id)
    manager.clean()  # temp files and uncommitted weights a kill left behind
    state = manager.latest() if resume else None
    if resume and state is None and manager.others():
        warnings.warn(f"{manager.directory} holds {manager.others()} checkpoint(s) of "
                      "another run (or from before runs had ids): not loaded; the run "
                      "starts from the beginning.", stacklevel=3)
    run.write_config(recipe.to_dict())
    if changed:
        print(f"resuming with changed settings (recorded in config.json): "
              f"{', '.join(changed)}")
    data = dataclasses.replace(
        data, train=prepare_dataset(data.train, strategy, service=data_service),
        val=prepare_dataset(data.val, strategy), test=prepare_dataset(data.test, strategy))
    if state is not None:
        run.check_classes(data.class_names)
    run.write_class_names(data.class_names)
    if data.scan_report is not None:
        data.scan_report.to_json(run.scan_file)
    return Job(run, recipe, strategy, manager, state, data, unknown, FeatureStore.default())


def unknown_images(recipe, data, verbose=True):
    """The recipe's unknown-data images as a dataset at the data's input size, read
    and decoded now (`data.files.folder_dataset`: unusable files reported and
    skipped; none usable is a DataError), or None without an unknown_data folder."""
    if not recipe.data.unknown:
        return None
    return folder_dataset(recipe.data.unknown, "unknown_data", data.image_size,
                          batch_size=recipe.schedule.batch_size, verbose=verbose)[0]


def check_minimums(recipe, data):
    """Say before training what an end step will skip for want of data: the novelty
    score (for tasks with one class per image) needs MIN_VALIDATION validation images."""
    if not recipe.runtime.novelty or data.train_labels is None or \
            recipe.task_config().novelty_ids(data.train_labels) is None:
        return
    val = (data.counts or {}).get("val", 0 if data.val is None else None)
    if val is not None and val < MIN_VALIDATION:
        print(f"warning: the novelty score needs at least {MIN_VALIDATION} validation "
              f"images; the validation split has {val}: this run will have none "
              "(--no-novelty, recipe key novelty=false, turns it off).")


def build(job, checkpoint=CheckpointConfig(), *, safe_mode=True):
    """(model, start, checkpointer): the recipe's model, the `Position` training starts
    from (None when the resumed run's schedule is done) with the checkpoint's weights
    loaded where its phase was complete, and the `Checkpointer` that saves the run."""
    recipe, state, manager = job.recipe, job.state, job.manager
    with job.strategy.scope(), precision(recipe.runtime.mixed_precision):
        model = build_run_model(recipe, job.data.num_classes, safe_mode=safe_mode)
    if recipe.model.weights_arg() is None and recipe.schedule.head.epochs:
        # A frozen random backbone gives near-constant features (MobileNetV2's pooled
        # output is ~1e-12): phase 1 then trains a head on noise. Say so, don't refuse:
        # a from-scratch baseline may want exactly this.
        warnings.warn(f"weights=none with head_epochs={recipe.schedule.head.epochs}: "
                      "phase 1 trains the head on a frozen, randomly initialised backbone. "
                      "For training from scratch use --head-epochs 0 --unfreeze none.",
                      stacklevel=3)
    start = Position()
    if state is not None:
        print(f"resuming {job.run.path} from {state['weights']}: phase {state['phase']}, "
              f"epoch {state['epoch']}, step {state['step']}")
        start = manager.position(state)
        if state["phase_complete"]:  # the next phase compiles anew: weights only
            manager.restore(model, state, optimizer=False)
    saver = Checkpointer(manager, model, checkpoint,
                         history=state["history"] if state else (),
                         global_step=state["global_step"] if state else 0,
                         resume=None if state is None or state["phase_complete"] else state)
    return model, start, saver


def run_schedule(job, model, start, saver, *, callbacks=(), verbose="auto"):
    """Train `model` from `start` in one `fine_tune` call; its hooks: the LR finder for
    phases with `lr_auto` (each found rate recorded in config.json at once, so a resume
    keeps it), TensorBoard (logs/), the checkpointer, then `callbacks`. SIGTERM or
    Ctrl-C saves a checkpoint and exits."""
    if start is None:
        return  # the resumed run's checkpoint says the schedule is done
    recipe, run = job.recipe, job.run
    # A resumed run trains phase 1 live: its cached features would not know where the
    # interrupted run stood. Phase 2 may use the boundary cache when it starts afresh
    # (the orchestrator decides; mid-phase it runs live).
    cache = train_cache(recipe, job.store)
    if job.state is not None and cache is not None:
        cache = dataclasses.replace(cache, head=False)
    auto = AutoLR(run.path, verbose=verbose, on_found=lambda rates: run.write_config(
        with_rates(recipe, rates).to_dict()))
    tensorboard = keras.callbacks.TensorBoard(run.logs)
    with job.strategy.scope(), save_on_sigterm(saver):
        fine_tune(model, job.data, config=recipe.schedule, task=recipe.task_config(),
                  cache=cache, start=start, callbacks=[auto, tensorboard, saver, *callbacks],
                  verbose=verbose)


def train_cache(recipe, store=None):
    """The FeatureCache of a `train` run: the recipe's, in `store` (default: a new
    default store), also keeping the val files' mirrors when the flip-TTA decision at
    its end reads them."""
    flip = recipe.runtime.auto_tta and recipe.task_config().flip_tta
    return recipe.feature_cache(store or FeatureStore.default(), mirror_val=flip)


def finish(job, model, history):
    """The end of a run, each step a call: the records and model.keras first
    (`save_trained`), so the trained model is on disk before anything that could fail;
    then the optional steps (`EndSteps`: the cached inputs `frozen_inputs`, validation
    outputs, the flip-TTA decision `decide_tta`, `run_metrics`, `fit_run_novelty`, the
    report), a failure of each a warning printed and recorded in run.json "warnings";
    then model.keras again, atomically, with the TTA wrapper (`with_tta`) and novelty
    score they chose (while report.html is drawn in a thread), and metrics.json.
    Returns the `RunResult`."""
    run, recipe, data = job.run, job.recipe, job.data
    task = get_task(recipe.task)
    skipped = name_skipped_files(data, run)
    with stage("save"):
        meta = save_trained(job, model, history)
    steps = EndSteps(run)
    plain = local_copy(model)
    with stage("tta"):
        # The part of the model below the layers that trained is in the run's caches:
        # the end of the run reads its images back from there, without backbone passes
        # (None: no cache, or it does not hold them; the steps then pass over images).
        frozen = steps.run("cached inputs", frozen_inputs, plain, data,
                           train_cache(recipe, job.store))
        val, mirrored = steps.run("validation outputs", validation_outputs, plain, data,
                                  frozen, fallback=(None, None))
        tta, val = steps.run("flip TTA decision", decide_tta, recipe, plain, data, task,
                             val, mirrored,
                             fallback=({"tta": None, "reason": "the decision failed"}, val))
    final = with_tta(plain, tta["tta"], task=task) if tta["tta"] else model
    metrics = steps.run("metrics", run_metrics, final if tta["tta"] else plain, data,
                        task, val, tta, fallback={})
    with stage("novelty"):
        novelty, novelty_scores = steps.run("novelty score", fit_run_novelty, plain, data,
                                            recipe, unknown=job.unknown, frozen=frozen,
                                            fallback=(None, None))
    if novelty is not None:
        metrics["novelty"] = novelty.to_json()
    run.write_metrics(metrics)
    run.record("tta", tta)
    report = None
    if recipe.runtime.report:
        # Drawn in a thread while the model is saved. Val's outputs and novelty scores
        # are at hand: no more passes over val.
        report = in_background("report", write_run_report, run,
                               final if tta["tta"] else plain, data, history, novelty,
                               val, novelty_scores)
    with stage("save"):
        save_bundle(final, run.model_file, {**meta, "tta": tta}, novelty=novelty)
    print_tta(tta)
    if report is not None:
        with stage("report"):  # what is left of it once the model is saved
            steps.run("report", report.join)
    return RunResult(run.path, model, tuple(history), metrics, tuple(data.class_names),
                     skipped, tta, tuple(steps.failed))


def save_trained(job, model, history):
    """history.json and model.keras (with its metadata; atomically) of the trained
    model, before any optional end step; returns the metadata."""
    job.run.write_history(history)
    meta = model_metadata(job.recipe, job.data.class_names)
    save_bundle(model, job.run.model_file, meta)
    return meta


class EndSteps:
    """Runs the optional end steps of a run: a step that raises is a warning (printed,
    and recorded in run.json "warnings" as {"step", "error"}) and gives its fallback,
    so the run ends with its model.keras (exit 0), never lost to a late failure."""

    def __init__(self, run):
        self.run_dir, self.failed = run, []

    def run(self, step, fn, *args, fallback=None, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the model is saved; say, go on
            record = {"step": step, "error": f"{type(error).__name__}: {error}"}
            self.failed.append(record)
            print(f"warning: the {step} step failed; model.keras is saved without it "
                  f"(recorded in run.json): {record['error']}")
            self.run_dir.record("warnings", list(self.failed))
            return fallback


def validation_outputs(model, data, frozen=None):
    """(`model`'s (outputs, labels) on the val split, its outputs on the mirrored val
    images or None), from `frozen` (a `FrozenInputs`: the part above the cached
    tensors only) where it holds them, else (outputs) from a pass over val; (None,
    None) without a val split."""
    if data.val is None:
        return None, None
    if frozen is None:
        return predict_outputs(model, data.val), None
    mirrored = frozen.outputs("mirror")[1] if frozen.mirror is not None else None
    return (frozen.outputs("val")[1], frozen.labels("val")), mirrored


def run_metrics(model, data, task, val, tta):
    """The run's metrics: val from its outputs at hand (`val`, the final model's),
    test from one pass of `model` (when there is a test split); val records the TTA
    decision."""
    metrics = {}
    if data.test is not None:
        with stage("test"):
            metrics = evaluate_splits(model, data, task, splits=("test",))
    if val is not None:  # val first, as evaluate_splits orders them
        metrics = {"val": task.score(*val, data.class_names), **metrics}
    if "val" in metrics:
        metrics["val"]["tta"] = tta
    return metrics


def print_tta(tta):
    """One line on the flip-TTA decision, when one was made."""
    if "plain" in tta:
        metric = tta["metric"]
        print(f"flip TTA {'kept' if tta['tta'] else 'not kept'}: val {metric} "
              f"{tta['plain'][metric]:.4f} -> {tta['flip'][metric]:.4f}, loss "
              f"{tta['plain']['loss']:.4f} -> {tta['flip']['loss']:.4f}"
              + (" (model.keras averages each image and its mirror)" if tta["tta"] else ""))


def write_run_report(run, model, data, history, novelty, val, novelty_scores):
    """report.html of the run (`evaluation.report.write_report`)."""
    from transferkit.evaluation.report import write_report  # matplotlib at the end

    write_report(run.path, model, data, history, novelty=novelty, val=val,
                 novelty_scores=novelty_scores)


def decide_tta(recipe, model, data, task, val_outputs=None, mirrored=None):
    """(the run's flip-TTA decision record, the final model's val (outputs, labels)).

    The record is `evaluate.flip_decision`'s on the val split ({"tta": "flip" or None,
    the metric, the rule, both scores}), or {"tta": None, "reason": ...} when the
    recipe turns it off (`auto_tta`), the task's outputs do not mirror
    (`Task.flip_tta`) or there is no val split. val_outputs: `model`'s (outputs,
    labels) on val, if already computed; returned as they are unless flip is kept, then
    flip-averaged. mirrored: its outputs on the mirrored val images, if computed."""
    if not recipe.runtime.auto_tta:
        return {"tta": None, "reason": "auto_tta is off"}, val_outputs
    if not task.flip_tta:
        return {"tta": None, "reason": f"task {task.name!r} does not take flip TTA"}, \
            val_outputs
    if data.val is None:
        return {"tta": None, "reason": "no validation split to decide on"}, val_outputs
    plain, both, labels = flip_outputs(model, data.val, task, val_outputs, mirrored)
    record = flip_record(plain, both, labels, task, data.class_names)
    return record, ((both if record["tta"] else plain), labels)


def fit_run_novelty(model, data, recipe, verbose=True, unknown=None, frozen=None):
    """(the run's `Novelty` (see `models.novelty`), its scores of the validation
    images) from its clean training images, its validation split and the recipe's
    unknown_data images (`unknown`, a dataset read up front by `unknown_images`; read
    now when None; else synthetic outliers from `outlier_images`); (None, None) when
    turned off, without MIN_VALIDATION validation images, or for a task without one
    class per image.

    frozen: the run's `FrozenInputs`: the clean features come from the part above the
    cached tensors (no backbone pass); else from passes over the images."""
    if not recipe.runtime.novelty or data.val is None:
        return None, None
    if (data.counts or {}).get("val", MIN_VALIDATION) < MIN_VALIDATION:
        return None, None  # said before training (`check_minimums`)
    task = recipe.task_config()
    if task.novelty_ids(data.val_labels) is None:  # e.g. segmentation: no class per image
        return None, None
    # Clean features of both splits, kept in the feature cache under the final model's
    # fingerprint: add-class replays them.
    store = FeatureStore.default()
    if frozen is not None:
        features = tuple((frozen.outputs(split)[0], frozen.labels(split))
                         for split in ("train", "val"))
        for split, (x, y) in zip(("train", "val"), features):
            store_features(model, data, split, x, y, store)
    else:
        train, val = split_features(model, data, store=store,
                                    batch_size=recipe.schedule.batch_size, verbose=0)
        features = ((train.x[0], train.y[0]), (val.x[0], val.y[0]))
    if unknown is None and recipe.data.unknown:
        unknown = unknown_images(recipe, data, verbose=verbose)
    novelty = fit_model_novelty(model, task, *features, outlier_images(data, recipe),
                                unknown, false_rejection=recipe.runtime.false_rejection,
                                seed=recipe.seed)
    if novelty is None:
        return None, None
    if verbose:
        others = ", ".join(f"{k} {v:.3f}" for k, v in novelty.auroc.items()
                           if k != novelty.detector)
        print(f"novelty score: {novelty.detector} (AUROC vs {novelty.criterion} outliers "
              f"{novelty.auroc[novelty.detector]:.3f}; {others}); threshold "
              f"{novelty.threshold:.4g} calls {novelty.false_rejection:.0%} of validation "
              "images unknown")
    # The validation images' scores as predict computes them, from the clean features.
    val_x = features[1][0]
    return novelty, novelty.score(np.reshape(val_x, (len(val_x), -1)),
                                  *head_outputs(model, val_x, task))


# Synthetic outliers (shuffled tiles) are made from at most this many validation
# images, drawn across classes: each costs a backbone pass at the end of the run, and
# the detector choice needs far fewer than a large val split holds (measured on a real
# unseen class: `benchmarks/open_world.py --outlier-images`).
OUTLIER_IMAGES = 64


def outlier_images(data, recipe):
    """The validation images synthetic outliers are made from: a class-stratified
    sample of OUTLIER_IMAGES of a file split (fixed by the seed), else all of val."""
    files, labels = data.val_files, data.val_labels
    if not files or len(files) <= OUTLIER_IMAGES:
        return data.val
    keys = [tuple(row) for row in np.asarray(labels).reshape(len(files), -1).tolist()]
    chosen = stratified_sample(keys, OUTLIER_IMAGES, seed=recipe.seed)
    return make_dataset([files[i] for i in chosen], np.asarray(labels)[chosen],
                        image_size=data.image_size, batch_size=recipe.schedule.batch_size,
                        training=False, skip_errors=True, task=data.task,
                        num_classes=len(data.class_names))


def with_rates(recipe, rates):
    """`recipe` with the learning rates the range test found ({phase: rate}), their
    `lr_auto` off: what config.json records so a resumed run keeps the rates."""
    keys = {}
    for phase, rate in rates.items():
        keys.update({f"{phase}_lr": rate, f"{phase}_lr_auto": False})
    return recipe_from_dict(keys, recipe)


def fixes_record(fixes, applied=None):
    """What run.json says of the fixes file a run used (None: none): its path and
    sha256, and what it changed in the data (`applied`, `Fixes.applied`: relabels and
    exclusions of files in the data, and the rows naming files not in it), else its
    rows' counts."""
    if fixes is None:
        return None
    return {"path": os.path.abspath(fixes.path), "sha256": fixes.digest,
            **(applied if applied is not None else fixes.counts())}


def check_same_fixes(run, fixes):
    """ConfigError when a resumed run's fixes file changed (or came or went) since the
    run started: its checkpoints were trained on the other listing."""
    info = run.read_info() if run.holds_run() else None
    if not isinstance(info, dict) or "fixes" not in info:
        return  # a new run, or one from before fixes were recorded
    before = info["fixes"] or {}
    now = fixes_record(fixes) or {}
    if before.get("sha256") != now.get("sha256"):
        def name(record):
            return (f"{record['path']} (sha256 {record['sha256'][:12]})" if record
                    else "no fixes file")
        raise ConfigError(
            f"--resume cannot change the fixes file: the run in {run.path} was trained "
            f"with {name(before)}, now with {name(now)}. Start a new run (another --out, "
            "or --overwrite) to train with other fixes.")


def run_dir(out_dir):
    """The `RunDir` of `out_dir`, whose overwrite also clears the checkpoints."""
    return RunDir(out_dir, clear_checkpoints=lambda folder: CheckpointManager(folder).clear())


def claim_run(run, recipe, *, resume=False, overwrite=False, resumable=True):
    """`RunDir.claim` for `recipe`: returns (run_id, keys changed at resume). Only
    RESUME_HARMLESS keys may differ from the run's config.json. resumable: the command
    has --resume (its refusal suggests it; add-class has not)."""
    return run.claim(recipe.flat(), resume=resume, overwrite=overwrite,
                     may_change=RESUME_HARMLESS, read_config=_saved_flat,
                     resumable=resumable)


def check_claim(run, recipe, *, resume=False, overwrite=False, resumable=True):
    """What `claim_run` refuses, checked without writing (`RunDir.check_claim`)."""
    return run.check_claim(recipe.flat(), resume=resume, overwrite=overwrite,
                           may_change=RESUME_HARMLESS, read_config=_saved_flat,
                           resumable=resumable)


def _saved_flat(saved):
    return recipe_from_dict(saved).flat()


def name_skipped_files(data, run):
    """{path: reason} of the files that failed to read or decode during the run (after
    the scan accepted them, or under --no-scan) and were skipped: named in one warning
    and recorded in `run`'s run.json "skipped_files". Only when images went missing are the
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
    run.record_skipped(bad)
    return bad


def check_recipe_paths(recipe):
    """Raise ConfigError/WeightsError if the recipe's data or weights file is missing."""
    for key, path in (("data", recipe.data.train), ("val_data", recipe.data.val)):
        if path and not path.startswith("tfds:") and not os.path.exists(path):
            raise ConfigError(f"The `{key}` argument should be a folder of class "
                              f"subfolders, a CSV file or tfds:NAME. Received: "
                              f"{key}={path!r} (no such file or folder)")
    weights = recipe.model.weights_arg()
    if weights is not None and weights != "imagenet":
        check_weights_path(weights)
    if recipe.data.unknown:  # listed now; its images are decoded in `prepare`
        list_images(recipe.data.unknown, "unknown_data")
