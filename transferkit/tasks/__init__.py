"""The task types: one `Task` subclass per family, registered by name.

    base.py            `Task`: what every task decides, with the defaults
    classification.py  multiclass, binary, multilabel
    regression.py      regression
    segmentation.py    segmentation (per-pixel classes, U-Net decoder)
    detection.py       detection (every object's class and box, a dense head)
    localization.py    localization (one object's class and box per image: detection
                       with one object)

Importing this package (which `import transferkit` does first) registers the built-in
tasks in `core.task_registry`, where every lower layer looks them up by name. A new task
subclasses `Task` (or a task near it), overrides the hooks where it differs, and is
added with `register_task(MyTask())`.
"""

from transferkit.core.task_registry import (get_task, register_task, task_for_model,
                                           task_names)
from transferkit.tasks.base import Task
from transferkit.tasks.classification import Binary, Multiclass, Multilabel
from transferkit.tasks.detection import Detection
from transferkit.tasks.localization import Localization
from transferkit.tasks.regression import Regression
from transferkit.tasks.segmentation import Segmentation

# Registration order is the order `task_for_model` asks the tasks. (Lower layers look
# tasks up only when called, never at import, so these imports may load them first.)
for _task in (Multiclass(), Binary(), Multilabel(), Localization(), Regression(),
              Segmentation(), Detection()):
    register_task(_task)

__all__ = ["Binary", "Detection", "Localization", "Multiclass", "Multilabel", "Regression", "Segmentation", "Task",
           "get_task", "register_task", "task_for_model", "task_names"]
