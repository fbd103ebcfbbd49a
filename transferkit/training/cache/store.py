"""Where cached features live: `FeatureStore`, in memory and in `cache_dir()`.

Phase 1's features are `<key>.npz` files in `cache_dir()` ($TRANSFERKIT_CACHE/features,
default ~/.cache/transferkit/features), holding x, y and a JSON record of the format,
key, shapes and a checksum. Phase 2's boundary activations (see `training.boundary`)
live beside them as `<key>.boundary.x.npy` (float16, read through a memory map),
`.y.npy` and `.json` (the commit mark, written last). Files are written through a
temporary name and renamed, so a killed writer leaves nothing that is read. A file that
fails to load, or whose key, shape or checksum disagrees, is recomputed with a warning,
never used.
"""

import contextlib
import hashlib
import json
import os
import warnings

import numpy as np

from transferkit.core.files import (atomic_path, cache_root, remove_stale_temp_files,
                                    write_json)
from transferkit.training.cache.config import FORMAT, Features


def cache_dir(directory=None):
    """The feature cache folder: `directory`, else "features" under `core.files.
    cache_root()` ($TRANSFERKIT_CACHE or ~/.cache/transferkit, beside the scan's
    normalised copies)."""
    if directory:
        return os.path.expanduser(directory)
    return cache_root("features")


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


def boundary_bytes(source, cut, views, mirror_val=False):
    """Estimated float16 storage of a FeatureSource's boundary activations: a view per
    pass over each image (see `extract`: training files clean + `views` augmented, other
    training data max(1, views); validation once, twice with its mirror; uncounted
    datasets by batches)."""
    total = 0
    train = views + 1 if views and source.train_files else max(1, views)
    for split, passes in (("train", train), ("val", 2 if mirror_val else 1)):
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
