"""transferkit: transfer learning with Keras backbones, two-phase fine-tuning done right.

    import transferkit as tk
    data = tk.load_data("~/photos", image_size=224, augment=tk.augment_config("light"))
    model = tk.build_model("mobilenet_v2", data.num_classes, weights="imagenet")
    result = tk.fine_tune(model, data)

The public API is `__all__`: the workflows, their configs and the errors; everything
else is reachable through its subpackage (`transferkit.models`, `.data`, `.tasks`,
`.training`, `.evaluation`, `.deploy`, `.data_doctor`, `.app`, `.tuning`, `.cli`).
Names load on first use (`tk.fine_tune` imports the training loop, and TensorFlow,
when first asked for), so `import transferkit` itself is quick.
"""

__version__ = "0.2.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) buries real messages;
# an explicit TF_CPP_MIN_LOG_LEVEL from the user still wins. (The command line quiets
# what this cannot reach, unless the user set the level: see `cli.quiet`.)
TF_LOG_LEVEL_GIVEN = "TF_CPP_MIN_LOG_LEVEL" in _os.environ
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Registers the built-in task names, which every layer looks up (each task's module
# loads when the task is first asked for).
from transferkit import tasks  # noqa: E402,F401
from transferkit.core.errors import (ConfigError, DataError,  # noqa: E402
                                     TrainableChangedError, TransferkitError,
                                     UnsafeModelError, WeightsError)
from transferkit.core.lazy import lazy_package  # noqa: E402

_ERRORS = ["ConfigError", "DataError", "TrainableChangedError", "TransferkitError",
           "UnsafeModelError", "WeightsError"]
__all__ = sorted(_ERRORS + lazy_package(__name__, {
    # workflows
    "train": "transferkit.app.train", "add_classes": "transferkit.app.add_class",
    "fine_tune": "transferkit.training.orchestrator",
    "freeze": "transferkit.training.freezing",
    "load_data": "transferkit.data.load", "scan": "transferkit.data.scan",
    "augment_config": "transferkit.data.config",
    "build_model": "transferkit.models.builder",
    "load_model": "transferkit.models.saving", "save_model": "transferkit.models.saving",
    "read_metadata": "transferkit.models.saving",
    "get_spec": "transferkit.models.registry",
    "list_backbones": "transferkit.models.registry",
    "register_backbone": "transferkit.models.registry",
    "get_task": "transferkit.core.task_registry", "Task": "transferkit.tasks.base",
    "load_recipe": "transferkit.training.recipe",
    "load_run": "transferkit.evaluation.evaluate",
    "predict": "transferkit.evaluation.evaluate",
    "export_model": "transferkit.deploy.export",
    "doctor": "transferkit.data_doctor.doctor",
    "tune": "transferkit.tuning.tuner",
    "TransferHyperModel": "transferkit.tuning.hypermodel",
    # what they return
    "DataSplits": "transferkit.data.splits",
    "FineTuneResult": "transferkit.training.orchestrator",
    "BackboneSpec": "transferkit.models.registry",
    # configs
    "RecipeConfig": "transferkit.training.recipe",
    "RuntimeConfig": "transferkit.training.config",
    "DataConfig": "transferkit.data.config", "AugmentConfig": "transferkit.data.config",
    "ModelConfig": "transferkit.models.config", "HeadConfig": "transferkit.models.config",
    "ScheduleConfig": "transferkit.training.config",
    "PhaseConfig": "transferkit.training.config",
    "FreezePolicy": "transferkit.training.config",
    "FeatureCache": "transferkit.training.cache.config",
    "SearchSpace": "transferkit.tuning.space",
}, moved={
    # Internals that left the top level (one release of warnings, then gone).
    "Position": ("transferkit.training.orchestrator", "transferkit.training"),
    "ModelParts": ("transferkit.models.parts", "transferkit.models"),
    "InputSpec": ("transferkit.core.inputs", "transferkit.core.inputs"),
}))
