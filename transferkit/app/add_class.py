"""`add_classes(run, data, out_dir)`: add classes to a trained classifier without
retraining it.

    result = add_classes("runs/shapes", "data/new_classes", "runs/shapes_plus")

The backbone stays as it is; only the head changes. Its output layer gains one unit per
new class, imprinted from the new class's mean embedding (Qi et al. 2018: the unit's
weights point along the class mean, scaled to the old units' norm), then the head alone
trains briefly on the cached features of the new images plus the replayed cached
features of the old ones (so old classes are not forgotten), with early stopping on the
validation features and the best weights restored. The novelty score is refitted (same
detector, new class statistics, threshold recalibrated) and a
complete run directory is written, its run.json recording what it was derived from.
"""

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from transferkit.app.config import AddClassConfig
from transferkit.app.train import check_claim, claim_run, model_metadata, run_dir
from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.core.timing import StageTimer, format_summary, stage
from transferkit.data.load import load_data
from transferkit.data.names import confusable_pairs, describe
from transferkit.evaluation.evaluate import load_run, read_run_config
from transferkit.models.bundle import save_bundle
from transferkit.models.novelty import head_outputs
from transferkit.models.tta import unwrap_tta
from transferkit.models.parts import resolve
from transferkit.models.heads import build_head
from transferkit.training.cache import FeatureStore, has_features, split_features
from transferkit.training.orchestrator import CachedValidation
from transferkit.training.recipe import load_run_data, recipe_from_dict

EPOCHS, PATIENCE = AddClassConfig.epochs, AddClassConfig.patience


@dataclasses.dataclass(frozen=True)
class AddClassResult:
    """The new run directory, its class names, metrics on the validation features
    (overall accuracy, old classes' accuracy before/after, new classes' recall) and the
    wall time in seconds."""

    out_dir: str
    class_names: tuple
    metrics: dict
    seconds: float


@renamed(**TRUSTED)
def add_classes(run, data, out_dir, *, epochs=EPOCHS, patience=PATIENCE, safe_mode=True,
                overwrite=False, verbose=True, timer=None):
    """Add the classes of `data` (a folder of new class subfolders, or a CSV) to the run
    directory `run`, writing a new run directory `out_dir`; returns AddClassResult.

    The run's own training data must still be where its config.json says (its cached
    features are replayed; when they are gone they are recomputed, which is said).
    epochs, patience: the head fit's cap and early-stopping patience (defaults 30, 3;
        epochs=0: imprinting only).
    safe_mode: False lets the run's model run code when loaded (Keras safe mode off).
    timer: the `core.timing.StageTimer` its stages are timed in (default: a new one);
        the new run's run.json records them ("stages") and, with `verbose`, one line
        prints them.
    """
    start = time.perf_counter()
    timer = timer or StageTimer()
    with timer.active():
        result = _add_classes(run, data, out_dir, epochs, patience, safe_mode, overwrite,
                              verbose)
    record = timer.to_json()
    RunDir(result.out_dir).record("stages", record)
    if verbose:
        print(f"time: {format_summary(record)}")
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


def _add_classes(run, data, out_dir, epochs, patience, safe_mode, overwrite, verbose):
    start = time.perf_counter()
    source = RunDir(os.path.expanduser(os.fspath(run)))
    if source.read_config() is None:
        raise ConfigError(f"The `run` argument should be a run directory (with "
                          f"config.json). Received: run={os.fspath(run)!r}")
    read_run_config(source)  # checked as a recipe, naming the file
    recipe = recipe_from_dict(source.read_config())
    task = recipe.task_config()
    if not task.adds_classes:
        raise ConfigError(f"add-class extends multiclass and multilabel classifiers. "
                          f"Received: a run of task={recipe.task!r} ({source.path})")
    out = run_dir(out_dir)
    check_claim(out, recipe, overwrite=overwrite, resumable=False)  # before the work
    with stage("load"):
        loaded = load_run(source.path, safe_mode=safe_mode)
    old_names = tuple(loaded.class_names)
    data = os.path.expanduser(os.fspath(data))
    added = _class_names(task, data)
    _check_new_names(added, old_names, source.path)
    names = old_names + added
    with stage("scan"):
        # Encoded over all classes at once: the new images' label rows are final.
        new = load_data(data, image_size=recipe.input_spec(), task=recipe.task,
                        class_names=names, val_split=recipe.data.val_split,
                        seed=recipe.seed, batch_size=recipe.schedule.batch_size,
                        verbose=verbose)
        old = load_run_data(recipe, verbose=verbose)
    model = unwrap_tta(loaded.model)  # a TTA wrapper's model: add classes to that one
    store = FeatureStore.default()
    with stage("extraction"):
        if verbose and not has_features(model, old, store):
            print(f"the cached features of {source.path}'s training images are gone: "
                  "recomputing them (one backbone pass)")
        common = dict(store=store, batch_size=recipe.schedule.batch_size,
                      verbose=int(verbose))
        old_train, old_val = split_features(model, old, **common)
        new_train, new_val = split_features(model, new, **common)
    k_old = len(old_names)

    def joined(a, b):  # features and labels of old + new images, labels over all classes
        y = np.zeros((a.count + b.count, len(names)), np.float32)
        y[:a.count, :k_old] = a.y[0]
        y[a.count:] = b.y[0]
        return np.concatenate([a.x[0], b.x[0]]), y

    train_x, train_y = joined(old_train, new_train)
    val_x, val_y = joined(old_val, new_val) if old_val is not None and new_val is not None \
        else (None, None)
    with stage("fit"):
        grown = _grown_model(model, recipe, len(names), old_train.x[0], old_train.y[0],
                             train_x[old_train.count:], train_y[old_train.count:, k_old:])
        head = resolve(grown).head()
        before = _old_accuracy(resolve(model).head(), task, old_val)
        if epochs:
            _fit_head(head, task, recipe, train_x, train_y, val_x, val_y, epochs,
                      patience)
        metrics = _metrics(head, task, val_x, val_y, k_old, before, names)
    # The new run: its directory, recipe, classes, metrics, model and novelty score.
    claim_run(out, recipe, overwrite=overwrite, resumable=False)
    out.record("derived_from", {"run": os.path.abspath(source.path),
                                "run_id": (source.read_info() or {}).get("run_id"),
                                "added_classes": list(added),
                                "added_data": os.path.abspath(os.fspath(data))})
    out.write_config(recipe.to_dict())
    out.write_class_names(names)
    with stage("novelty"):
        novelty = _refit_novelty(loaded.novelty, grown, task, recipe, train_x, train_y,
                                 val_x)
    if novelty is not None:
        metrics["novelty"] = novelty.to_json()
    with stage("save"):
        save_bundle(grown, out.model_file, model_metadata(recipe, names), novelty=novelty)
    out.write_metrics(metrics)
    return AddClassResult(out.path, names, metrics, time.perf_counter() - start)


def _refit_novelty(novelty, model, task, recipe, train_x, train_y, val_x):
    """The source run's novelty score refitted to the grown head's classes (same
    detector, new class statistics, threshold recalibrated on validation), or None."""
    # The backbone is unchanged, so the detector the source run chose against outliers
    # still stands; refitting it needs no outlier pass (a backbone pass over the
    # validation images), which would cost a third of add-class's time.
    if novelty is None or val_x is None or not recipe.runtime.novelty:
        return None
    probs, logits = head_outputs(model, val_x, task)
    return novelty.refit(train_x, task.novelty_ids(train_y), val_x, probs, logits,
                         seed=recipe.seed)


def _output(model):
    """(the nested model holding the output layer, the output layer)."""
    holder, layer = model, model
    while getattr(layer, "layers", None):
        holder, layer = layer, layer.layers[-1]
    if not isinstance(layer, keras.layers.Dense):
        raise ConfigError(f"add-class needs a Dense output layer (a transferkit head); "
                          f"{model.name!r} ends in {type(layer).__name__}.")
    return holder, layer


def _grown_model(model, recipe, num_classes, old_x, old_y, new_x, new_y):
    """`model` with `num_classes` outputs: everything below the head is `model`'s own
    (shared, not rebuilt), the head is the recipe's with `model`'s head weights, the old
    output units kept and one imprinted unit per new class."""
    task = recipe.task_config()
    resolved = resolve(model)
    # The layout build_model makes (image -> ... -> pool -> head), on the loaded layers:
    # rebuilding the backbone only to copy every weight into it cost seconds.
    head = build_head(resolved.features.shape[-1], task.output_units(num_classes),
                      recipe.model.head, task)
    grown = keras.Model(model.inputs, head(resolved.features), name=model.name)
    _, old_out = _output(model)
    holder, new_out = _output(grown)
    old_vars = [v for v in resolve(model).head_variables()
                if not any(v is w for w in old_out.weights)]
    new_vars = [v for v in head.weights if not any(v is w for w in new_out.weights)]
    if [v.shape for v in old_vars] != [v.shape for v in new_vars]:
        raise ConfigError("add-class could not match the run's model to its recipe "
                          "(the weights differ in shape); was the run's model changed?")
    for target, value in zip(new_vars, old_vars):
        target.assign(value)
    kernel, bias = (np.asarray(w) for w in old_out.weights)
    inner = keras.Model(holder.inputs, new_out.input)  # the output layer's input
    new_h, old_h = _predict(inner, new_x), _predict(inner, old_x)
    old_ids = old_y.argmax(axis=1)
    # A plain linear head is not a cosine classifier: pooled (ReLU) features share one
    # big mean direction, so a unit along the raw new-class mean would win for every
    # image. Imprint along the new mean minus the old images' mean, scaled to the old
    # units' norm, and give it the bias that makes its logit on its own class mean
    # equal the old units' average logit on theirs.
    own = np.mean([kernel[:, c] @ old_h[old_ids == c].mean(axis=0) + bias[c]
                   for c in np.unique(old_ids)])
    scale, centre = np.linalg.norm(kernel, axis=0).mean(), old_h.mean(axis=0)
    units, biases = [], []
    for c in range(new_y.shape[1]):
        mean = new_h[new_y[:, c] > 0.5].mean(axis=0)
        w = (mean - centre) / max(np.linalg.norm(mean - centre), 1e-12) * scale
        units.append(w)
        biases.append(own - w @ mean)
    new_out.kernel.assign(np.concatenate([kernel, np.stack(units, axis=1)], axis=1))
    new_out.bias.assign(np.concatenate([bias, biases]))
    return grown


def _fit_head(head, task, recipe, x, y, val_x, val_y, epochs, patience):
    """Train the head alone on features in memory (everything below it is untouched)."""
    phase, batch = recipe.schedule.head, recipe.schedule.batch_size
    steps = -(-len(x) // batch)
    # As phase 1 on cached features trains: an epoch per call from one iterator over
    # the reshuffled features, validated in memory (per-epoch iterators would cost
    # more than the epochs).
    head.compile(optimizer=keras.optimizers.Adam(phase.learning_rate), loss=task.loss(),
                 metrics=task.metrics(y.shape[1]), steps_per_execution=steps)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(x), seed=recipe.seed, reshuffle_each_iteration=True).batch(batch).repeat()
    validation = [] if val_x is None else [CachedValidation([(val_x, val_y)])]
    stop = keras.callbacks.EarlyStopping(monitor="val_loss" if validation else "loss",
                                         patience=patience, restore_best_weights=True)
    head.fit(data, steps_per_epoch=steps, epochs=epochs, callbacks=[*validation, stop],
             verbose=0)


def _old_accuracy(head, task, features):
    """Accuracy of the old head on the old classes' validation features (one class per
    image only, `Task.novelty_ids`), or None."""
    if features is None:
        return None
    truth = task.novelty_ids(features.y[0])
    if truth is None:
        return None
    outputs = _predict(head, features.x[0])
    return float(np.mean(task.novelty_ids(outputs) == truth))


def _metrics(head, task, x, y, k_old, before, class_names):
    """The task's validation report on all classes, plus (one class per image) the old
    classes' accuracy before and after and the new classes' recall."""
    if x is None:
        return {}
    outputs = _predict(head, x)
    report = task.score(outputs, y, class_names)
    truth, pred = task.novelty_ids(y), task.novelty_ids(outputs)
    if truth is not None:
        old, new = truth < k_old, truth >= k_old
        report.update(old_classes_accuracy=float(np.mean(pred[old] == truth[old])),
                      old_classes_accuracy_before=before,
                      new_classes_recall=float(np.mean(pred[new] == truth[new])))
    return {"val": report}


def _check_new_names(added, old_names, where):
    """ConfigError for a new class that is an old one, or differs from an old one or
    another new one only in case or Unicode normalisation (on macOS and Windows such
    class folders merge into one)."""
    clash = sorted(set(added) & set(old_names))
    if clash:
        raise ConfigError(f"add-class adds new classes; {clash} already exist in "
                          f"{where} (its classes: {list(old_names)}).")
    alike = confusable_pairs(added, old_names) + confusable_pairs(added)
    if alike:
        raise ConfigError("add-class adds new classes, but " + "; ".join(
            describe(*pair) for pair in alike) + f" (the classes of {where}: "
            f"{list(old_names)}). Rename the new class (its folder, or its label in "
            "the CSV).")


def _predict(model, x, batch_size=1024):
    """`model`'s outputs on in-memory features, in a few calls (no dataset iterator)."""
    return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def _class_names(task, data):
    """The classes a new-data source holds, in sorted order."""
    _, labels, _, given = task.read_files(data, scanned=False)
    found = given or sorted({part for label in labels for part in task.label_parts(label)})
    if not found:
        raise ConfigError(f"The `data` argument {data} holds no labelled images: give a "
                          "folder of new class subfolders or a CSV of path,label rows.")
    return tuple(found)
