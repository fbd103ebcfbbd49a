"""Temperature scaling (Guo et al. 2017): fit on validation outputs, check, and save.

    result = calibrate(task, val_outputs, val_labels, test_outputs, test_labels)
    model = with_temperature(model, result["temperature"], task)  # exportable, safe

One scalar T divides the logits: T > 1 softens an over-confident model, and the
predicted class never changes. The task decides what the logits are (`Task.calibration`:
log-probabilities under a softmax, log-odds under a sigmoid), so a binary model's one
sigmoid unit is rescaled as a sigmoid, never pushed through a softmax.
"""

import numpy as np

from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.models.temperature import TemperatureScale, with_temperature  # noqa: F401


# One image's NLL falls without bound as T shrinks (right) or grows (wrong): the fit
# then only finds a bound of the search. It needs images to trade off.
MIN_EXAMPLES = 2


def check_calibration_size(n, split="val"):
    """ConfigError naming MIN_EXAMPLES when the `split` images a temperature is
    fitted on are fewer."""
    if n < MIN_EXAMPLES:
        raise ConfigError(f"Temperature calibration needs at least {MIN_EXAMPLES} images "
                          f"to fit on; the {split} split has {n}. Give more data, or a "
                          "run with a larger val_split.")


def calibrate(task, fit_outputs, fit_labels, outputs, labels):
    """Fit a temperature on (fit_outputs, fit_labels), apply it to `outputs`, and report
    {"temperature", "nll_before", "nll_after", "before", "after"} on `labels` (the last
    two are `reliability` diagrams)."""
    task = get_task(task)
    check_calibration_size(len(fit_outputs))
    temperature = task.fit_temperature(fit_outputs, fit_labels)
    scaled = task.apply_temperature(outputs, temperature)
    return {"temperature": temperature,
            "nll_before": task.nll(outputs, labels), "nll_after": task.nll(scaled, labels),
            "before": reliability(*task.confidences(outputs, labels)),
            "after": reliability(*task.confidences(scaled, labels))}


def reliability(confidence, correct, bins=10):
    """Reliability-diagram data: per confidence bin its count, confidence, accuracy.

    Returns {"edges", "count", "confidence", "accuracy", "ece"}; ECE is the
    count-weighted mean |accuracy - confidence| over bins.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    nonzero = np.maximum(count, 1)
    conf, acc = conf_sum / nonzero, acc_sum / nonzero
    ece = float(np.sum(count * np.abs(acc - conf)) / max(len(confidence), 1))
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": conf.tolist(),
            "accuracy": acc.tolist(), "ece": ece}
