"""The task types: one `Task` subclass per family, registered by name.

    base.py            `Task`: what every task decides, with the defaults
    classification.py  multiclass, binary, multilabel
    regression.py      regression
    segmentation.py    segmentation (per-pixel classes, U-Net decoder)
    detection.py       detection (every object's class and box, a dense head)
    localization.py    localization (one object's class and box per image: detection
                       with one object)

Importing this package (which `import transferkit` does first) registers the built-in
tasks' names in `core.task_registry`, where every lower layer looks them up; a task's
module (and TensorFlow) loads when the task is first asked for. A new task subclasses
`Task` (or a task near it), overrides the hooks where it differs, and is added with
`register_task(MyTask())`.
"""

import importlib

from transferkit.core.lazy import lazy_package
from transferkit.core.task_registry import register_task_loader

# name -> (module, class), in the order `task_for_model` asks the tasks.
BUILTIN_TASKS = {"multiclass": ("classification", "Multiclass"),
                 "binary": ("classification", "Binary"),
                 "multilabel": ("classification", "Multilabel"),
                 "localization": ("localization", "Localization"),
                 "regression": ("regression", "Regression"),
                 "segmentation": ("segmentation", "Segmentation"),
                 "detection": ("detection", "Detection")}


def _loader(module, cls):
    return lambda: getattr(importlib.import_module(f"{__name__}.{module}"), cls)()


for _name, (_module, _cls) in BUILTIN_TASKS.items():
    register_task_loader(_name, _loader(_module, _cls))

_REGISTRY = "transferkit.core.task_registry"
__all__ = lazy_package(__name__, {
    "Task": f"{__name__}.base",
    **{cls: f"{__name__}.{module}" for module, cls in BUILTIN_TASKS.values()},
    **dict.fromkeys(("get_task", "register_task", "register_task_loader",
                     "task_for_model", "task_names"), _REGISTRY)})
