"""Serializable layers that transferkit puts inside models.

They are registered Keras classes, not Lambda layers, so a saved model loads with
`safe_mode` on and an exported model carries its own preprocessing.
"""

import keras
from keras import ops

from transferkit.core.errors import check_choice

PREPROCESSING_MODES = ("caffe", "tf", "torch", "none", "unit", "lite")


@keras.saving.register_keras_serializable(package="transferkit")
class Preprocess(keras.layers.Layer):
    """Raw RGB 0-255 in, backbone input out, with Keras's own `preprocess_input` maths.

    mode: "caffe", "tf" or "torch" as in `keras.applications.imagenet_utils`; "unit"
        scales to [0, 1]; "lite" is (x - 127) / 128 (EfficientNet-Lite's
        published input scaling); "none" passes through (EfficientNet, ConvNeXt and
        MobileNetV3 normalise inside the network, and doing it twice is a classic bug).
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, PREPROCESSING_MODES)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return keras.applications.imagenet_utils.preprocess_input(
            x, data_format="channels_last", mode=self.mode
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="transferkit")
class ClassToken(keras.layers.Layer):
    """(batch, tokens, dim) -> (batch, dim): a transformer's class token (the first),
    which ViT-style backbones train to summarise the image."""

    def call(self, inputs):
        return inputs[:, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
