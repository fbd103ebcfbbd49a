"""Backbone registry: one frozen spec per backbone, looked up by name.

Every other module asks the spec (input size, preprocessing, feature size, block
layout) instead of branching on names. Keras Applications register in `applications`,
the course's from-scratch baselines and the tiny test backbone in `scratch`, exactly
the same way; importing `transferkit.models` registers them all.
"""

import dataclasses
import fnmatch
import re
from typing import Callable

import keras

from transferkit.core.errors import ConfigError, suggest
from transferkit.models.layers import PREPROCESSING_MODES


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What the rest of transferkit needs to know about a backbone.

    constructor: a Keras-Applications-style callable
        `(include_top=False, weights=..., input_shape=..., **kwargs) -> keras.Model`.
    preprocessing: how raw 0-255 RGB becomes model input, applied inside the model:
        "caffe" (BGR, ImageNet mean), "tf" (to [-1, 1]), "torch" (ImageNet mean/std),
        "unit" (to [0, 1]) or "none" (the network normalises internally).
    block_pattern: regex over layer names; with block_boundary="start", group(1) names the
        block a layer opens, with "end" a full match closes a block.
    imagenet: whether `weights="imagenet"` can be loaded.
    skips: layer names whose outputs a segmentation decoder joins (U-Net skip
        connections), shallow to deep, at strides 2 to 32 below the backbone's output
        (); empty: the backbone has no segmentation decoder yet.
    """

    name: str
    constructor: Callable[..., keras.Model]
    default_size: int
    min_size: int
    preprocessing: str
    feature_size: int
    block_pattern: str
    family: str
    block_boundary: str = "start"
    imagenet: bool = True
    kwargs: tuple = ()
    tags: tuple = ()
    skips: tuple = ()

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ConfigError(
                f"Backbone {self.name!r}: `preprocessing` should be one of "
                f"{PREPROCESSING_MODES}. Received: preprocessing={self.preprocessing!r}"
            )
        if self.block_boundary not in ("start", "end"):
            raise ConfigError(
                f"Backbone {self.name!r}: `block_boundary` should be 'start' or 'end'. "
                f"Received: block_boundary={self.block_boundary!r}"
            )


_REGISTRY: dict = {}


def _key(name):
    # "MobileNetV2", "mobilenet_v2" and "mobilenetv2" all name the same backbone.
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def register_backbone(spec):
    """Add `spec` to the registry; a second spec with the same name raises."""
    key = _key(spec.name)
    if key in _REGISTRY:
        raise ConfigError(f"A backbone named {spec.name!r} is already registered.")
    _REGISTRY[key] = spec
    return spec


def get_spec(name):
    """The `BackboneSpec` registered as `name` (case and underscores ignored)."""
    if isinstance(name, BackboneSpec):
        return name
    spec = _REGISTRY.get(_key(name))
    if spec is None:
        names = [s.name for s in _REGISTRY.values()]
        raise ConfigError(
            f"Unknown backbone: backbone={name!r}.{suggest(name, names)} "
            f"Run `transferkit backbones` (or `list_backbones()`) for the {len(names)} "
            "registered names."
        )
    return spec


def list_backbones(pattern="*", tag=None):
    """Registered backbone names matching a shell-style `pattern` (default "*")."""
    return sorted(
        s.name
        for s in _REGISTRY.values()
        if fnmatch.fnmatch(s.name, pattern.lower()) and (tag is None or tag in s.tags)
    )


def block_starts(layer_names, spec):
    """Indices where each block of a backbone begins, per `spec.block_pattern`.

    Layers before the first block (the stem) and after the last "end" marker (the top)
    form blocks of their own, so unfreezing "the last K blocks" always means something.
    """
    pattern = re.compile(spec.block_pattern)
    starts, last_id = [0], None
    for i, name in enumerate(layer_names):
        match = pattern.search(name)
        if spec.block_boundary == "start":
            if match and match.group(1) != last_id:
                last_id = match.group(1)
                if i > 0:
                    starts.append(i)
        elif match and i + 1 < len(layer_names):
            starts.append(i + 1)
    return sorted(set(starts))
