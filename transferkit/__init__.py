"""transferkit: transfer learning with Keras backbones, two-phase fine-tuning done right.

    import transferkit as tk
    data = tk.load_data("~/photos", image_size=224, augment=tk.augment_config("light"))
    model = tk.build_model("mobilenet_v2", data.num_classes, weights="imagenet")
    result = tk.fine_tune(model, data)

The public API is `__all__`; everything else is reachable through its subpackage
(`transferkit.models`, `.data`, `.tasks`, `.training`, `.evaluation`, `.deploy`,
`.data_doctor`, `.app`, `.tuning`, `.cli`).
"""

__version__ = "0.2.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) buries real messages;
# an explicit TF_CPP_MIN_LOG_LEVEL from the user still wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# First: registers the built-in tasks, which every layer looks up by name.
from transferkit import tasks  # noqa: E402,F401

from transferkit.core.errors import (ConfigError, DataError, TrainableChangedError,
                                     TransferkitError, UnsafeModelError, WeightsError)
from transferkit.core.inputs import InputSpec
from transferkit.tasks import Task, get_task
from transferkit.models import (BackboneSpec, HeadConfig, ModelParts, build_model,
                                get_spec, list_backbones, load_model, read_metadata,
                                register_backbone, save_model)
from transferkit.data import AugmentConfig, DataSplits, augment_config, load_data, scan
from transferkit.training import (FeatureCache, FineTuneResult, FreezePolicy,
                                  PhaseConfig, Position, RecipeConfig, ScheduleConfig,
                                  fine_tune, freeze, load_recipe)
from transferkit.app.train import train
from transferkit.data_doctor.doctor import doctor
from transferkit.app.add_class import add_classes
from transferkit.deploy import export_model
from transferkit.evaluation import load_run, predict

# The tuner pulls in keras-tuner: loaded on first use.
_LAZY = {"tune": "transferkit.tuning", "TransferHyperModel": "transferkit.tuning",
         "SearchSpace": "transferkit.tuning"}

__all__ = ["AugmentConfig", "add_classes", "BackboneSpec", "ConfigError", "DataError", "DataSplits",
           "FeatureCache", "FineTuneResult", "FreezePolicy", "HeadConfig", "InputSpec",
           "ModelParts", "PhaseConfig", "Position", "RecipeConfig", "ScheduleConfig",
           "SearchSpace", "Task", "TrainableChangedError", "TransferHyperModel",
           "TransferkitError", "UnsafeModelError", "WeightsError", "augment_config",
           "build_model", "doctor", "export_model", "fine_tune", "freeze", "get_spec", "get_task",
           "list_backbones", "load_data", "load_model", "load_recipe", "load_run",
           "predict", "read_metadata", "register_backbone", "save_model", "scan", "train",
           "tune"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
