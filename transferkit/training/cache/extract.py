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

Phase 2's boundary activations (see `training.boundary`) live beside them as
`<key>.boundary.x.npy` (float16, read through a memory map), `.y.npy` and `.json` (the
commit mark, written last), keyed by the frozen bottom's layers and weights, the cut and
the same data identity; `split_features(..., boundary=cut)` stores them in phase 1's
pass, `split_boundary` finds or computes them, `mapped_dataset` reads them in batches.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from transferkit.core.errors import ConfigError, DataError
from transferkit.core.files import atomic_path, remove_stale_temp_files, write_json
from transferkit.data.files import undecodable
from transferkit.data.pipeline import make_dataset
from transferkit.data.splits import DataSplits
from transferkit.models.parts import resolve
from transferkit.training.boundary import boundary_extractor

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
    # Phase 2 on cached boundary activations (see `training.boundary`): `boundary`
    # turns it on, `boundary_max_gb` caps its storage (above it phase 2 runs live), and
    # `head=False` leaves phase 1 live while phase 2 still uses the boundary cache.
    head: bool = True
    boundary: bool = False
    boundary_max_gb: float = 2.0


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
    skipped: object = None  # the DataSplits' SkipWatch: files named here go in it

    @classmethod
    def of(cls, data, val=None):
        """From a DataSplits, or from (train, val) datasets."""
        if isinstance(data, DataSplits):
            return cls(data.train, data.val, data.train_files, data.train_labels,
                       data.val_files, data.val_labels, data.image_size, data.skipped)
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
        if self.directory is not None:  # what a killed writer left: never read
            remove_stale_temp_files(self.directory)

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

    # Boundary activations are large: float16 .npy files read through a memory map, a
    # JSON file written last as the commit mark (no checksum: it would read them all).
    def _mapped_paths(self, key):
        base = os.path.join(self.directory, f"{key}.boundary")
        return base + ".x.npy", base + ".y.npy", base + ".json"

    def get_mapped(self, key):
        """The memory-mapped boundary `Features` under `key`, or None."""
        found = self._memory.get(("mapped", key))
        if found is None and self.directory is not None:
            x_path, y_path, meta_path = self._mapped_paths(key)
            if os.path.exists(meta_path):
                try:
                    with open(meta_path) as f:
                        meta = json.load(f)
                    found = Features(np.load(x_path, mmap_mode="r"), np.load(y_path))
                    if (meta.get("format"), meta.get("key")) != (FORMAT, key) or \
                            list(found.x.shape) != meta["x_shape"]:
                        raise ValueError("it was written for another key, format or shape")
                except Exception as error:  # noqa: BLE001 - any damage means recompute
                    warnings.warn(f"Boundary cache file {meta_path} is unusable ({error}); "
                                  "recomputing it.", stacklevel=2)
                    found = None
        self.hits, self.misses = self.hits + (found is not None), self.misses + (found is None)
        return found

    @contextlib.contextmanager
    def mapped_writer(self, key, shape):
        """Yields (x float16 array of `shape`, y array to fill with [views, N, C]
        labels); committed when the block ends without error."""
        labels = {}

        class Labels:  # y's width is known only after extraction
            def __setitem__(self, index, value):
                labels["y"] = np.asarray(value, np.float32)

        if self.directory is None:
            x = np.empty(shape, np.float16)
            yield x, Labels()
            self._memory[("mapped", key)] = Features(x, labels["y"])
            return
        os.makedirs(self.directory, exist_ok=True)
        x_path, y_path, meta_path = self._mapped_paths(key)
        with atomic_path(x_path) as tmp:
            x = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            yield x, Labels()
            x.flush()
            del x
        with atomic_path(y_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, labels["y"])
        write_json(meta_path, {"format": FORMAT, "key": key, "x_shape": list(shape)})


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
    return _fingerprint(resolve(model, parts).feature_extractor())


def _fingerprint(extractor, extra=""):
    digest = hashlib.blake2b(digest_size=20)
    digest.update(extra.encode())
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

def extract_features(extractor, dataset, verbose=1, sink=None):
    """(features [N, D], labels [N, C]) from one pass of `extractor` over a dataset of
    (image, label) batches, with Keras' progress bar. The model runs wherever TF places
    it (the GPU when there is one); labels are kept from the same pass, so shuffled or
    mixed batches stay aligned.

    sink: for a two-output extractor (features, boundary activations), called with each
    batch of the second output, so large activations are written out as they come.
    """
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
        out = extractor.predict_on_batch(images)
        if sink is not None:
            out, activations = out
            sink(np.asarray(activations[:n]))
        xs.append(np.asarray(out[:n], dtype=np.float32))
        ys.append(np.asarray(labels, dtype=np.float32).reshape(n, -1))
        bar.add(1)
    if not xs:
        raise DataError("extract_features: the dataset is empty.")
    return np.concatenate(xs), np.concatenate(ys)


def split_features(model, data, *, parts=None, views=0, augment=None, seed=0,
                   batch_size=32, store=None, verbose=1, boundary=None):
    """(train, val) `Features` of `data` (a DataSplits or FeatureSource) at the input of
    `model`'s head (see `models.parts`); val is None without a val split.

    File splits are re-read in file order without augmentation (views=0) or K times
    with `augment` on (views=K), and cached in `store` (default: memory only) under a
    key of model and data. In-memory and TFDS splits have no file identity: their
    datasets are passed over max(1, views) times as given and never cached.

    boundary: a `boundary.Cut`; the same passes also store the activations at the cut
    in `store` (file splits only), where `split_boundary` finds them in phase 2.
    """
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    if views < 0 or (views and augment is None and source.train_files):
        raise ConfigError("The `views` argument should be 0, or >= 1 with an `augment` "
                          f"config. Received: views={views}, augment={augment!r}")
    store = store if store is not None else FeatureStore()
    extractor, model_fp = resolve(model, parts).feature_extractor(), None
    out, boundary_fp = [], None
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
        if boundary is not None and boundary_fp is None:
            boundary_fp = boundary_fingerprint(model, boundary, parts)
        fps = (model_fp, boundary_fp)
        try:
            found = _file_features(model, parts, extractor, source, split, aug, views,
                                   passes, batch_size, seed, store, verbose, boundary, fps)
        except DECODE_ERRORS as error:
            # A file changed since the scan (or listed by --no-scan) fails to decode:
            # name it, leave it out (the live pipeline skips it too), extract again.
            source = _without_undecodable(source, split, error)
            found = _file_features(model, parts, extractor, source, split, aug, views,
                                   passes, batch_size, seed, store, verbose, boundary, fps)
        out.append(found)
    return tuple(out)


# What the file pipeline raises for a file it cannot read or decode.
DECODE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError,
                 tf.errors.NotFoundError, tf.errors.UnknownError)


def _without_undecodable(source, split, error):
    """`source` without the files of `split` that fail to read or decode; raises
    `error` when every file decodes (the failure is something else)."""
    files, labels = getattr(source, f"{split}_files"), getattr(source, f"{split}_labels")
    bad = undecodable(files)
    if not bad:
        raise error
    if source.skipped is not None:
        source.skipped.named.update(bad)
    else:
        warnings.warn(f"{len(bad)} file(s) failed to decode and were left out of the "
                      f"feature cache: {sorted(bad)}", stacklevel=3)
    keep = [i for i, f in enumerate(files) if f not in bad]
    if not keep:
        raise DataError(f"No file of the {split} split decodes: {sorted(bad)[:5]}")
    return dataclasses.replace(source, **{f"{split}_files": tuple(files[i] for i in keep),
                                          f"{split}_labels": np.asarray(labels)[keep]})


def _file_features(model, parts, extractor, source, split, aug, views, passes,
                   batch_size, seed, store, verbose, boundary, fps):
    """Features of one file split (from `store`, or extracted and stored)."""
    model_fp, boundary_fp = fps
    files, labels = getattr(source, f"{split}_files"), getattr(source, f"{split}_labels")
    key = feature_key(model_fp, data_fingerprint(
        files, labels, source.image_size, augment=aug, views=views if aug else 0,
        seed=seed))
    found = store.get(key)
    boundary_key = None if boundary is None else feature_key(
        boundary_fp, _data_fp(source, split, aug, views, seed))
    needs_boundary = boundary_key is not None and store.get_mapped(boundary_key) is None
    if found is None or needs_boundary:
        datasets = _file_passes(source, split, aug, passes, batch_size, seed)
        if needs_boundary:  # one extractor, two outputs: no extra backbone pass
            two = boundary_extractor(model, boundary, parts)
            shape = (passes, len(files), *boundary.shape)
            with store.mapped_writer(boundary_key, shape) as (xb, yb):
                found = _compute(two, datasets, verbose, xb)
                yb[...] = found.y
        else:
            found = _compute(extractor, datasets, verbose)
        store.put(key, found)
    return found


def _data_fp(source, split, aug, views, seed):
    return data_fingerprint(getattr(source, f"{split}_files"),
                            getattr(source, f"{split}_labels"), source.image_size,
                            augment=aug, views=views if aug else 0, seed=seed)


def _file_passes(source, split, aug, passes, batch_size, seed):
    """The datasets of a file split's passes: in file order, augmented when `aug`."""
    files, labels = getattr(source, f"{split}_files"), getattr(source, f"{split}_labels")
    # skip_errors=False: a file that fails must stop the pass (then it is named and
    # left out), or the features would not line up with the files that key them.
    return [make_dataset(files, labels, image_size=source.image_size, batch_size=batch_size,
                         training=aug is not None, augment=aug, seed=seed * 1009 + v,
                         deterministic=True, skip_errors=False)
            for v in range(passes)]


def _compute(extractor, datasets, verbose, boundary_out=None):
    """Features [views, N, D] of each dataset; with `boundary_out` (an array
    [views, N, ...]), a two-output extractor's activations are written into it."""
    pairs = []
    for v, dataset in enumerate(datasets):
        sink = None
        if boundary_out is not None:
            offset = [0]

            def sink(batch, v=v, offset=offset):
                boundary_out[v, offset[0]:offset[0] + len(batch)] = batch
                offset[0] += len(batch)
        pairs.append(extract_features(extractor, dataset, verbose, sink=sink))
    return Features(np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs]))


# --- boundary activations (phase 2 above a frozen bottom) --------------------------

def boundary_fingerprint(model, cut, parts=None):
    """Hash of what maps an image to the activations at `cut` (configs and weights of
    everything below it), and of the cut itself."""
    return _fingerprint(boundary_extractor(model, cut, parts, features=False),
                        f"boundary:{cut.layer}:")


def boundary_bytes(source, cut, views):
    """Estimated float16 storage of a FeatureSource's boundary activations: max(1, views)
    per training image, one per validation image (uncounted datasets: by batches)."""
    total = 0
    for split, passes in (("train", max(1, views)), ("val", 1)):
        files, dataset = getattr(source, f"{split}_files"), getattr(source, split)
        if files:
            count = len(files)
        elif dataset is None:
            count = 0
        else:
            batches = int(dataset.cardinality())
            spec = dataset.element_spec[0]
            count = max(batches, 0) * (spec.shape[0] or 32)
        total += passes * count * cut.bytes_per_image()
    return total


def split_boundary(model, data, cut, *, parts=None, views=0, augment=None, seed=0,
                   batch_size=32, store=None, verbose=1):
    """(train, val) `Features` of the activations at `cut`: x [views, N, *cut.shape] in
    float16 (memory-mapped when `store` has a directory), as `split_features` reads
    images (views, augmentation, file order); val is None without a val split. File
    splits are looked up in `store` first (phase 1 may have stored them)."""
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    store = store if store is not None else FeatureStore()
    two, model_fp, out = boundary_extractor(model, cut, parts), None, []
    for split in ("train", "val"):
        files = getattr(source, f"{split}_files")
        passes = max(1, views) if split == "train" else 1
        aug = augment if split == "train" and views else None
        if not files:
            dataset = getattr(source, split)
            if dataset is None:
                out.append(None)
                continue
            parts_x = []
            features = _compute(two, [dataset] * passes, verbose, _Collector(parts_x))
            x = np.stack([np.concatenate(p) for p in parts_x]).astype(np.float16)
            out.append(Features(x, features.y))
            continue
        model_fp = model_fp or boundary_fingerprint(model, cut, parts)
        args = (two, model_fp, split, aug, views, passes, batch_size, seed, store, verbose,
                cut)
        try:
            found = _file_boundary(source, *args)
        except DECODE_ERRORS as error:  # as in split_features: name, leave out, again
            source = _without_undecodable(source, split, error)
            found = _file_boundary(source, *args)
        out.append(found)
    return tuple(out)


def _file_boundary(source, two, model_fp, split, aug, views, passes, batch_size, seed,
                   store, verbose, cut):
    """Boundary activations of one file split (from `store`, or extracted and stored)."""
    key = feature_key(model_fp, _data_fp(source, split, aug, views, seed))
    found = store.get_mapped(key)
    if found is None:
        n = len(getattr(source, f"{split}_files"))
        with store.mapped_writer(key, (passes, n, *cut.shape)) as (x, y):
            y[...] = _compute(two, _file_passes(source, split, aug, passes, batch_size,
                                                seed), verbose, x).y
        found = store.get_mapped(key)
    return found


def _epoch_ids(views, n, training, seed):
    """Row ids into [views * n] stored rows for one epoch: in order, or (training) every
    image once in a fresh order, each in one of its views drawn at random."""
    ids = tf.data.Dataset.range(n)
    if training:
        ids = ids.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if views > 1:
            picks = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ids = tf.data.Dataset.zip((ids, picks)).map(_pick_view(views, n))
    return ids


def _pick_view(views, n):
    @tf.autograph.experimental.do_not_convert
    def pick(i, r):
        return (r % views) * n + i

    return pick


class _Collector:
    """A stand-in for a [views, N, ...] array when N is not known in advance: collects
    the batches written to each view."""

    def __init__(self, parts):
        self.parts = parts

    def __setitem__(self, index, batch):
        view = index[0]
        while len(self.parts) <= view:
            self.parts.append([])
        self.parts[view].append(np.asarray(batch, dtype=np.float16))


def mapped_dataset(features, batch_size=32, *, training=False, seed=0):
    """Batches of (activations as float32, label) from (memory-mapped) `Features`, read
    batch by batch; training: shuffled and one view per image per epoch, as
    `feature_dataset`."""
    views, n = features.x.shape[:2]
    shape = features.x.shape[2:]
    x = features.x.reshape(views * n, *shape)  # a view of the map, not a copy
    y = tf.constant(features.y.reshape(views * n, -1))
    ids = _epoch_ids(views, n, training, seed)

    def read(i):
        order = np.argsort(i)  # memory maps read fastest in file order
        out = np.empty((len(i), *shape), np.float32)
        out[order] = x[i[order]]
        return out

    # Plain graph code: autograph has nothing to convert and misreads these closures.
    @tf.autograph.experimental.do_not_convert
    def load(i):
        batch = tf.numpy_function(read, [i], tf.float32, stateful=False)
        batch.set_shape((None, *shape))
        return batch, tf.gather(y, i)

    return ids.batch(batch_size).map(load).prefetch(tf.data.AUTOTUNE)


# --- feature datasets and merging -------------------------------------------------

def feature_dataset(features, batch_size=32, *, training=False, seed=0):
    """Batches of (feature, label); training: reshuffled each epoch, every image once
    per epoch in one of its views drawn at random."""
    views, n = features.x.shape[:2]
    x = tf.constant(features.x.reshape(views * n, -1))
    y = tf.constant(features.y.reshape(views * n, -1))
    ids = _epoch_ids(views, n, training, seed)
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
