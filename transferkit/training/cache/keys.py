"""Cache keys: hashes of everything cached features depend on.

A feature key hashes the feature extractor's layer configs and weights (so backbone,
constructor arguments, weights file or random init, input size, preprocessing and
pooling all count), the image files (path, size, mtime) with their labels, and the
augmentation, views and seed. A boundary key hashes the frozen bottom's layers and
weights and the cut instead of the feature extractor, with the same data identity.
"""

import hashlib
import json
import os

import keras
import numpy as np

from transferkit.core.errors import DataError
from transferkit.core.task_registry import get_task
from transferkit.models.parts import resolve
from transferkit.training.boundary import boundary_extractor
from transferkit.training.cache.config import FORMAT


def model_fingerprint(model, parts=None):
    """Hash of what maps an image to `model`'s head input (its feature extractor, see
    `models.parts`): layer configs (names left out, since Keras numbers unnamed layers
    per session) and every weight, BN statistics included.

    Hashing the weights themselves makes a weights file, "imagenet" and a seeded
    random init all safe: two different initialisations never share a key.
    """
    return _fingerprint(resolve(model, parts).feature_extractor())


def boundary_fingerprint(model, cut, parts=None):
    """Hash of what maps an image to the activations at `cut` (configs and weights of
    everything below it), and of the cut itself."""
    return _fingerprint(boundary_extractor(model, cut, parts, features=False),
                        f"boundary:{cut.layer}:")


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


def data_fingerprint(files, labels, image_size, *, augment=None, views=0, seed=0,
                     mirror=False, encoding=""):
    """Hash of a split's identity: each file's path, size and mtime, the labels, the
    image size, the augmentation config, views and seed, and `mirror` (the mirrored
    images stored as a second view); encoding: how the task encodes the labels in the
    pipeline, when that depends on more than the labels (`Task.label_encoding`; ""
    adds nothing, so other keys stay as they were)."""
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
    if mirror:  # keys of unmirrored splits stay as they were
        digest.update(b"\0mirror")
    if encoding:
        digest.update(f"\0encoding:{encoding}".encode())
    return digest.hexdigest()


def split_fingerprint(source, split, augment=None, views=0, seed=0, mirror=False):
    """`data_fingerprint` of a FeatureSource's file split; views count only with
    `augment` (a clean pass is the same data whatever the views)."""
    files, labels = source.files(split)
    task = get_task(source.task)
    return data_fingerprint(files, labels, source.image_size, augment=augment,
                            views=views if augment else 0, seed=seed, mirror=mirror,
                            encoding=task.label_encoding())


def feature_key(model_fp, data_fp):
    """The cache key of the features a model (`model_fp`) computes on data (`data_fp`)."""
    return hashlib.blake2b(f"{FORMAT}:{model_fp}:{data_fp}".encode(),
                           digest_size=20).hexdigest()


def split_key(model_fp, source, split, augment=None, views=0, seed=0, mirror=False):
    """The cache key of a FeatureSource's file `split` as the model or bottom with
    fingerprint `model_fp` computes it: `feature_key` of `split_fingerprint`, the one
    place a key is built from a split."""
    return feature_key(model_fp, split_fingerprint(source, split, augment, views, seed,
                                                   mirror))
