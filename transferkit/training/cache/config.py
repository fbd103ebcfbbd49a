"""What to cache and what is cached: the `FeatureCache` option of `fine_tune`, the
`FeatureSource` extraction reads, and the `Features` it produces.

views=0 stores one clean (unaugmented) pass; views=K stores the clean pass and K
augmented ones, and each epoch shows every image once, in one of its K + 1 views picked
at random.
"""

import dataclasses

import numpy as np

from transferkit.core.task_registry import DEFAULT_TASK, get_task
from transferkit.data.splits import DataSplits
from transferkit.training.config import RuntimeConfig

FORMAT = 2  # bump when the file layout or the key recipe changes
# Augmented views per training image when augmentation is on, beside the clean one: a
# recipe's default (`RuntimeConfig.feature_views`, which says why).
DEFAULT_VIEWS = RuntimeConfig.feature_views


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """Phase 1 on cached features (`fine_tune(..., cache=FeatureCache())`); a run's
    default is `RUN_CACHE`, fitted to its data by `run_cache`.

    views: augmented views per training image, stored beside the clean one (0: the
        clean pass only). augment: the
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
    boundary_max_gb: float = RuntimeConfig.boundary_cache_max_gb
    # Also store the val files' mirrors (`split_mirror`), at phase 2's start beside its
    # boundary activations, so as not to delay phase 1: the flip-TTA decision at the end
    # of `transferkit train` reads them back.
    mirror_val: bool = False


def runtime_cache(runtime=None, *, mirror_val=False):
    """The FeatureCache a `RuntimeConfig` asks for (default: RuntimeConfig()'s, whose
    settings cache_features, feature_views, boundary_cache, boundary_cache_max_gb own
    the defaults), not yet fitted to data (see `run_cache`)."""
    runtime = runtime or RuntimeConfig()
    return FeatureCache(views=runtime.feature_views, head=runtime.cache_features,
                        boundary=runtime.boundary_cache,
                        boundary_max_gb=runtime.boundary_cache_max_gb,
                        mirror_val=mirror_val)


# The caches a run trains with unless told otherwise, `transferkit train` and
# `fine_tune(model, data)` alike (both through `run_cache`): RuntimeConfig's defaults,
# i.e. phase 1 on cached features (the clean view and DEFAULT_VIEWS augmented ones),
# phase 2 on activations cached at its freeze boundary (up to boundary_max_gb of them).
RUN_CACHE = runtime_cache()


def run_cache(task, augment=None, seed=0, store=None, wanted=RUN_CACHE):
    """The `FeatureCache` a run trains with: `wanted` (default RUN_CACHE) for data
    augmented by `augment` (views only with it; they are drawn with `seed`), kept in
    `store` (None: memory); None (both phases live) when `wanted` caches nothing or
    `task` cannot train on cached tensors (`cache_reason` says why)."""
    if cache_reason(task, wanted) is not None:
        return None
    return dataclasses.replace(wanted, views=wanted.views if augment else 0,
                               augment=augment or None, store=store, seed=seed)


def cache_reason(task, wanted=RUN_CACHE):
    """Why a run of `task` trains without any cache (None: it may use one)."""
    if not (wanted.head or wanted.boundary):
        return "both caches are turned off"
    if not get_task(task).caches_features:
        return (f"task {get_task(task).name!r} does not train on cached tensors (e.g. a "
                "decoder that reads several backbone layers)")
    return None


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
    # The task whose pipeline re-reads the files (its labels move with augmented
    # views: a box with its crop) and its number of classes.
    task: object = DEFAULT_TASK
    num_classes: int = None

    @classmethod
    def of(cls, data, val=None):
        """From a DataSplits, or from (train, val) datasets."""
        if isinstance(data, DataSplits):
            return cls(data.train, data.val, data.train_files, data.train_labels,
                       data.val_files, data.val_labels, data.image_size, data.skipped,
                       data.task, len(data.class_names))
        return cls(data, val)

    def files(self, split):
        """(files, labels) of `split` ("train" or "val"); no files: an in-memory or TFDS
        split, which has no file identity."""
        return getattr(self, f"{split}_files"), getattr(self, f"{split}_labels")


@dataclasses.dataclass(frozen=True)
class Features:
    """Cached features of one split: x [views, N, D] and labels y [views, N, C]."""

    x: np.ndarray
    y: np.ndarray

    @property
    def count(self):
        return self.x.shape[1]

    def view(self, index):
        """The `Features` of one view ([1, N, ...]; a memory map stays one)."""
        return Features(self.x[index:index + 1], self.y[index:index + 1])
