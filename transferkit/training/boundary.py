"""Phase 2 on cached boundary activations: where the frozen bottom ends, and the top.

With `last_blocks:K` (or `from_layer`, `top_layers`...) most of the backbone stays frozen
in phase 2, so its output for an image never changes: like phase 1's features, it can be
computed once and the trainable top trained on it. The *cut* is the single tensor in the
backbone that every trainable layer depends on the input through; `find_cut` looks for
it right below the first layer with trainable weights and, when a skip connection
crosses there (a residual block), moves it down to the nearest point no edge crosses
(the frozen layers between the cut and the first trainable one then simply run, frozen,
in the top). A graph without such a point has no cut: phase 2 runs live. Nor can a cut
fall inside a nested layer (a KerasHub transformer's frozen lower blocks): live too.

`top_model` is the sub-network from the cut to the model's output; it shares its layers
(and so its variables) with the model, so training it trains the model, and the model
saved at the end is the ordinary full model. `boundary_extractor` maps an image to the
head's features *and* the cut's activations in one pass, so phase 1's feature
extraction fills the boundary cache at no extra backbone cost.
"""

import dataclasses
import math

import keras

from transferkit.models.blocks import sublayers
from transferkit.models.parts import resolve


@dataclasses.dataclass(frozen=True)
class Cut:
    """The boundary of a frozen bottom: `layer` (the backbone layer whose output it is),
    its `index` in the backbone's layers, the activation `shape` (no batch axis), and
    `first_trainable`, the layer above it that trains first."""

    layer: str
    index: int
    shape: tuple
    first_trainable: str
    tensor: object = dataclasses.field(repr=False, compare=False, default=None)

    def bytes_per_image(self, itemsize=2):
        """Storage per image and view (float16 by default)."""
        return math.prod(self.shape) * itemsize


def find_cut(model, parts=None):
    """(Cut, "") for `model` as frozen now, or (None, the reason there is none).

    Call after `freeze`: the cut sits below the first backbone layer with trainable
    weights. Layers outside the backbone (the head) always train and lie above it.
    """
    backbone = resolve(model, parts).backbone
    # Operations, not just layers: a functional graph can hold bare ops (ConvNeXt's).
    layers = backbone.operations
    first = next((i for i, layer in enumerate(layers)
                  if getattr(layer, "trainable_weights", None)), None)
    if first is None:
        return None, "the whole backbone is frozen (phase 1's feature cache applies)"
    # Nothing frozen at all (a nested layer with frozen parts inside is another case).
    if not any(getattr(layer, "weights", None) for layer in layers[:first]) and \
            len(layers[first].trainable_weights) == len(layers[first].weights):
        return None, (f"nothing is frozen below {layers[first].name!r}, the first "
                      "trainable layer (the whole network trains)")
    where = {id(layer): i for i, layer in enumerate(layers)}
    edges = []  # (producer index, consumer index, tensor) inside the backbone's graph
    for nodes in backbone._nodes_by_depth.values():
        for node in nodes:
            consumer = where.get(id(node.operation))
            producers = [where.get(id(t._keras_history.operation))
                         for t in node.input_tensors]
            if consumer is None or None in producers:
                return None, f"the graph around {node.operation.name!r} is not the backbone's"
            edges += zip(producers, [consumer] * len(producers), node.input_tensors)
    outputs = backbone.outputs
    for split in range(first, 1, -1):  # layers [0, split) stay below the cut
        crossing = {id(t): t for p, c, t in edges if p < split <= c}
        crossing.update({id(t): t for t in outputs
                         if where[id(t._keras_history.operation)] < split})
        if len(crossing) == 1:
            tensor = next(iter(crossing.values()))
            below = layers[where[id(tensor._keras_history.operation)]]
            return Cut(below.name, where[id(below)], tuple(tensor.shape[1:]),
                       layers[first].name, tensor), ""
    layer = layers[first]
    if len(layer.trainable_weights) < len(layer.weights) and sublayers(layer):
        # e.g. a KerasHub transformer with its lower blocks frozen: the frozen part is
        # inside one nested layer of the graph, and the cut is a tensor of the graph.
        return None, (f"the frozen layers are inside {layer.name!r}, a nested layer the "
                      "boundary cache cannot cut inside")
    return None, (f"no single tensor separates the frozen layers from "
                  f"{layer.name!r} (the first trainable one) and those above it")


def _backbone_input(resolved):
    """The tensor the backbone is called on inside the model."""
    return resolved.backbone._inbound_nodes[0].input_tensors[0]


def boundary_extractor(model, cut, parts=None, features=True):
    """A model from the raw image to [the head's features, the cut's activations]
    (features=False: to the activations alone, the frozen bottom)."""
    resolved = resolve(model, parts)
    backbone = resolved.backbone
    image = keras.Input(model.input_shape[1:], name="image")
    below = _backbone_input(resolved)
    x = image if below is model.inputs[0] else keras.Model(model.inputs, below)(image)
    if not features:
        return keras.Model(image, keras.Model(backbone.inputs, cut.tensor, name="bottom")(x),
                           name="bottom_extractor")
    activations, output = keras.Model(backbone.inputs, [cut.tensor, backbone.outputs[0]],
                                      name="bottom")(x)
    features = output if resolved.features is resolved.backbone_output else keras.Model(
        resolved.backbone_output, resolved.features, name="to_features")(output)
    return keras.Model(image, [features, activations], name="boundary_extractor")


class TopModel(keras.Model):
    """The sub-network from the cut to the output, sharing the model's layers.

    Its weights *as a whole* are the full model's (`get_weights`/`set_weights` go to
    `full`), so early stopping's best weights and checkpoints are full-model weights
    whichever of the two trained.
    """

    def __init__(self, inputs, outputs, full=None, **kwargs):
        super().__init__(inputs, outputs, **kwargs)
        self._full = full

    def get_weights(self):
        return self._full.get_weights()

    def set_weights(self, weights):
        self._full.set_weights(weights)


def top_model(model, cut, parts=None, features=False):
    """The `TopModel` of `model` above `cut` (boundary activations -> model output;
    features=True: -> [the head's input features, the model output])."""
    resolved = resolve(model, parts)
    upper = keras.Model(cut.tensor, resolved.backbone.outputs[0], name="upper_backbone")
    activations = keras.Input(cut.shape, name="boundary")
    if features:
        inner = upper(activations)
        if resolved.features is not resolved.backbone_output:  # e.g. a pooling layer
            inner = keras.Model(resolved.backbone_output, resolved.features,
                                name="to_features")(inner)
        head = keras.Model(resolved.features, model.outputs[0], name="head")
        return TopModel(activations, [inner, head(inner)], full=model,
                        name="top_of_" + model.name)
    rest = keras.Model(resolved.backbone_output, model.outputs[0], name="above_backbone")
    return TopModel(activations, rest(upper(activations)), full=model,
                    name="top_of_" + model.name)
