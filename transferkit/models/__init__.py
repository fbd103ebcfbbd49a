"""Models: the backbone registry, backbones with their weights, heads, the builder, and
the state a trained model carries (TTA and temperature layers, the novelty score).

The registry registers every built-in backbone when it is first used
(`register_builtins`: Keras Applications in `applications`, EfficientNet-Lite in
`efficientnet_lite`, the from-scratch and test networks in `scratch`; `hub` resolves
`hub:PRESET` names through KerasHub). `models.config` (ModelConfig, HeadConfig) is
light; the names below load their module (and Keras) on first use.
"""

import importlib

from transferkit.core.lazy import lazy_package

# The modules that register the built-in backbones.
BUILTIN_MODULES = ("applications", "efficientnet_lite", "hub", "scratch")


def register_builtins():
    """Import the modules that register the built-in backbones (the registry calls
    this on its first use; importing them again is a no-op)."""
    for name in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{name}")


__all__ = lazy_package(__name__, {
    **dict.fromkeys(("create_backbone", "imagenet_cache_dir"),
                    "transferkit.models.backbones"),
    "build_model": "transferkit.models.builder",
    **dict.fromkeys(("HeadConfig", "ModelConfig"), "transferkit.models.config"),
    "build_head": "transferkit.models.heads",
    "Preprocess": "transferkit.models.layers",
    "ModelParts": "transferkit.models.parts", "resolve_parts": "transferkit.models.parts:resolve",
    **dict.fromkeys(("BackboneSpec", "block_starts", "get_spec", "list_backbones",
                     "register_backbone", "resolve_input"), "transferkit.models.registry"),
    **dict.fromkeys(("load_model", "read_metadata", "save_model"),
                    "transferkit.models.saving")}) + ["register_builtins"]
