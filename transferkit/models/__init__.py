"""Models: the backbone registry, backbones with their weights, heads, the builder, and
the state a trained model carries (TTA and temperature layers, the novelty score).

Importing this package registers every built-in backbone (Keras Applications in
`applications`, EfficientNet-Lite in `efficientnet_lite`, the from-scratch and test
networks in `scratch`; `hub` resolves `hub:PRESET` names through KerasHub).
"""

from transferkit.models import applications, efficientnet_lite, hub, scratch  # noqa: F401
# Registered Keras layers a saved model may name: loadable once `models` is imported.
from transferkit.models import temperature, tta  # noqa: F401
from transferkit.models.backbones import create_backbone, imagenet_cache_dir
from transferkit.models.builder import build_model, resolve_input
from transferkit.models.heads import HeadConfig, build_head
from transferkit.models.layers import Preprocess
from transferkit.models.parts import ModelParts, resolve as resolve_parts
from transferkit.models.registry import (BackboneSpec, block_starts, get_spec,
                                         list_backbones, register_backbone)
from transferkit.models.saving import load_model, read_metadata, save_model

__all__ = ["BackboneSpec", "HeadConfig", "ModelParts", "Preprocess", "block_starts",
           "build_head", "build_model", "create_backbone", "get_spec",
           "imagenet_cache_dir", "list_backbones", "load_model",
           "read_metadata", "register_backbone", "resolve_input", "resolve_parts",
           "save_model"]
