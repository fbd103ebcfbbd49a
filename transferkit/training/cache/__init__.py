"""Phase 1 on cached backbone features: run the frozen backbone once, train the head fast.

While the backbone is frozen its output for an image never changes, so phase 1 can run
the backbone once per image and train the head on the stored feature vectors (the
"pool" layer's output), as the Keras transfer-learning guide describes. The head is the
very `keras.Model` nested in the full model, so training it on features trains the full
model.

    splits = load_data("data/pets", image_size=224, augment=AugmentConfig())
    fine_tune(model, splits, cache=FeatureCache(views=1, augment=AugmentConfig(),
                                                store=FeatureStore.default()))

`fine_tune` (the orchestrator) runs phase 1 on the features this package extracts and
stores; `split_features` is the part that can be called on its own. Phase 2 can run the
same way above a frozen bottom, on the activations at its boundary
(`FeatureCache(boundary=True)`, see `training.boundary`), captured in phase 1's pass.

The modules, one concern each:
    config    `FeatureCache` (the option), `RUN_CACHE` and `run_cache` (a run's default,
              for `train` and `fine_tune` alike), `FeatureSource` (what is read),
              `Features`
    store     `FeatureStore`: memory and files, checksums, memory-mapped activations
    keys      fingerprints of model, boundary and data, and the cache key
    extract   the backbone passes for both caches: `split_features`, `split_boundary`,
              `split_mirror` (the val files' mirrors, for the flip-TTA decision)
    readers   batches of stored features for `fit`, and `merge`
    frozen    what the end of a run reads back: `frozen_inputs` (the part below the
              layers that trained, for the clean training images and the val images
              and their mirrors), `store_features`
"""

from transferkit.training.cache.config import (DEFAULT_VIEWS, FORMAT, RUN_CACHE, Features,
                                               FeatureCache, FeatureSource, cache_reason,
                                               run_cache)
from transferkit.training.cache.extract import (extract_features, has_features,
                                                split_boundary, split_features,
                                                split_mirror)
from transferkit.training.cache.keys import (boundary_fingerprint, data_fingerprint,
                                             feature_key, model_fingerprint)
from transferkit.training.cache.frozen import FrozenInputs, frozen_inputs, store_features
from transferkit.training.cache.readers import feature_dataset, mapped_dataset, merge
from transferkit.training.cache.store import FeatureStore, boundary_bytes, cache_dir

__all__ = ["DEFAULT_VIEWS", "FORMAT", "FeatureCache", "FeatureSource", "FeatureStore",
           "Features", "FrozenInputs", "RUN_CACHE", "boundary_bytes",
           "boundary_fingerprint", "cache_dir", "cache_reason", "data_fingerprint",
           "extract_features", "feature_dataset", "feature_key", "frozen_inputs",
           "has_features", "mapped_dataset", "merge", "model_fingerprint", "run_cache",
           "split_boundary", "split_features", "split_mirror", "store_features"]
