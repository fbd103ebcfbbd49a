"""`TemperatureScale`: a calibrated model's last layer, so calibration survives saving.

    model = with_temperature(model, 1.7, "multiclass")   # exportable, loads in safe mode

The temperature is fitted by `evaluation.calibrate`; the layer is model state, so it
lives with the model (and is registered whenever `transferkit.models` is imported).
"""

import keras
from keras import ops

from transferkit.core.errors import ConfigError, check_choice
from transferkit.core.task_registry import EPSILON, get_task

KINDS = ("softmax", "sigmoid")


@keras.saving.register_keras_serializable(package="transferkit")
class TemperatureScale(keras.layers.Layer):
    """Probabilities in, temperature-scaled probabilities out (a fixed scalar T).

    kind: "softmax" (rows of class probabilities) or "sigmoid" (independent ones).
    """

    def __init__(self, temperature=1.0, kind="softmax", **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ConfigError("The `temperature` argument should be > 0. Received: "
                              f"temperature={temperature}")
        self.temperature = float(temperature)
        self.kind = check_choice("kind", kind, KINDS)

    def call(self, probs):
        p = ops.clip(probs, EPSILON, 1.0 - EPSILON)
        if self.kind == "softmax":
            return ops.softmax(ops.log(p) / self.temperature, axis=-1)
        return ops.sigmoid((ops.log(p) - ops.log1p(-p)) / self.temperature)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "kind": self.kind}


def with_temperature(model, temperature, task):
    """`model` followed by a TemperatureScale layer: same shapes, calibrated outputs."""
    task = get_task(task)
    task.check_calibratable()
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = TemperatureScale(temperature, task.calibration, name="temperature")(model(inputs))
    return keras.Model(inputs, outputs, name=model.name)
