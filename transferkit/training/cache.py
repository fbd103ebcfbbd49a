"""Phase 1 on cached backbone features: run the frozen backbone once, train the head fast.

While the backbone is frozen its output for an image never changes, so phase 1 can run
the backbone once per image and train the head on the stored feature vectors (the
"pool" layer's output), as the Keras transfer-learning guide describes. The head is the
very `keras.Model` nested in the full model, so training it on features trains the full
model: `merge` only has work to do when it is handed a separate head or a bare
feature extractor.

    splits = load_data("data/pets", image_size=224, augment=AugmentConfig())
    fine_tune(model, splits, cache=FeatureCache(views=2, augment=AugmentConfig(),
                                                store=FeatureStore.default()))

`fine_tune` (the orchestrator) runs phase 1 on the features this module extracts and
stores; `split_features` is the part that can be called on its own.

views=0 stores one clean (unaugmented) pass; views=K stores K augmented passes and each
epoch shows every image once, in one of its K views picked at random.

Cache files are `<key>.npz` in `cache_dir()` ($TRANSFERKIT_CACHE/features, default
~/.cache/transferkit/features). The key hashes everything the features depend on: the
feature extractor's layer configs and weights (so backbone, constructor arguments,
weights file or random init, input size, preprocessing and pooling all count), the
image files (path, size, mtime) with their labels, and the augmentation, views and seed.
A file that fails to load, or whose key, shape or checksum disagrees, is recomputed with
a warning, never used.
"""

import dataclasses
import hashlib
import json
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError, DataError
from transferkit.core.files import atomic_path
from transferkit.data.pipeline import make_dataset
from transferkit.data.splits import DataSplits
from transferkit.models.parts import resolve

FORMAT = 1  # bump when the file layout or the key recipe changes
DEFAULT_VIEWS = 2  # augmented views per training image when augmentation is on


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """Phase 1 on cached features (`fine_tune(..., cache=FeatureCache())`).

    views: augmented views per training image (0: one clean pass). augment: the
        AugmentConfig file sources are re-read with when views > 0. store: a
        FeatureStore (default: memory only, this process). seed: of the views.
    """

    views: int = 0
    augment: object = None
    store: object = None
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """The splits to extract: datasets, and for file sources the files and labels that
    key the cache and are re-read in a fixed order."""

    train: object
    val: object = None
    train_files: tuple = ()
    train_labels: object = None
    val_files: tuple = ()
    val_labels: object = None
    image_size: object = None

    @classmethod
    def of(cls, data, val=None):
        """From a DataSplits, or from (train, val) datasets."""
        if isinstance(data, DataSplits):
            return cls(data.train, data.val, data.train_files, data.train_labels,
                       data.val_files, data.val_labels, data.image_size)
        return cls(data, val)


@dataclasses.dataclass(frozen=True)
class Features:
    """Cached features of one split: x [views, N, D] and labels y [views, N, C]."""

    x: np.ndarray
    y: np.ndarray

    @property
    def count(self):
        return self.x.shape[1]


def cache_dir(directory=None):
    """The feature cache folder: `directory`, else $TRANSFERKIT_CACHE/features, else
    ~/.cache/transferkit/features (the same root as the scan's normalised copies)."""
    if directory:
        return os.path.expanduser(directory)
    root = os.environ.get("TRANSFERKIT_CACHE") or "~/.cache/transferkit"
    return os.path.join(os.path.expanduser(root), "features")


class FeatureStore:
    """Features by key: in memory for this process and, unless directory=None, in files.

    `hits` and `misses` count lookups, so callers can see what was recomputed.
    """

    def __init__(self, directory=None):
        self.directory = None if directory is None else cache_dir(directory)
        self.hits, self.misses, self._memory = 0, 0, {}

    @classmethod
    def default(cls):
        """A store backed by `cache_dir()`."""
        return cls(cache_dir())

    def path(self, key):
        return None if self.directory is None else os.path.join(self.directory, f"{key}.npz")

    def get(self, key):
        """The `Features` stored under `key`, or None (a miss)."""
        found = self._memory.get(key)
        path = self.path(key)
        if found is None and path and os.path.exists(path):
            try:
                found = _read(path, key)
            # A torn or tampered file can fail in many ways (BadZipFile, EOFError,
            # zlib.error, ValueError...); every one of them means "recompute".
            except Exception as error:  # noqa: BLE001
                warnings.warn(f"Feature cache file {path} is unusable ({error}); "
                              "recomputing it.", stacklevel=2)
            else:
                self._memory[key] = found
        self.hits, self.misses = self.hits + (found is not None), self.misses + (found is None)
        return found

    def put(self, key, features):
        self._memory[key] = features
        if self.directory is not None:
            _write(self.path(key), key, features)


def _checksum(features):
    digest = hashlib.blake2b(digest_size=16)
    for array in (features.x, features.y):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _write(path, key, features):
    meta = {"format": FORMAT, "key": key, "x_shape": list(features.x.shape),
            "y_shape": list(features.y.shape), "checksum": _checksum(features)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=features.x, y=features.y, meta=np.array(json.dumps(meta)))


def _read(path, key):
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        features = Features(archive["x"], archive["y"])
    if meta.get("format") != FORMAT or meta.get("key") != key:
        raise ValueError(f"it was written for another key or format: {meta.get('key')}")
    if [list(features.x.shape), list(features.y.shape)] != [meta["x_shape"], meta["y_shape"]]:
        raise ValueError(f"shapes {features.x.shape}, {features.y.shape} differ from the "
                         f"recorded {meta['x_shape']}, {meta['y_shape']}")
    if _checksum(features) != meta["checksum"]:
        raise ValueError("checksum mismatch")
    return features


# --- keys ----------------------------------------------------------------------------

def model_fingerprint(model, parts=None):
    """Hash of what maps an image to `model`'s head input (its feature extractor, see
    `models.parts`): layer configs (names left out, since Keras numbers unnamed layers
    per session) and every weight, BN statistics included.

    Hashing the weights themselves makes a weights file, "imagenet" and a seeded
    random init all safe: two different initialisations never share a key.
    """
    extractor = resolve(model, parts).feature_extractor()
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps(_describe(extractor), sort_keys=True, default=str).encode())
    for weight in extractor.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _describe(layer):
    if hasattr(layer, "layers"):  # a nested model: describe its layers, not its graph
        return [_describe(child) for child in layer.layers]
    # Names are numbered per session and `trainable` flips between phases: neither
    # changes what the layer computes in inference mode.
    config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
    return [type(layer).__name__, config]


def data_fingerprint(files, labels, image_size, *, augment=None, views=0, seed=0):
    """Hash of a split's identity: each file's path, size and mtime, the labels, the
    image size, and the augmentation config, views and seed."""
    digest = hashlib.blake2b(digest_size=20)
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(f"Cannot read image file {path} to key the feature cache: "
                            f"{error}") from None
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                      .encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.float32).tobytes())
    digest.update(repr((tuple(image_size), augment if views else None, views,
                        seed if views else None)).encode())
    return digest.hexdigest()


def feature_key(model_fp, data_fp):
    return hashlib.blake2b(f"{FORMAT}:{model_fp}:{data_fp}".encode(),
                           digest_size=20).hexdigest()


# --- extraction ----------------------------------------------------------------------

def extract_features(extractor, dataset, verbose=1):
    """(features [N, D], labels [N, C]) from one pass of `extractor` over a dataset of
    (image, label) batches, with Keras' progress bar. The model runs wherever TF places
    it (the GPU when there is one); labels are kept from the same pass, so shuffled or
    mixed batches stay aligned."""
    steps = int(dataset.cardinality())
    bar = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbose,
                              unit_name="batch")
    xs, ys, full = [], [], None
    for images, labels in dataset:
        n = len(images)
        full = full or n
        if n < full:  # pad the last batch: a new batch shape would trace the model again
            images = tf.concat([images, tf.zeros([full - n, *images.shape[1:]],
                                                 images.dtype)], axis=0)
        out = extractor.predict_on_batch(images)[:n]
        xs.append(np.asarray(out, dtype=np.float32))
        ys.append(np.asarray(labels, dtype=np.float32).reshape(n, -1))
        bar.add(1)
    if not xs:
        raise DataError("extract_features: the dataset is empty.")
    return np.concatenate(xs), np.concatenate(ys)


def split_features(model, data, *, parts=None, views=0, augment=None, seed=0,
                   batch_size=32, store=None, verbose=1):
    """(train, val) `Features` of `data` (a DataSplits or FeatureSource) at the input of
    `model`'s head (see `models.parts`); val is None without a val split.

    File splits are re-read in file order without augmentation (views=0) or K times
    with `augment` on (views=K), and cached in `store` (default: memory only) under a
    key of model and data. In-memory and TFDS splits have no file identity: their
    datasets are passed over max(1, views) times as given and never cached.
    """
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    if views < 0 or (views and augment is None and source.train_files):
        raise ConfigError("The `views` argument should be 0, or >= 1 with an `augment` "
                          f"config. Received: views={views}, augment={augment!r}")
    store = store if store is not None else FeatureStore()
    extractor, model_fp = resolve(model, parts).feature_extractor(), None
    out = []
    for split in ("train", "val"):
        files, labels = getattr(source, f"{split}_files"), getattr(source, f"{split}_labels")
        passes = max(1, views) if split == "train" else 1
        if not files:
            dataset = getattr(source, split)
            out.append(None if dataset is None else _compute(extractor, [dataset] * passes,
                                                             verbose))
            continue
        aug = augment if split == "train" and views else None
        model_fp = model_fp or model_fingerprint(model, parts)
        key = feature_key(model_fp, data_fingerprint(
            files, labels, source.image_size, augment=aug, views=views if aug else 0,
            seed=seed))
        found = store.get(key)
        if found is None:
            datasets = [make_dataset(files, labels, image_size=source.image_size,
                                     batch_size=batch_size, training=aug is not None,
                                     augment=aug, seed=seed * 1009 + v, deterministic=True)
                        for v in range(passes)]
            found = _compute(extractor, datasets, verbose)
            store.put(key, found)
        out.append(found)
    return tuple(out)


def _compute(extractor, datasets, verbose):
    pairs = [extract_features(extractor, d, verbose) for d in datasets]
    return Features(np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs]))


# --- feature datasets and merging -------------------------------------------------

def feature_dataset(features, batch_size=32, *, training=False, seed=0):
    """Batches of (feature, label); training: reshuffled each epoch, every image once
    per epoch in one of its views drawn at random."""
    views, n = features.x.shape[:2]
    x = tf.constant(features.x.reshape(views * n, -1))
    y = tf.constant(features.y.reshape(views * n, -1))
    ids = tf.data.Dataset.range(n)
    if training:
        ids = ids.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if views > 1:
            picks = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ids = tf.data.Dataset.zip((ids, picks)).map(lambda i, r: (r % views) * n + i)
    batches = ids.batch(batch_size).map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
    return batches.prefetch(tf.data.AUTOTUNE)


def merge(model, head):
    """One `keras.Model` predicting backbone-then-`head` on raw images.

    model: a transferkit model (its "head" takes `head`'s weights; the same object is
        returned, ready for phase 2) or a feature extractor (image -> features; a new
        model is built on top of it).
    """
    if not any(layer.name == "head" for layer in model.layers):
        return keras.Model(model.input, head(model.output), name=model.name)
    current = model.get_layer("head")
    if current is not head:
        try:
            current.set_weights(head.get_weights())
        except ValueError as error:
            raise ConfigError(f"The `head` argument does not match the head of model "
                              f"{model.name!r}: {error}") from None
    return model
