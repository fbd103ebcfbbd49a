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

from transferkit.models.backbones import (BackboneSpec, create_backbone, get_spec, list_backbones,
                                   register_backbone)
from transferkit.core.errors import (ConfigError, DataError, TrainableChangedError,
                                TransferkitError, UnsafeModelError, WeightsError)
from transferkit.training.freezing import FreezeAudit, FreezePolicy, RecompileGuard, freeze
from transferkit.models.heads import HeadConfig, build_head
from transferkit.models.layers import Preprocess
from transferkit.models.builder import build_model, feature_extractor
from transferkit.training.optimizers import make_optimizer
from transferkit.training.recipe import RecipeConfig, load_recipe
from transferkit.models.saving import load_model, read_metadata, save_model
from transferkit.training.schedule import FineTuneResult, PhaseConfig, ScheduleConfig, fine_tune
from transferkit.data.augment import AugmentConfig
from transferkit.data.load import DataSplits, load_data
from transferkit.training.run import train
from transferkit.data.scan import scan

# Heavier corners (keras-tuner, tf.distribute, the feature cache) load on first use.
_LAZY = {
    "tune": "transferkit.tuning.tuner", "TransferHyperModel": "transferkit.tuning.tuner",
    "SearchSpace": "transferkit.tuning.space", "Range": "transferkit.tuning.space",
    "make_strategy": "transferkit.training.distribute", "CheckpointConfig": "transferkit.training.checkpoint",
    "FeatureStore": "transferkit.training.cache", "train_head_cached": "transferkit.training.cache",
    "merge": "transferkit.training.cache", "with_tta": "transferkit.evaluation.tta",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
