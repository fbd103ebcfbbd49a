"""`train(recipe, out_dir)`: one training run, written to a run directory.

Run directory layout (a contract for the CLI, reports, resume and the tuner):

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
import warnings

import keras

from transferkit.core.files import read_json, write_json
from transferkit.core.tasks import get_task
from transferkit.data.augment import augment_config
from transferkit.data.load import load_data
from transferkit.evaluation.evaluate import evaluate_splits
from transferkit.models.builder import build_model
from transferkit.models.saving import save_model
from transferkit.models.segmentation import build_segmenter
from transferkit.training.cache import FeatureStore
from transferkit.training.checkpoint import (CheckpointConfig, CheckpointManager,
                                             Checkpointer, save_on_sigterm)
from transferkit.training.distribute import (local_copy, make_strategy, per_replica_batch,
                                             precision, prepare_dataset, worker_dir)
from transferkit.training.orchestrator import Position, fine_tune


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What `train` leaves behind: the run directory, the model and its records."""

    out_dir: str
    model: keras.Model
    history: tuple
    metrics: dict
    class_names: tuple


def load_run_data(recipe, verbose=True):
    """The `DataSplits` a recipe trains on, at the recipe's input size."""
    source = {"train": recipe.data, "val": recipe.val_data} if recipe.val_data else recipe.data
    return load_data(source, image_size=recipe.input_spec(), batch_size=recipe.batch_size,
                     task=recipe.task, val_split=recipe.val_split,
                     test_split=recipe.test_split, seed=recipe.seed,
                     augment=augment_config(recipe.augment), scan=recipe.scan,
                     class_weights=recipe.class_weights, verbose=verbose)


def build_run_model(recipe, num_outputs, *, trusted=False):
    """The model a recipe describes, with `num_outputs` classes (or targets).

    trusted: load a `.keras` weights file without safe mode (only from the caller,
        never from a recipe file)."""
    if get_task(recipe.task).dense:  # per-pixel outputs: a U-Net decoder, not a head
        return build_segmenter(recipe.backbone, num_outputs, weights=recipe.weights_arg(),
                               image_size=recipe.input_spec(),
                               decoder_width=recipe.decoder_width, task=recipe.task,
                               trusted=trusted,
                               backbone_kwargs=dict(recipe.backbone_kwargs))
    return build_model(recipe.backbone, num_outputs, weights=recipe.weights_arg(),
                       image_size=recipe.input_spec(), head=recipe.head_config(),
                       trusted=trusted, backbone_kwargs=dict(recipe.backbone_kwargs))


def model_metadata(recipe, class_names):
    """What `model.keras` carries so every command can use it without the run folder."""
    return {"class_names": list(class_names), "task": recipe.task,
            "backbone": recipe.backbone, "input": recipe.input_spec().to_json()}


def train(recipe, out_dir, *, callbacks=(), verbose="auto", resume=False,
          checkpoint=CheckpointConfig(), data_service=None, trusted=False):
    """Run `recipe` (a RecipeConfig) end to end and fill `out_dir`; returns RunResult.

    resume: continue from the newest checkpoint in `out_dir` (at its phase, epoch,
        step, learning-rate position, trainable flags, optimizer and early-stopping
        state); starts afresh when there is none. checkpoint: a CheckpointConfig (save
        frequency, how many to keep). data_service: a tf.data service dispatcher
        address. trusted: the `weights` file may run code when loaded (see
        `models.saving.load_model`).
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
    data = load_run_data(recipe)
    data = dataclasses.replace(
        data, train=prepare_dataset(data.train, strategy, service=data_service),
        val=prepare_dataset(data.val, strategy), test=prepare_dataset(data.test, strategy))
    class_names = list(data.class_names)
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
            # where the interrupted run stood.
            fine_tune(model, data, config=schedule, task=recipe.task_config(),
                      cache=recipe.feature_cache(FeatureStore.default()) if state is None
                      else None,
                      start=start, callbacks=[tensorboard, saver, *callbacks],
                      verbose=verbose)
    history = saver.history
    write_json(os.path.join(out_dir, "history.json"), history)
    metrics = evaluate_splits(local_copy(model), data, get_task(recipe.task))
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    save_model(model, os.path.join(out_dir, "model.keras"),
               metadata=model_metadata(recipe, class_names))
    if recipe.report:
        from transferkit.evaluation.report import write_report  # matplotlib at the end

        write_report(out_dir, local_copy(model), data, history)
    return RunResult(out_dir, model, tuple(history), metrics, tuple(class_names))


def read_history(out_dir):
    """The per-epoch records of a run directory."""
    return read_json(os.path.join(out_dir, "history.json"), "run history") or []
