"""The end of a run reads its images back from the caches instead of passing them
through the backbone again.

After training, the part of the model below the layers that trained is what it was when
the caches were filled: the whole backbone when phase 2 did not train it (the feature
cache holds its output), else the bottom below phase 2's cut (the boundary cache holds
its activations). The cache keys hash that part's weights, so a key that is found
proves the stored tensors are the current model's. `frozen_inputs` finds them for the
training images' clean view and the validation images (and their mirrors, when the run
stored them for its flip-TTA decision); `FrozenInputs.outputs` runs only the part above
them, for the head's input features and the model's outputs.
"""

import dataclasses

import keras
import numpy as np

from transferkit.core.errors import ConfigError
from transferkit.models.parts import resolve
from transferkit.training.boundary import find_cut, top_model
from transferkit.training.cache.config import Features, FeatureSource
from transferkit.training.cache.keys import boundary_fingerprint, model_fingerprint, split_key


@dataclasses.dataclass(frozen=True)
class FrozenInputs:
    """What the frozen part of a trained model computes for a run's images, read back
    from its caches: `train` (the clean view), `val` and `mirror` (the val images'
    mirrors, or None), each Features [1, N, ...], at the input of `top` (boundary
    activations -> [head-input features, outputs]; for "features", the head's input
    itself and `top` the head). `where`: "boundary" or "features"."""

    top: keras.Model
    train: Features
    val: Features
    mirror: Features
    where: str
    _done: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def outputs(self, split="val", batch_size=256):
        """(head-input features [N, D], model outputs [N, ...]) of `split` ("train",
        "val" or "mirror"), from the part above the stored tensors (computed once)."""
        key = split
        if key not in self._done:
            x = getattr(self, split).x[0]
            features, outputs = [], []
            for i in range(0, len(x), batch_size):
                batch = np.asarray(x[i:i + batch_size], np.float32)
                if self.where == "features":
                    features.append(batch.reshape(len(batch), -1))
                    outputs.append(np.asarray(self.top.predict_on_batch(batch)))
                else:
                    f, o = self.top.predict_on_batch(batch)
                    features.append(np.asarray(f).reshape(len(batch), -1))
                    outputs.append(np.asarray(o))
            self._done[key] = (np.concatenate(features), np.concatenate(outputs))
        return self._done[key]

    def labels(self, split="val"):
        return np.asarray(getattr(self, split).y[0])


def frozen_inputs(model, data, cache, *, parts=None):
    """The `FrozenInputs` of `model` (as trained, with the trainable flags its last
    phase left) on the file splits of `data` (a DataSplits or FeatureSource) that
    `fine_tune(..., cache=cache)` stored in `cache.store`; None when they are not there
    (no cache, in-memory data, no val split, or a part below the top that trained)."""
    if cache is None or cache.store is None:
        return None
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    if not source.train_files or not source.val_files:
        return None
    train_args = dict(augment=cache.augment if cache.views else None, views=cache.views,
                      seed=cache.seed)
    store = cache.store
    try:
        cut, _ = find_cut(model, parts)
    except ConfigError:  # no backbone to cut, as the caches need: nothing was stored
        return None
    if cut is not None:
        fp = boundary_fingerprint(model, cut, parts)
        train = store.get_mapped(split_key(fp, source, "train", **train_args))
        val = store.get_mapped(split_key(fp, source, "val"))
        if train is not None and val is not None:
            mirror = store.get_mapped(split_key(fp, source, "val", mirror=True)) \
                if cache.mirror_val else None
            return FrozenInputs(top_model(model, cut, parts, features=True), train.view(0),
                                val, mirror, "boundary")
    fp = model_fingerprint(model, parts)
    train = store.get(split_key(fp, source, "train", **train_args))
    val = store.get(split_key(fp, source, "val"))
    if train is not None and val is not None:
        mirror = store.get(split_key(fp, source, "val", mirror=True)) \
            if cache.mirror_val else None
        return FrozenInputs(resolve(model, parts).head(), train.view(0), val, mirror,
                            "features")
    return None


def store_features(model, data, split, features, labels, store, *, parts=None):
    """Put the clean head-input `features` [N, D] of `data`'s file `split` with their
    `labels` [N, C] in `store` under `model`'s key: the entry `split_features(model,
    data, store=store)` reads (add-class replays a run's training features from it)."""
    source = data if isinstance(data, FeatureSource) else FeatureSource.of(data)
    key = split_key(model_fingerprint(model, parts), source, split)
    store.put(key, Features(np.asarray(features, np.float32)[None],
                            np.asarray(labels, np.float32)[None]))
