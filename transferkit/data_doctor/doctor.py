"""`doctor(data, ...)`: find wrong labels, leaks across splits, near-duplicates, outliers,
class imbalance and what to label next, from the backbone features training caches.

    result = doctor("data/pets", out_dir="doctor/pets")
    result.rows[0]  # {"path": ..., "kind": "leak", "other": ..., "score": 0.97, ...}

It reads the data exactly as `train` does (same sources, scan, split, input size), runs
the frozen backbone once per image into the feature cache training uses (a second
doctor run, or a run with the same settings, reuses it), fits K-fold linear heads on
the cached features for out-of-fold probabilities, and hands features and
probabilities to cleanlab (see `data_doctor.issues`). It writes `issues.json`, a
review page `review.html` and `fixes.csv` (its proposals, for `train --fixes`).
"""

import dataclasses
import math
import os
import time
from importlib.util import find_spec

import numpy as np

from transferkit.training.recipe import build_run_model, load_run_data
from transferkit.core.errors import ConfigError
from transferkit.core.files import write_json
from transferkit.data.augment import augment_config
from transferkit.data.files import folder_dataset
from transferkit.data.fixes import write_fixes
from transferkit.data_doctor import issues as data_issues
from transferkit.data_doctor.review import write_review
from transferkit.models.parts import resolve
from transferkit.training.cache import FeatureStore, extract_features, split_features
from transferkit.training.recipe import RecipeConfig, recipe_from_dict
from transferkit.data_doctor.config import DoctorConfig
from transferkit.models.config import ModelConfig

ISSUES_FILE, REVIEW_FILE, FIXES_FILE = "issues.json", "review.html", "fixes.csv"


@dataclasses.dataclass(frozen=True)
class DoctorResult:
    """The rows found (ranked: leaks first), their counts by kind, the files written
    ({name: path}) and the cost: seconds taken and an estimate of one live phase-1
    epoch (one frozen-backbone pass over the training split) on this machine."""

    rows: tuple
    counts: dict
    files: dict
    seconds: float
    epoch_seconds: float


def doctor(data, *, out_dir=None, val_data="", backbone=None, weights=ModelConfig.weights,
           image_size=None, folds=DoctorConfig.folds, views=DoctorConfig.views,
           unlabeled=None, seed=RecipeConfig.seed, store=None, verbose=True, **recipe_keys):
    """Check the labelled images of `data` (any source `train` takes); returns a
    DoctorResult and, with `out_dir`, writes issues.json, review.html and fixes.csv.

    val_data: a validation source (default: carved from `data` with val_split, as
        `train` does); the two splits are checked together and near-duplicates across
        them are reported as leaks. backbone, weights, image_size: the feature
        extractor (default: the recipe default backbone with ImageNet weights).
    folds: K of the out-of-fold heads (default 5). views: augmented views per training
        image added to the heads' training rows (default 0: clean features only, which
        flagged flips more precisely on data/sample with both backbones measured); see
        `DoctorConfig`.
    unlabeled: a folder of unlabelled images to rank, most uncertain first.
    store: a FeatureStore (default: the on-disk cache training uses).
    recipe_keys: any other recipe key (val_split, augment, scan, ...).
    """
    start = time.perf_counter()
    missing = [name for name in ("cleanlab", "imagehash") if find_spec(name) is None]
    if missing:
        raise ConfigError(f"transferkit doctor needs {' and '.join(missing)}: "
                          "pip install 'transferkit[doctor]'")
    if "task" in recipe_keys:  # confident learning here is for one class per image
        raise ConfigError("The doctor checks one class label per image (multiclass "
                          f"data): the `task` cannot be set. Received: "
                          f"task={recipe_keys['task']!r}")
    DoctorConfig(folds, views)  # checked before any work
    # Confident learning needs one class per image: the single-label task, whatever
    # the default task is.
    keys = {"task": "multiclass", "data": os.fspath(data), "val_data": os.fspath(val_data or ""),
            "weights": weights, "seed": seed, **recipe_keys}
    keys.update({k: v for k, v in (("backbone", backbone), ("image_size", image_size))
                 if v is not None})
    recipe = recipe_from_dict(keys)
    splits = load_run_data(recipe, verbose=verbose)
    _check_sizes(splits)  # every input checked before any feature is computed
    to_rank = None if not unlabeled else folder_dataset(
        unlabeled, "unlabeled", splits.image_size, batch_size=recipe.schedule.batch_size,
        verbose=verbose)
    model = build_run_model(recipe, splits.num_classes)
    store = store if store is not None else FeatureStore.default()
    common = dict(store=store, seed=seed, batch_size=recipe.schedule.batch_size,
                  verbose=int(bool(verbose)))
    train, val = split_features(model, splits, **common)
    aug_views = None
    if views:
        aug = augment_config(recipe.data.augment) or augment_config("light")
        # Row 0 of the cached views is the clean pass (x already holds it).
        aug_views = split_features(model, splits, views=views, augment=aug, **common)[0].x[1:]
    x = train.x[0] if val is None else np.concatenate([train.x[0], val.x[0]])
    y = train.y[0] if val is None else np.concatenate([train.y[0], val.y[0]])
    labels = np.argmax(y, axis=1)
    paths = list(splits.train_files) + list(splits.val_files if val is not None else ())
    split_of = ["train"] * train.count + ["val"] * (0 if val is None else val.count)
    names = list(splits.class_names)
    if aug_views is not None and val is not None:  # val rows have no augmented views
        pad = np.repeat(x[None, train.count:], len(aug_views), axis=0)
        aug_views = np.concatenate([aug_views, pad], axis=1)
    probs = data_issues.out_of_fold_probabilities(x, labels, len(names), folds=folds,
                                                  views=aug_views, seed=seed)
    rows = data_issues.find_issues(x, labels, probs, paths, split_of, names)
    if to_rank is not None:
        rows += _label_next(model, x, labels, names, *to_rank, seed)
    rows = data_issues.rank(rows)
    epoch = _epoch_seconds(model, splits, recipe.schedule.batch_size)
    files = {}
    if out_dir:
        files = _write(out_dir, rows, names, paths, labels, probs)
    return DoctorResult(tuple(rows), data_issues.summary(rows), files,
                        time.perf_counter() - start, epoch)


def _check_sizes(splits):
    """`issues.check_class_sizes` on the images per class of the training and
    validation splits, when the source lists them (file sources)."""
    rows = [y for y in (splits.train_labels, splits.val_labels) if y is not None]
    if rows:
        ids = np.argmax(np.concatenate(rows), axis=1)
        data_issues.check_class_sizes(np.bincount(ids, minlength=len(splits.class_names)),
                                      splits.class_names)


def _label_next(model, x, labels, names, dataset, files, seed):
    """Rows of the unlabelled images (`dataset` of `files`, `data.files.folder_dataset`),
    ranked by the uncertainty of a head fitted on all labelled features."""
    features, _ = extract_features(resolve(model).feature_extractor(), dataset, verbose=0)
    head = data_issues.fit_head(x, labels, seed)
    probs = np.zeros((len(files), len(names)))
    probs[:, head.classes_] = head.predict_proba(features)
    return data_issues.label_next(probs, files, names)


def _epoch_seconds(model, splits, batch_size):
    """One live phase-1 epoch, estimated: the frozen backbone's time on one training
    batch (after a warm-up call) times the number of training batches."""
    extractor = resolve(model).feature_extractor()
    images = next(iter(splits.train))[0]
    extractor.predict_on_batch(images)
    begin = time.perf_counter()
    extractor.predict_on_batch(images)
    per_batch = time.perf_counter() - begin
    return per_batch * math.ceil(len(splits.train_files) / max(len(images), 1))


def _write(out_dir, rows, names, paths, labels, probs):
    """issues.json, fixes.csv (the proposals) and review.html in `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    files = {name: os.path.join(out_dir, name)
             for name in (ISSUES_FILE, FIXES_FILE, REVIEW_FILE)}
    write_json(files[ISSUES_FILE], list(rows))
    proposed = data_issues.proposals(rows)
    write_fixes(files[FIXES_FILE], proposed)
    # Examples of each class: its most confidently right images.
    confident = probs[np.arange(len(labels)), labels]
    examples = {name: [paths[i] for i in np.argsort(-confident)
                       if labels[i] == c][:4] for c, name in enumerate(names)}
    write_review(files[REVIEW_FILE], rows, names, examples, proposed)
    return files
