"""Phase 1 on cached backbone features (see `extract`; split into modules next)."""

from transferkit.training.cache.extract import (DEFAULT_VIEWS, FORMAT, Features,
                                                FeatureCache, FeatureSource, FeatureStore,
                                                boundary_bytes, boundary_fingerprint,
                                                cache_dir, data_fingerprint,
                                                extract_features, feature_dataset,
                                                feature_key, mapped_dataset, merge,
                                                model_fingerprint, split_boundary,
                                                split_features)

__all__ = ["DEFAULT_VIEWS", "FORMAT", "FeatureCache", "FeatureSource", "FeatureStore",
           "Features", "boundary_bytes", "boundary_fingerprint", "cache_dir",
           "data_fingerprint", "extract_features", "feature_dataset", "feature_key",
           "mapped_dataset", "merge", "model_fingerprint", "split_boundary",
           "split_features"]
