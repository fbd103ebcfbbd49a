"""Evaluation: scoring a model on labelled images, prediction, calibration, Grad-CAM
and the HTML reports, all through the model's task so every command agrees.

    loaded = load_run("runs/pets")
    outputs, labels = predict_outputs(loaded.model, eval_data(loaded, "data/pets").dataset)
"""

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, dict.fromkeys(
    ("LoadedModel", "eval_data", "load_run", "predict", "predict_outputs"),
    "transferkit.evaluation.evaluate"))
