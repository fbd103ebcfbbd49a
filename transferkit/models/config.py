"""The model configs: `ModelConfig` (backbone, weights, input size, head or decoder) and
`HeadConfig`; light, so listing the settings loads no Keras. `models.builder` and
`models.heads` build what they describe."""

import dataclasses

from transferkit.core.config import section, setting
from transferkit.core.errors import ConfigError, check_choice

POOLINGS = ("avg", "max", "flatten")
# Fraction of validation images the novelty threshold calls unknown, by default
# (`models.novelty`; a recipe's `RuntimeConfig.false_rejection`).
FALSE_REJECTION = 0.05
# Test-time augmentation presets (`models.tta`): name -> (multi_crop, flip).
TTA_PRESETS = {"flip": (False, True), "five_crop": (True, False), "ten_crop": (True, True)}


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Head hyperparameters (defaults: avg pooling, no hidden layer, dropout 0.2)."""

    pooling: str = setting("avg", "how the backbone's feature maps become the feature "
                           f"vector: {', '.join(POOLINGS)}", choices=POOLINGS)
    units: tuple = setting((), "widths of hidden Dense layers before the output, e.g. "
                           "256,128 (empty: a linear probe)", key="head_units")
    activation: str = setting("relu", "activation of the hidden Dense layers",
                              key="head_activation")
    dropout: float = setting(0.2, "dropout rate in [0, 1) before the output layer "
                             "(and after each hidden layer)")
    batch_norm: bool = setting(False, "BatchNorm after each hidden Dense layer",
                               key="head_batch_norm")
    l2: float = setting(0.0, "L2 penalty on the head's kernels (0: off)")

    def __post_init__(self):
        check_choice("pooling", self.pooling, POOLINGS)
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        if any(u < 1 for u in self.units):
            raise ConfigError(f"The `head_units` setting should hold widths >= 1. "
                              f"Received: head_units={self.units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"The `dropout` argument should be in [0, 1). Received: dropout={self.dropout}"
            )
        if self.l2 < 0:
            raise ConfigError(f"The `l2` argument should be >= 0. Received: l2={self.l2}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model a run builds: backbone, its weights and input size, head or decoder."""

    backbone: str = setting("efficientnet_lite0", "registered backbone name (`transferkit "
                            "backbones` lists them), hub:PRESET, or a .keras model file")
    weights: str = setting("imagenet", "imagenet, none (random init) or the path of a "
                           "weights file or .keras model")
    image_size: int = setting(0, "input side in pixels (0: the backbone's default size; "
                              "for detection and localization 10/7 of it, to a multiple "
                              "of 32)")
    backbone_kwargs: tuple = setting((), "extra backbone constructor arguments as "
                                     "key=value pairs, e.g. alpha=0.35")
    head: HeadConfig = section(HeadConfig())
    decoder_width: int = setting(32, "segmentation only: U-Net decoder filters at the "
                                 "shallowest skip (doubling at each deeper one)")

    def __post_init__(self):
        kwargs = self.backbone_kwargs
        kwargs = kwargs.items() if isinstance(kwargs, dict) else kwargs
        # Tuples, not lists or dicts, so the config stays hashable and truly frozen.
        object.__setattr__(self, "backbone_kwargs", tuple(tuple(kv) for kv in kwargs))
        if any(len(kv) != 2 for kv in self.backbone_kwargs):
            raise ConfigError("The `backbone_kwargs` setting should be key=value pairs. "
                              f"Received: backbone_kwargs={self.backbone_kwargs}")
        if self.image_size < 0 or self.decoder_width < 1:
            raise ConfigError("The `image_size` setting should be >= 0 (0: the backbone's "
                              "default) and `decoder_width` >= 1. Received: "
                              f"image_size={self.image_size}, "
                              f"decoder_width={self.decoder_width}")

    def input_spec(self, task=None):
        """The InputSpec of this model (its image_size, else the backbone's default
        size, scaled by `task`'s `input_scale` when a task is given).

        Resolving the backbone also checks `backbone_kwargs` against it, so `train` and
        `tune`, which ask this first, refuse an unknown one before any slow work."""
        # The registry (Keras) loads here, when a model is about to be built.
        from transferkit.models.registry import get_spec, resolve_input

        spec = get_spec(self.backbone)
        spec.check_kwargs(dict(self.backbone_kwargs))
        return resolve_input(spec, self.image_size or None,
                             getattr(task, "input_scale", 1.0))

    def weights_arg(self):
        """`weights` as `build_model` takes it (None for "none")."""
        return None if self.weights in ("", "none", "None") else self.weights
