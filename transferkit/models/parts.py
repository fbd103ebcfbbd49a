"""Where the backbone and the head are in a model: named, never guessed.

`build_model` lays models out as image -> [resize] -> preprocess -> backbone -> pool ->
head, and `ModelParts()` names exactly that. A model built by hand names its own:

    inputs = keras.Input((224, 224, 3))
    base = keras.applications.MobileNetV2(include_top=False, weights="imagenet")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(preprocess(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    parts = ModelParts(backbone=base.name, features="gap", spec="mobilenet_v2")
    fine_tune(model, data, parts=parts)

The head is everything between `features` and the model's output, taken as a sub-model
that shares its layers with the model: training it on cached features trains the model.
"""

import dataclasses

import keras

from transferkit.core.errors import ConfigError, suggest
from transferkit.models.registry import BackboneSpec, get_spec


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """Names of a model's parts (defaults: the layout `build_model` makes).

    backbone: the nested backbone model, by layer name ("backbone"); None: the model
        is a backbone itself (for `freeze` on a bare Keras Applications model).
    features: the layer whose output the head reads and the feature cache stores
        ("pool"); None: the backbone's own output.
    spec: the registered backbone (name or BackboneSpec) for freezing by block; default:
        the spec `build_model` named the model after, else none.
    """

    backbone: str = "backbone"
    features: object = "pool"
    spec: object = None


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The parts of one model, as objects."""

    model: keras.Model
    backbone: keras.Model
    backbone_output: object  # the KerasTensor the backbone produces inside `model`
    features: object  # the KerasTensor the head reads
    spec: object  # BackboneSpec or None

    def feature_extractor(self):
        """A model from the raw image input to the features the head reads."""
        return keras.Model(self.model.inputs, self.features, name="features")

    def head(self):
        """The sub-model from the features to the output (shares the model's layers)."""
        if self.features is self.model.inputs[0]:
            return self.model
        return keras.Model(self.features, self.model.outputs, name="head_of_" + self.model.name)

    def head_variables(self):
        """The variables outside the backbone: the head (plus any trainable layers
        around the backbone)."""
        backbone = {id(v) for v in self.backbone.weights}
        return [v for v in self.model.weights if id(v) not in backbone]


def resolve(model, parts=None):
    """`Resolved` parts of `model` per `parts` (default `ModelParts()`).

    Raises ConfigError naming the missing layer and listing the model's layers.
    """
    parts = parts or ModelParts()
    names = [layer.name for layer in model.layers]
    if parts.backbone is None:
        return Resolved(model, model, model.outputs[0], model.outputs[0], _spec(model, parts))
    backbone = _layer(model, parts.backbone, "backbone", names)
    if not isinstance(backbone, keras.Model):
        raise ConfigError(f"The `backbone` part should name a nested model in "
                          f"{model.name!r}; layer {parts.backbone!r} is a "
                          f"{type(backbone).__name__}.")
    # A nested model's `.output` is its own inner tensor; the tensor it produces in the
    # outer graph is the output of its (single) call there, its inbound node.
    nodes = backbone._inbound_nodes
    if len(nodes) != 1:
        raise ConfigError(f"The backbone {parts.backbone!r} is called {len(nodes)} times in "
                          f"{model.name!r}; transferkit needs it called once.")
    outer = nodes[0].output_tensors[0]
    features = outer if parts.features is None else \
        _layer(model, parts.features, "features", names).output
    return Resolved(model, backbone, outer, features, _spec(model, parts))


def _layer(model, name, part, names):
    if name in names:
        return model.get_layer(name)
    default = getattr(ModelParts, part, None) == name
    hint = (" This is not a model built by transferkit's build_model: name its parts, e.g. "
            "parts=ModelParts(backbone='<nested backbone layer>', features='<pooling "
            "layer>').") if default else ""
    raise ConfigError(f"Model {model.name!r} has no layer named {name!r} (the `{part}` "
                      f"part).{suggest(name, names)} Its layers: {names}.{hint}")


def _spec(model, parts):
    if parts.spec is not None:
        return parts.spec if isinstance(parts.spec, BackboneSpec) else get_spec(parts.spec)
    if parts == ModelParts():  # build_model's layout: the model is named after its spec
        try:
            return get_spec(model.name)
        except ConfigError:
            return None
    return None
