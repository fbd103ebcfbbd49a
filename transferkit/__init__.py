"""transferkit: transfer learning with Keras Applications backbones, done right.

    import transferkit as tk
    model = tk.build_model("mobilenet_v2", num_classes=5, weights="imagenet")
    result = tk.fine_tune(model, train_ds, val_ds)
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) buries real messages;
# an explicit TF_CPP_MIN_LOG_LEVEL from the user still wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transferkit.backbones import (BackboneSpec, create_backbone, get_spec, list_backbones,
                                   register_backbone)
from transferkit.errors import (ConfigError, DataError, TrainableChangedError,
                                TransferkitError, UnsafeModelError, WeightsError)
from transferkit.freezing import FreezeAudit, FreezePolicy, RecompileGuard, freeze
from transferkit.heads import HeadConfig, build_head
from transferkit.layers import Preprocess
from transferkit.model import build_model, feature_extractor
from transferkit.optimizers import make_optimizer
from transferkit.recipe import RecipeConfig, load_recipe
from transferkit.saving import load_model, read_metadata, save_model
from transferkit.schedule import FineTuneResult, PhaseConfig, ScheduleConfig, fine_tune
from transferkit.augment import AugmentConfig
from transferkit.data import DataSplits, load_data
from transferkit.run import train
from transferkit.scan import scan

# Heavier corners (keras-tuner, tf.distribute, the feature cache) load on first use.
_LAZY = {
    "tune": "transferkit.tuning", "TransferHyperModel": "transferkit.tuning",
    "SearchSpace": "transferkit.tuning_space", "Range": "transferkit.tuning_space",
    "make_strategy": "transferkit.distribute", "CheckpointConfig": "transferkit.checkpoint",
    "FeatureStore": "transferkit.cache", "train_head_cached": "transferkit.cache",
    "merge": "transferkit.cache", "with_tta": "transferkit.tta",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
