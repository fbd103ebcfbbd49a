"""Evaluation: scoring, prediction, TTA, calibration, Grad-CAM, reports and export.

Everything scores model outputs through the model's task (a `tasks.Task`, looked up in `core.task_registry`), so every
command agrees with every other for every task type.
"""

from transferkit.evaluation import calibrate, tta  # noqa: F401  (registers their layers)
from transferkit.evaluation.evaluate import (LoadedModel, eval_data, load_run, predict,
                                             predict_outputs)
from transferkit.evaluation.export import check_parity, export_model
from transferkit.evaluation.tta import with_tta

__all__ = ["LoadedModel", "check_parity", "eval_data", "export_model", "load_run",
           "predict", "predict_outputs", "with_tta"]
