"""`train(recipe, out_dir)`: one training run, written to a run directory.

Run directory layout (a contract for the CLI, reports, resume and the tuner):

    config.json      the resolved RecipeConfig
    class_names.json the class order the model's outputs follow
    scan.json        the data health scan (rejected and converted files)
    history.json     one record per epoch, each with its "phase"
    metrics.json     final validation (and test) metrics
    model.keras      the trained model, written atomically, with class names inside
    logs/            TensorBoard logs
"""

import dataclasses
import json
import os

import keras

from transferkit import augment as augment_lib
from transferkit.backbones import get_spec
from transferkit.data import load_data
from transferkit.errors import check_choice
from transferkit.model import build_model
from transferkit.saving import save_model, write_json
from transferkit.schedule import fine_tune

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


def train(recipe, out_dir, *, callbacks=(), verbose="auto"):
    """Run `recipe` (a RecipeConfig) end to end and fill `out_dir`; returns RunResult."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), recipe.to_dict())
    size = recipe.image_size or get_spec(recipe.backbone).default_size
    data = load_run_data(recipe, image_size=size)
    class_names = list(data.class_names)
    write_json(os.path.join(out_dir, "class_names.json"), class_names)
    if data.scan_report is not None:
        data.scan_report.to_json(os.path.join(out_dir, "scan.json"))
    model = build_run_model(recipe, data.num_classes)
    schedule = recipe.schedule_config()
    cbs = [keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")), *callbacks]
    result = fine_tune(model, data.train, data.val, config=schedule, callbacks=cbs,
                       class_weight=data.class_weight, verbose=verbose)
    history = list(result.history)
    write_json(os.path.join(out_dir, "history.json"), history)
    metrics = evaluate_splits(model, data)
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    save_model(model, os.path.join(out_dir, "model.keras"), metadata={
        "class_names": class_names, "task": recipe.task, "backbone": recipe.backbone,
        "image_size": size})
    return RunResult(out_dir, model, tuple(history), metrics, tuple(class_names))


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
