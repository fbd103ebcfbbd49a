"""Optimizers, including discriminative learning rates done right for Keras 3.

Keras 3 has no per-variable learning rates and no MultiOptimizer. Scaling gradients is
not a substitute: Adam divides by the gradient's own scale, so a 0.1x gradient moves the
weight just as far. Instead, the learning rate itself is scaled inside `update_step`,
for every variable outside the head, in a registered (hence saveable) subclass. The
head's variables are listed by path (the orchestrator takes them from the model's
`ModelParts`), so a model built by hand works as well as one from `build_model`.

Layer-wise learning-rate decay (BEiT, Bao et al. 2021; ELECTRA, Clark et al. 2020) is
the same scale made per block: a backbone variable in the block at depth d from the top
(top block d=0, per the backbone's block layout) gets rate x multiplier x decay**d.
"""

import keras

from transferkit.core.errors import check_choice

# Keyed by `training.config.OPTIMIZERS`, the names a PhaseConfig accepts (a test keeps
# the two the same).
OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


class _BackboneLRMixin:
    """Multiplies the learning rate by `backbone_multiplier` for non-head variables, and
    by `layer_lr_decay ** depth` for those listed in `depths`.

    head_paths: `variable.path` of every head variable (they keep the full rate).
    depths: {variable.path: depth of its backbone block from the top} (default none).
    """

    def __init__(self, *args, backbone_multiplier=1.0, head_paths=(), layer_lr_decay=1.0,
                 depths=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backbone_multiplier = float(backbone_multiplier)
        self.head_paths = tuple(head_paths)
        self.layer_lr_decay = float(layer_lr_decay)
        self.depths = {str(k): int(v) for k, v in (depths or {}).items()}

    def build(self, variables):
        super().build(variables)
        head = set(self.head_paths)
        # The TF backend hands `update_step` the raw tf.Variable (no `.path`), so the
        # scale is looked up by the optimizer's own variable key, computed here once.
        self._lr_scale = {self._var_key(v): 1.0 if v.path in head else self.scale(v.path)
                          for v in variables}

    def scale(self, path):
        """The learning-rate factor of the backbone variable at `path`."""
        return self.backbone_multiplier * self.layer_lr_decay ** self.depths.get(path, 0)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scale.get(self._var_key(variable), 1.0)
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "backbone_multiplier": self.backbone_multiplier,
                "head_paths": list(self.head_paths), "layer_lr_decay": self.layer_lr_decay,
                "depths": dict(self.depths)}


def _discriminative(base):
    cls = type(f"Discriminative{base.__name__}", (_BackboneLRMixin, base), {})
    return keras.saving.register_keras_serializable(package="transferkit")(cls)


DISCRIMINATIVE = {name: _discriminative(cls) for name, cls in OPTIMIZERS.items()}


def make_optimizer(name="adam", learning_rate=1e-3, *, backbone_multiplier=1.0,
                   weight_decay=None, head_paths=(), layer_lr_decay=1.0, depths=None):
    """An optimizer by name ("adam", "adamw", "sgd", "rmsprop"; default "adam").

    backbone_multiplier: learning rate of the backbone relative to the head (default 1.0;
        e.g. 0.1 for discriminative fine-tuning). head_paths: paths of the variables
        that keep the full rate (see `models.parts.Resolved.head_variables`).
    layer_lr_decay: per-block factor (default 1.0, off): the variable at `depths[path]`
        = d gets decay**d on top of the backbone multiplier (see
        `training.freezing.layer_depths`).
    """
    check_choice("optimizer", name, OPTIMIZERS)
    kwargs = {"learning_rate": learning_rate}
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    if backbone_multiplier != 1.0 or layer_lr_decay != 1.0:
        return DISCRIMINATIVE[name](backbone_multiplier=backbone_multiplier,
                                    head_paths=head_paths, layer_lr_decay=layer_lr_decay,
                                    depths=depths if layer_lr_decay != 1.0 else None,
                                    **kwargs)
    return OPTIMIZERS[name](**kwargs)
