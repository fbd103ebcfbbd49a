"""Backbone registry: one frozen spec per backbone, one entry point to build it.

Every Keras Applications family is registered from the table below; the course's
from-scratch baselines and the tiny test backbone register themselves in
`transferkit.models.scratch` exactly the same way, so every other module asks the spec
(input size, preprocessing, feature size, block layout) instead of branching on names.
"""

import dataclasses
import fnmatch
import os
import re
from typing import Callable

import keras

from transferkit.core.errors import ConfigError, WeightsError, suggest

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
    _load_builtin()
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
    _load_builtin()
    return sorted(
        s.name
        for s in _REGISTRY.values()
        if fnmatch.fnmatch(s.name, pattern.lower()) and (tag is None or tag in s.tags)
    )


def create_backbone(name, *, weights=None, input_shape=None, trusted=False, **kwargs):
    """Build backbone `name` without its classifier, as a `keras.Model` named "backbone".

    weights: None (random init, default), "imagenet" (Keras's own download and cache,
        so a pre-filled `~/.keras/models` works offline), the path to a weights file
        (`.weights.h5` or Keras's `.h5`), or a saved `.keras` model whose backbone is
        taken over (loaded with `safe_mode` on unless `trusted=True`).
    input_shape: (height, width, 3); default: the spec's square default size.
    kwargs: passed to the constructor, e.g. `alpha=0.35` for MobileNets.
    """
    spec = get_spec(name)
    if input_shape is None:
        input_shape = (spec.default_size, spec.default_size, 3)
    input_shape = tuple(input_shape)
    for side in input_shape[:2]:
        if side is not None and side < spec.min_size:
            raise ConfigError(
                f"Backbone {spec.name!r} needs inputs of at least {spec.min_size}x"
                f"{spec.min_size} pixels. Received: input_shape={input_shape}"
            )
    kwargs = {**dict(spec.kwargs), **kwargs}
    weights = None if weights in (None, "none", "None") else weights
    if weights == "imagenet":
        model = _build_imagenet(spec, input_shape, kwargs)
    else:
        model = spec.constructor(
            include_top=False, weights=None, input_shape=input_shape, **kwargs
        )
        if weights is not None:
            _load_local_weights(model, spec, str(weights), trusted)
    model.name = "backbone"
    return model


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


def imagenet_cache_dir():
    """The folder where Keras keeps downloaded weights (`$KERAS_HOME/models`)."""
    try:  # Keras resolves KERAS_HOME once, at import; ask it rather than guess.
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:  # pragma: no cover - a Keras layout change
        home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):  # the same fallback keras.utils.get_file takes
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "models")


def _build_imagenet(spec, input_shape, kwargs):
    if not spec.imagenet:
        raise WeightsError(
            f"Backbone {spec.name!r} has no ImageNet weights. The `weights` argument "
            "should be None or the path to a weights file or a saved .keras model. "
            "Received: weights='imagenet'"
        )
    try:
        return spec.constructor(
            include_top=False, weights="imagenet", input_shape=input_shape, **kwargs
        )
    except Exception as error:  # Keras raises a bare Exception on a failed download.
        text = str(error)
        if "URL fetch failure" not in text and "fetch" not in text.lower():
            raise
        url = re.search(r"https?://\S+?(?=:\s|$)", text)
        file_name = os.path.basename(url.group(0)) if url else "(see the URL above)"
        raise WeightsError(
            f"ImageNet weights for backbone {spec.name!r} are not in the Keras cache and "
            f"could not be downloaded.\n  file: {file_name}\n  Keras looks for it at: "
            f"{os.path.join(imagenet_cache_dir(), file_name)}\n  Either copy that file "
            "there (set KERAS_HOME to use another cache), or pass a local file: "
            "weights='/path/to/weights.h5' (or --weights PATH on the command line), or "
            f"weights=None to train from scratch.\n  Keras said: {text}"
        ) from error


def _load_local_weights(model, spec, path, trusted):
    if not os.path.exists(path):
        raise WeightsError(
            "The `weights` argument should be either None, 'imagenet', or the path to a "
            "weights file (.weights.h5, .h5) or a saved model (.keras) to be loaded. "
            f"Received: weights={path!r} (no such file)"
        )
    if path.endswith(".keras"):
        source = _backbone_of_saved_model(path, trusted)
        try:
            model.set_weights(source.get_weights())
        except ValueError as error:
            raise WeightsError(
                f"The backbone saved in {path} does not match backbone {spec.name!r}: "
                f"{error}. Pass the backbone name that model was built with."
            ) from error
        return
    try:
        model.load_weights(path)
    except Exception as error:
        raise WeightsError(
            f"Could not load weights file {path} into backbone {spec.name!r}: {error}"
        ) from error


def _backbone_of_saved_model(path, trusted):
    from transferkit.models.saving import load_model  # here: saving imports this module

    saved = load_model(path, trusted=trusted)
    try:
        return saved.get_layer("backbone")
    except ValueError:
        return saved  # a bare backbone saved on its own


# Keras Applications. Sizes are Keras's own `default_size`/`min_size`; feature sizes
# and block patterns were read off the built models (tests check both).
_A = keras.applications
_VGG, _RESNET = r"^(block\d+)_", r"^(conv\d+_block\d+)_"
_DENSE, _EFF = r"^(conv\d+_block\d+|pool\d+)_", r"^(block\d+[a-z])_"
_CONVNEXT = r"_(stage_\d+_block_\d+|downsampling_block_\d+)"
_ROWS = [
    # name, constructor, default size, min size, preprocessing, features, blocks, family
    ("vgg16", _A.VGG16, 224, 32, "caffe", 512, _VGG, "vgg"),
    ("vgg19", _A.VGG19, 224, 32, "caffe", 512, _VGG, "vgg"),
    ("resnet50", _A.ResNet50, 224, 32, "caffe", 2048, _RESNET, "resnet"),
    ("resnet101", _A.ResNet101, 224, 32, "caffe", 2048, _RESNET, "resnet"),
    ("resnet152", _A.ResNet152, 224, 32, "caffe", 2048, _RESNET, "resnet"),
    ("resnet50_v2", _A.ResNet50V2, 224, 32, "tf", 2048, _RESNET, "resnet_v2"),
    ("resnet101_v2", _A.ResNet101V2, 224, 32, "tf", 2048, _RESNET, "resnet_v2"),
    ("resnet152_v2", _A.ResNet152V2, 224, 32, "tf", 2048, _RESNET, "resnet_v2"),
    ("inception_v3", _A.InceptionV3, 299, 75, "tf", 2048, r"^mixed\d+$", "inception"),
    ("inception_resnet_v2", _A.InceptionResNetV2, 299, 75, "tf", 1536,
     r"^(mixed_\d[a-z]|block\d+_\d+_ac)$", "inception_resnet"),
    ("xception", _A.Xception, 299, 71, "tf", 2048, _VGG, "xception"),
    ("mobilenet", _A.MobileNet, 224, 32, "tf", 1024, r"^conv_(?:dw|pw)_(\d+)", "mobilenet"),
    ("mobilenet_v2", _A.MobileNetV2, 224, 32, "tf", 1280, r"^(expanded_conv|block_\d+)_",
     "mobilenet_v2"),
    ("mobilenet_v3_small", _A.MobileNetV3Small, 224, 32, "none", 576,
     r"^(expanded_conv(?:_\d+)?)_", "mobilenet_v3"),
    ("mobilenet_v3_large", _A.MobileNetV3Large, 224, 32, "none", 960,
     r"^(expanded_conv(?:_\d+)?)_", "mobilenet_v3"),
    ("densenet121", _A.DenseNet121, 224, 32, "torch", 1024, _DENSE, "densenet"),
    ("densenet169", _A.DenseNet169, 224, 32, "torch", 1664, _DENSE, "densenet"),
    ("densenet201", _A.DenseNet201, 224, 32, "torch", 1920, _DENSE, "densenet"),
    ("nasnet_mobile", _A.NASNetMobile, 224, 32, "tf", 1056,
     r"^(normal_concat_\d+|reduction_concat_\w+)$", "nasnet"),
    ("nasnet_large", _A.NASNetLarge, 331, 32, "tf", 4032,
     r"^(normal_concat_\d+|reduction_concat_\w+)$", "nasnet"),
]
# EfficientNet's compound scaling sets a resolution per width/depth (Tan & Le, 2019);
# it normalises inside the network, so preprocessing here is "none".
for _i, (_size, _feat) in enumerate(
    [(224, 1280), (240, 1280), (260, 1408), (300, 1536), (380, 1792), (456, 2048),
     (528, 2304), (600, 2560)]
):
    _ROWS.append((f"efficientnet_b{_i}", getattr(_A, f"EfficientNetB{_i}"), _size, 32,
                  "none", _feat, _EFF, "efficientnet"))
for _v, _size, _feat in [("B0", 224, 1280), ("B1", 240, 1280), ("B2", 260, 1408),
                         ("B3", 300, 1536), ("S", 384, 1280), ("M", 480, 1280),
                         ("L", 480, 1280)]:
    _ROWS.append((f"efficientnet_v2_{_v.lower()}", getattr(_A, f"EfficientNetV2{_v}"),
                  _size, 32, "none", _feat, _EFF, "efficientnet_v2"))
for _v, _feat in [("Tiny", 768), ("Small", 768), ("Base", 1024), ("Large", 1536),
                  ("XLarge", 2048)]:
    _ROWS.append((f"convnext_{_v.lower()}", getattr(_A, f"ConvNeXt{_v}"), 224, 32,
                  "none", _feat, _CONVNEXT, "convnext"))

_END_MARKED = {"inception", "inception_resnet", "nasnet"}
for _name, _ctor, _size, _min, _prep, _feat, _blocks, _family in _ROWS:
    register_backbone(BackboneSpec(
        name=_name, constructor=_ctor, default_size=_size, min_size=_min,
        preprocessing=_prep, feature_size=_feat, block_pattern=_blocks, family=_family,
        block_boundary="end" if _family in _END_MARKED else "start", tags=("keras",),
    ))


def _load_builtin():
    # The from-scratch and test backbones live in their own module; importing it
    # registers them. Done lazily so `scratch` can import this module freely.
    import transferkit.models.scratch  # noqa: F401
