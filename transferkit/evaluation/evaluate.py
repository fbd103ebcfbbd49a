"""Evaluation: load a model with what travels with it, score it, predict with it.

    loaded = load_run("runs/pets")                     # run directory or .keras file
    data = eval_data(loaded, "data/pets", split="val")
    outputs, labels = predict_outputs(loaded.model, data.dataset)
    report = loaded.task.score(outputs, labels, loaded.class_names)

Everything works on model outputs and goes through the model's `Task`, so one code path
scores a model, a TTA-wrapped model, an ensemble or an exported TFLite file, for every
task type.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError, DataError, check_choice
from transferkit.core.inputs import InputSpec
from transferkit.core.rundir import RunDir
from transferkit.core.task_registry import get_task, task_for_model
from transferkit.data.config import EVAL_SPLITS, DataConfig
from transferkit.data.files import image_dataset
from transferkit.data.load import load_data
from transferkit.data.pipeline import make_dataset
from transferkit.deploy.predictors import load_predictor
from transferkit.evaluation.config import EvaluateConfig, PredictConfig
from transferkit.models.bundle import read_bundle_metadata, read_novelty, read_sidecar
from transferkit.models.novelty import Novelty, novelty_inputs
from transferkit.models.parts import resolve
from transferkit.models.tta import tta_of, unwrap_tta
from transferkit.models.saving import load_model
from transferkit.training.recipe import RecipeConfig, recipe_from_dict

SPLITS = EVAL_SPLITS


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model with what travels with it: task, class names, input spec, run config."""

    path: str
    model: object
    class_names: tuple
    input: InputSpec
    config: dict
    task: object  # a tasks.Task
    # A novelty.Novelty when the model carries one (a .tflite file's: its settings only,
    # the file computes the score as its second output).
    novelty: object = None

    @property
    def image_size(self):
        return self.input.size

    @property
    def tta(self):
        """The TTA preset the Keras model itself averages (e.g. "flip"), else None."""
        return tta_of(self.model) if isinstance(self.model, keras.Model) else None

    def keras_model(self, what):
        """The Keras model, for `what` (a flag, e.g. "--tta") that needs one; an
        exported .tflite file (which evaluate and predict run as is) raises ConfigError."""
        if not isinstance(self.model, keras.Model):
            raise ConfigError(f"{what} needs a Keras model; {self.path} is an exported "
                              "TFLite file. Pass the run directory or .keras file it was "
                              "exported from.")
        return self.model


@dataclasses.dataclass(frozen=True)
class EvalData:
    """One fixed-order split: batches of (images 0-255, encoded labels) and the files."""

    dataset: object
    files: tuple
    labels: np.ndarray
    class_names: tuple


def model_file(path):
    """`path` itself if it is a .keras file, `path/model.keras` for a run directory."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        inner = RunDir(path).model_file
        if not os.path.exists(inner):
            raise ConfigError(f"The MODEL argument {path} is a directory without "
                              f"{os.path.basename(inner)}; pass a run directory or a "
                              ".keras file.")
        return inner
    if not os.path.exists(path):
        raise ConfigError(f"The MODEL argument {path} does not exist; pass a run "
                          "directory or a .keras file.")
    return path


@renamed(**TRUSTED)
def load_run(path, *, safe_mode=True):
    """Load a run directory or `.keras` file (Keras safe mode unless `safe_mode=False`).

    The task, class names and input spec come from the model's own metadata, else
    from the run directory, else from the model (input shape, output layer).
    An exported `.tflite` file loads too (run by LiteRT), with the class names, task
    and input of its `<file>.json` and the config of the run it was exported from.
    Everything read is checked first (`models.bundle`, the run's config.json and
    class_names.json): a bad value is a ConfigError naming the file and the field."""
    file = model_file(path)
    if file.endswith(".tflite"):
        return _load_tflite(file)
    meta = read_bundle_metadata(file)  # checked before the model is even loaded
    novelty = read_novelty(file, meta)
    run = RunDir(os.path.dirname(os.path.abspath(file)))  # a .keras file's folder too
    config = read_run_config(run)
    names = meta.get("class_names") or run.read_class_names()
    # compile=False: scoring needs no optimizer, and its state would only be skipped.
    model = load_model(file, safe_mode=safe_mode, compile=False)
    task = get_task(meta.get("task") or task_for_model(model)).with_settings(
        meta.get("task_settings"))
    if novelty is not None:
        check_novelty_fits(novelty, model, file)
    return LoadedModel(file, model, tuple(names or ()), input_spec(model, meta), config,
                       task, novelty)


def check_novelty_fits(novelty, model, file):
    """ConfigError naming `file` when the novelty arrays' feature size is not the
    model's (the arrays of another model: every score would fail)."""
    if not novelty.arrays:
        return
    size = next(iter(novelty.arrays.values())).shape[1]
    try:
        features = resolve(unwrap_tta(model)).features
    except ConfigError:  # a model without the named parts has no features to score
        raise ConfigError(f"{file} carries a novelty score but its model has no "
                          "feature layer to score ('pool'); drop 'novelty' from its "
                          "metadata.") from None
    found = int(np.prod(features.shape[1:]))
    if found != size:
        raise ConfigError(f"The novelty arrays of {file} are for {size} features; its "
                          f"model's feature layer has {found}. The file was changed or "
                          "assembled from two models.")


def read_run_config(run):
    """The flat settings (`run_settings`) of `run`'s config.json, checked as a recipe
    (ConfigError naming the file and the key); {} when there is none."""
    config = run.read_config()
    if config is None:
        return {}
    try:
        recipe_from_dict(config)
    except ConfigError as error:
        raise ConfigError(f"The run config {run.config_file} is not valid: {error}") \
            from None
    return run_settings(config)


def run_settings(config):
    """A run's config.json as one flat dict: the nested form `train` writes (sections
    data, model, schedule, runtime) has its leaves lifted to the top level, so
    `val_split`, `test_split`, `follow_links` and `backbone` read the same from it as
    from the flat form of earlier versions (a top-level key wins a clash)."""
    flat = {}

    def lift(tree):
        for key, value in tree.items():
            if isinstance(value, dict):
                lift(value)
            else:
                flat.setdefault(key, value)

    lift({k: v for k, v in config.items() if isinstance(v, dict)})
    return {**flat, **config}


def _load_tflite(file):
    meta = read_sidecar(file, required=True)
    missing = [key for key in ("input", "task") if not meta.get(key)]
    if missing:
        raise ConfigError(f"The sidecar {file}.json lacks {missing}: the class names, "
                          "task and input size `transferkit export` writes; export it "
                          "again, or pass the run it came from.")
    source = meta.get("source")
    config = read_run_config(RunDir(os.path.dirname(source))) if source else {}
    try:
        predictor = load_predictor(file)
    except (ValueError, RuntimeError) as error:  # what the interpreters raise
        raise ConfigError(f"The MODEL argument {file} is not a TFLite model the "
                          f"interpreter can load: {error}") from None
    # The file computes its novelty score itself (its second output): the settings
    # travel in the .json, the arrays inside the graph.
    novelty = Novelty(**meta["novelty"]) if meta.get("novelty") and \
        predictor.novelty_output is not None else None  # settings checked by the schema
    return LoadedModel(file, predictor, tuple(meta.get("class_names") or ()),
                       InputSpec.from_json(meta["input"]), config,
                       get_task(meta["task"]).with_settings(meta.get("task_settings")),
                       novelty)


def input_spec(model, metadata):
    """The InputSpec a saved model takes: its metadata's, else its input shape's."""
    if metadata.get("input"):
        return InputSpec.from_json(metadata["input"])
    if metadata.get("image_size"):
        return InputSpec.from_json(metadata["image_size"])
    height, width, channels = model.input_shape[1:4]
    if height is None or width is None:
        raise ConfigError(f"Model {model.name!r} takes images of any size and its file "
                          "records no image size: save it with transferkit's save_model "
                          "and metadata={'input': {'height': H, 'width': W}}.")
    return InputSpec(height, width, channels or 3)


def eval_data(loaded, data, *, split=EvaluateConfig.split,
              batch_size=EvaluateConfig.batch_size, val_split=None, seed=None,
              follow_links=None):
    """The images of `data` (a folder or CSV) to score `loaded` on, in a fixed order.

    split: "all" (default: every image), or "val"/"test": the split a run with the
        same `val_split`/`seed` (default: the run's config, else the recipe defaults,
        0.2 and 0) held out. batch_size: default `EvaluateConfig`'s (32).
    Labels are encoded by the model's task; class order follows the model, and a class
    the model does not know is an error. follow_links: use links that leave the folder
    (default: the run's setting, else False).
    """
    check_choice("split", split, SPLITS)
    cfg = loaded.config
    # loaded.config is flat (`run_settings`), whichever form config.json has.
    val_split = cfg.get("val_split", DataConfig.val_split) if val_split is None else val_split
    test_split = cfg.get("test_split", DataConfig.test_split)
    seed = cfg.get("seed", RecipeConfig.seed) if seed is None else seed
    follow = (bool(cfg.get("follow_links", DataConfig.follow_links)) if follow_links is None
              else follow_links)
    splits = load_data(os.path.expanduser(os.fspath(data)), image_size=loaded.input,
                       batch_size=batch_size, task=loaded.task,
                       class_names=loaded.class_names or None,
                       val_split=0.0 if split == "all" else val_split,
                       test_split=0.0 if split == "all" else test_split, seed=seed,
                       follow_links=follow, verbose=False)
    name = "train" if split == "all" else split
    files, labels = getattr(splits, f"{name}_files"), getattr(splits, f"{name}_labels")
    if not files:
        raise DataError(f"{data}: the {split!r} split is empty (val_split={val_split},"
                        f" test_split={test_split}); use --split all.")
    # The labels are what the task's source gave (encoded rows, or mask files).
    dataset = make_dataset(files, labels, image_size=loaded.input.size,
                           batch_size=batch_size, training=False, task=loaded.task,
                           num_classes=len(splits.class_names))
    return EvalData(dataset, tuple(files), labels, tuple(splits.class_names))


def predict_outputs(predict, dataset, verbose=False):
    """(outputs [N, ...], labels [N, ...]) of `predict` over (images, labels) batches.

    predict: a keras model or any callable from a numpy batch to outputs.
    verbose: show a progress bar (default False).
    """
    fn = predict.predict_on_batch if hasattr(predict, "predict_on_batch") else predict
    steps = int(dataset.cardinality())
    bar = keras.utils.Progbar(steps if steps > 0 else None) if verbose else None
    outputs, labels = [], []
    for images, y in dataset:
        outputs.append(np.asarray(fn(images.numpy())))
        labels.append(y.numpy())
        if bar:
            bar.add(1)
    return np.concatenate(outputs), np.concatenate(labels)


def ensemble_outputs(models, dataset, task, verbose=False):
    """(averaged outputs, labels) of one or more models on `dataset` (`task.average`)."""
    results = [predict_outputs(model, dataset, verbose) for model in models]
    return task.average([o for o, _ in results]), results[0][1]


def check_same_classes(members):
    """Raise ConfigError unless all LoadedModels share task, classes and input size."""
    first = members[0]
    for other in members[1:]:
        for what, a, b in (("tasks", other.task.name, first.task.name),
                           ("class names", list(other.class_names), list(first.class_names)),
                           ("image sizes", other.input.size, first.input.size)):
            if a != b:
                raise ConfigError(f"Cannot ensemble {other.path} with {first.path}: "
                                  f"{what} differ ({a} vs {b}).")


def evaluate_splits(model, data, task, splits=("val", "test")):
    """{"val": report, "test": report} of `model` on the `splits` of `data` that exist."""
    out = {}
    for split in splits:
        dataset = getattr(data, split)
        if dataset is not None:
            outputs, labels = predict_outputs(model, dataset)
            out[split] = task.score(outputs, labels, data.class_names)
    return out


# When flip TTA is kept: its headline metric strictly better (a tie keeps the plain
# model, which costs half as much to run) and its mean loss no worse.
FLIP_RULE = "flip when its headline metric is strictly better and its loss no worse"


def flip_decision(model, dataset, task, class_names=(), outputs=None):
    """Whether flip TTA helps `model` on `dataset` (a labelled split, e.g. val), by
    `task`'s headline metric and mean example loss (FLIP_RULE).

    Returns {"tta": "flip" or None, "metric", "rule", "plain": {metric, "loss"},
    "flip": {...}}. outputs: `model`'s (outputs, labels) on `dataset` if already
    computed. See `flip_outputs` for the passes it makes.
    """
    return flip_record(*flip_outputs(model, dataset, task, outputs), task, class_names)


def flip_outputs(model, dataset, task, outputs=None, mirrored=None):
    """(plain outputs, flip-TTA outputs, labels) of `model` on `dataset`; outputs: the
    plain (outputs, labels), mirrored: the outputs on the mirrored images, if already
    computed (e.g. from a run's caches). The flipped pass reuses `model`'s traced
    predict; `task.unflip` maps the mirrored outputs back and `task.average` averages,
    as `with_tta`'s layers do in the saved model."""
    plain, labels = outputs if outputs is not None else predict_outputs(model, dataset)
    if mirrored is None:
        mirrored, _ = predict_outputs(model, dataset.map(
            lambda images, y: (tf.reverse(images, axis=[2]), y)))
    return plain, task.average([plain, task.unflip(mirrored)]), labels


def flip_record(plain, both, labels, task, class_names=()):
    """The flip-TTA decision record (see `flip_decision`) from both outputs."""
    def scores(out):
        return {task.headline: float(task.score(out, labels, class_names)[task.headline]),
                "loss": float(np.mean(task.example_losses(out, labels)))}

    before, after = scores(plain), scores(both)
    sign = 1 if task.higher_is_better else -1
    better = sign * (after[task.headline] - before[task.headline]) > 0
    keep = better and after["loss"] <= before["loss"]
    return {"tta": "flip" if keep else None, "metric": task.headline, "rule": FLIP_RULE,
            "plain": before, "flip": after}


@renamed(**TRUSTED)
def predict(model, images, *, top_k=PredictConfig.top_k, batch_size=PredictConfig.batch_size,
            safe_mode=True):
    """Predictions for image files: one {"image", "label", "scores"} dict per file, plus
    "novelty" (higher: more unlike the training classes) and "unknown" (above the
    model's threshold) when the model carries a novelty score. top_k, batch_size:
    default `PredictConfig`'s (3, 32).

    model: a run directory, a .keras file or a LoadedModel. Files are decoded by the
    same scan and decoder training uses, at the model's input size.
    """
    loaded = model if isinstance(model, LoadedModel) else load_run(model,
                                                                   safe_mode=safe_mode)
    dataset, _ = image_dataset(images, loaded.input.size, batch_size=batch_size)
    outputs, _ = predict_outputs(loaded.model, dataset)
    names = loaded.class_names
    rows = [{"image": os.fspath(path),
             **loaded.task.describe_file(row, names, top_k, os.fspath(path))}
            for path, row in zip(images, outputs)]
    if loaded.novelty is not None:
        scores = novelty_scores(loaded, dataset)
        for row, score, unknown in zip(rows, scores, loaded.novelty.unknown(scores)):
            row.update(novelty=round(float(score), 6), unknown=bool(unknown))
    return rows


def novelty_scores(loaded, dataset):
    """The stored novelty score (see `models.novelty`) of each image of `dataset`."""
    if not isinstance(loaded.model, keras.Model):  # a .tflite file: its novelty output
        return np.concatenate([loaded.model.novelty(images.numpy())
                               for images, _ in dataset])
    features, probs, logits, _ = novelty_inputs(loaded.model, dataset, loaded.task)
    return loaded.novelty.score(features, probs, logits)


def worst_predictions(task, outputs, labels, n=16):
    """Indices of the `n` examples with the highest loss under `task`."""
    losses = task.example_losses(outputs, labels)
    return np.argsort(-losses, kind="stable")[:n]


def format_report(report, task, top=20):
    """A few lines for the terminal: the task's summary metrics (`Task.summary_metrics`),
    then a row per class of its per-class columns (`Task.per_class_columns`)."""
    task = get_task(task)
    heads = [f"{k}={report[k]:.4f}" for k in task.summary_metrics if k in report]
    lines = [f"{report['num_images']} images: " + ", ".join(heads)]
    columns = task.per_class_columns
    if columns and "per_class" in report:
        lines.append(f"{'class':<20}" + "".join(f"{h:>10}" for _, h in columns))
        for name, row in list(report["per_class"].items())[:top]:
            lines.append(f"{name[:19]:<20}" + "".join(
                f"{row[k]:>10d}" if isinstance(row[k], int) else f"{row[k]:>10.3f}"
                for k, _ in columns))
    return "\n".join(lines)
