"""`train(recipe, out_dir)`: one training run, written to a run directory.

Run directory layout (a contract for the CLI, reports, resume and the tuner):

    config.json      the resolved RecipeConfig
    class_names.json the class order the model's outputs follow
    scan.json        the data health scan (rejected and converted files)
    history.json     one record per epoch, each with its "phase"
    metrics.json     final validation (and test) metrics
    model.keras      the trained model, written atomically, with class names inside
    logs/            TensorBoard logs
    report.html      learning curves, samples, confusion matrix (PNGs in report/)
    checkpoints/     the last K checkpoints (weights + optimizer, state JSON) for resume
    worker-<i>/      under multi-worker, the same files from worker i (the chief
                     writes the directory itself)
"""

import dataclasses
import json
import os
import warnings

import keras

from transferkit.data import augment as augment_lib
from transferkit.models.backbones import get_spec
from transferkit.training.checkpoint import (CheckpointConfig, CheckpointManager, Checkpointer,
                                    resume as resume_schedule, save_on_sigterm)
from transferkit.data.load import load_data
from transferkit.training.distribute import (local_copy, make_strategy, per_replica_batch,
                                    precision, prepare_dataset, worker_dir)
from transferkit.core.errors import check_choice
from transferkit.models.builder import build_model
from transferkit.models.saving import save_model, write_json
from transferkit.training.schedule import fine_tune

AUGMENT_PRESETS = {
    "none": None,
    "light": augment_lib.AugmentConfig(crop_scale=(0.8, 1.0), flip="horizontal"),
    "medium": augment_lib.AugmentConfig(crop_scale=(0.6, 1.0), flip="horizontal",
                                        rotation=0.05, brightness=0.1, contrast=0.1),
    "strong": augment_lib.AugmentConfig(crop_scale=(0.4, 1.0), flip="horizontal",
                                        rotation=0.1, zoom=0.1, translation=0.1,
                                        brightness=0.2, contrast=0.2, saturation=0.2,
                                        hue=0.02, mixup_alpha=0.2),
}


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What `train` leaves behind: the run directory, the model and its records."""

    out_dir: str
    model: keras.Model
    history: tuple
    metrics: dict
    class_names: tuple


def augment_config(name):
    """The AugmentConfig for a preset name: none, light, medium or strong."""
    return AUGMENT_PRESETS[check_choice("augment", name, AUGMENT_PRESETS)]


def load_run_data(recipe, image_size=None, verbose=True):
    """The `DataSplits` a recipe trains on."""
    source = {"train": recipe.data, "val": recipe.val_data} if recipe.val_data else recipe.data
    return load_data(source, image_size=image_size, batch_size=recipe.batch_size,
                     task=recipe.task, val_split=recipe.val_split,
                     test_split=recipe.test_split, seed=recipe.seed,
                     augment=augment_config(recipe.augment), scan=recipe.scan,
                     class_weights=recipe.class_weights, verbose=verbose)


def build_run_model(recipe, num_outputs):
    """The model a recipe describes, with `num_outputs` head units."""
    weights = None if recipe.weights in ("", "none", "None") else recipe.weights
    return build_model(recipe.backbone, num_outputs, weights=weights,
                       image_size=recipe.image_size or None, head=recipe.head_config(),
                       trusted=recipe.trusted, backbone_kwargs=dict(recipe.backbone_kwargs))


def train(recipe, out_dir, *, callbacks=(), verbose="auto", resume=False,
          checkpoint=CheckpointConfig(), data_service=None):
    """Run `recipe` (a RecipeConfig) end to end and fill `out_dir`; returns RunResult.

    resume: continue from the newest checkpoint in `out_dir` (at its phase, epoch,
        step, learning-rate position, trainable flags and optimizer state); starts
        afresh when there is none. checkpoint: a CheckpointConfig (save frequency,
        how many to keep). data_service: a tf.data service dispatcher address.
    """
    strategy = make_strategy(recipe.strategy)  # first: multi-worker needs a fresh runtime
    per_replica_batch(recipe.batch_size, strategy)  # batch_size is global: check it splits
    out_dir = worker_dir(out_dir, strategy)
    os.makedirs(out_dir, exist_ok=True)
    manager = CheckpointManager(os.path.join(out_dir, "checkpoints"), checkpoint.keep)
    state = None
    if resume:
        manager.clean()
        state = manager.latest()
    if state is None:
        write_json(os.path.join(out_dir, "config.json"), recipe.to_dict())
    size = recipe.image_size or get_spec(recipe.backbone).default_size
    data = load_run_data(recipe, image_size=size)
    data = dataclasses.replace(
        data, train=prepare_dataset(data.train, strategy, service=data_service),
        val=prepare_dataset(data.val, strategy), test=prepare_dataset(data.test, strategy))
    class_names = list(data.class_names)
    write_json(os.path.join(out_dir, "class_names.json"), class_names)
    if data.scan_report is not None:
        data.scan_report.to_json(os.path.join(out_dir, "scan.json"))
    with strategy.scope(), precision(recipe.mixed_precision):
        model = build_run_model(recipe, data.num_classes)
    schedule = recipe.schedule_config()
    if recipe.weights in ("", "none", "None") and schedule.head.epochs:
        # A frozen random backbone gives near-constant features (MobileNetV2's pooled
        # output is ~1e-12): phase 1 then trains a head on noise. Say so, don't refuse:
        # a from-scratch baseline may want exactly this.
        warnings.warn(f"weights=none with head_epochs={schedule.head.epochs}: phase 1 "
                      "trains the head on a frozen, randomly initialised backbone. For "
                      "training from scratch use --head-epochs 0 --unfreeze none.",
                      stacklevel=2)
    saver = Checkpointer(manager, model, checkpoint, history=state["history"] if state
                         else (), global_step=state["global_step"] if state else 0)
    tensorboard = keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"))
    cbs = [tensorboard, saver, *callbacks]
    with strategy.scope(), save_on_sigterm(saver):
        if state is not None:  # resume bypasses the feature cache: phase 1 runs live
            print(f"resuming {out_dir} from {state['weights']}: phase {state['phase']}, "
                  f"epoch {state['epoch']}, step {state['step']}")
            resume_schedule(model, data.train, data.val, schedule, saver, state,
                            callbacks=[tensorboard, *callbacks],
                            class_weight=data.class_weight,
                            verbose=verbose)
        else:
            head_records = []
            if recipe.cache_features and schedule.head.epochs:
                head_records = cached_head_phase(recipe, model, data, schedule, cbs,
                                                  verbose)
                saver.history = list(head_records)
            fine_tune(model, data.train, data.val, config=schedule, callbacks=cbs,
                      class_weight=data.class_weight, verbose=verbose,
                      phases=("finetune",) if head_records else ("head", "finetune"),
                      initial_epoch=len(head_records))
    history = saver.history
    write_json(os.path.join(out_dir, "history.json"), history)
    metrics = evaluate_splits(model, data)
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    save_model(model, os.path.join(out_dir, "model.keras"), metadata={
        "class_names": class_names, "task": recipe.task, "backbone": recipe.backbone,
        "image_size": size})
    if recipe.report:
        from transferkit.evaluation.report import write_report  # matplotlib only when a run ends

        write_report(out_dir, local_copy(model), data, history)
    return RunResult(out_dir, model, tuple(history), metrics, tuple(class_names))


def cached_head_phase(recipe, model, data, schedule, callbacks, verbose, store=None):
    """Phase 1 on cached backbone features (transferkit.training.cache); its epoch records.

    With augmentation on, the cache holds `recipe.feature_views` augmented views per
    training image, so augmentation still counts in phase 1. store: a FeatureStore
    (default: the user's file cache); the tuner passes one shared across trials.
    """
    from transferkit.training import cache

    store = store or cache.FeatureStore.default()

    augment = augment_config(recipe.augment)
    views = recipe.feature_views if augment else 0
    if verbose:
        print(f"phase 1 on cached backbone features ({views or 'no'} augmented views "
              f"per image; cache: {store.directory or 'memory'})")
    records, _ = cache.train_head_cached(
        model, data, schedule, views=views, augment=augment,
        store=store, seed=recipe.seed, callbacks=callbacks,
        class_weight=data.class_weight, verbose=verbose)
    return list(records)


def evaluate_splits(model, data):
    """{"val": {...}, "test": {...}} metrics of `model` on the splits that exist."""
    out = {}
    for split in ("val", "test"):
        dataset = getattr(data, split)
        if dataset is not None:
            out[split] = {k: float(v) for k, v in
                          model.evaluate(dataset, verbose=0, return_dict=True).items()}
    return out


def read_history(out_dir):
    """The per-epoch records of a run directory."""
    with open(os.path.join(out_dir, "history.json")) as f:
        return json.load(f)
