"""Backbone registry: one frozen spec per backbone, looked up by name.

Every other module asks the spec (input size, preprocessing, feature size, block
layout) instead of branching on names. Keras Applications register in `applications`,
the course's from-scratch baselines and the tiny test backbone in `scratch`, exactly
the same way; importing `transferkit.models` registers them all. Your own model
registers too (`register_backbone(model_or_path_or_callable)`), and a path to a saved
`.keras` model works wherever a backbone name does (`--backbone my_model.keras`).
"""

import dataclasses
import fnmatch
import inspect
import os
import re
from typing import Callable

import keras

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError, WeightsError, suggest
from transferkit.core.inputs import InputSpec, parse_size
from transferkit.models.layers import PREPROCESSING_MODES
from transferkit.models.saving import load_model


# Constructor arguments transferkit sets itself, so never a caller's: the backbone has
# no classifier top (include_top, classes, classifier_activation), create_backbone
# gives its input and weights (input_shape, input_tensor, weights) and names it
# "backbone" (name), the head pools it (pooling), and the spec's `preprocessing` says
# whether it normalises internally (include_preprocessing).
# The feature pyramid of a dense head (see `BackboneSpec.pyramid`): the map at stride
# 16 and the backbone's output at 32, both read off the graph.
DEFAULT_PYRAMID = ((None, 16), (None, 32))

OWN_ARGUMENTS = ("include_top", "weights", "input_shape", "input_tensor", "pooling",
                 "classes", "classifier_activation", "include_preprocessing", "name")


# Larger inputs are surely a typo (one batch would not fit in memory), refused up front.
MAX_IMAGE_SIDE = 4096


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
    operations: how many operations (layers and bare ops, Keras's `model.operations`)
        the built backbone has, at any input size: what building it costs, which
        decides the tests' default run. 0 (default): not known.
    nested_blocks: True: the blocks are the repeated stack of nested layers found inside
        the backbone (a transformer's blocks, see `models.blocks`), when it has one;
        `block_pattern` applies otherwise. Default False.
    imagenet: whether `weights="imagenet"` can be loaded.
    kwargs: constructor arguments every build of this backbone gets, as (name, value)
        pairs (default none); the caller's `backbone_kwargs` override them.
    offline_weights: None (ImageNet weights come through Keras's download cache) or a
        callable returning a short note on offline ImageNet weights ("offline", or the
        pip command that makes them so), shown by `transferkit backbones`.
    skips: layer names whose outputs a segmentation decoder joins (U-Net skip
        connections), shallow to deep, at strides 2 to 32 below the backbone's output
        (); empty: the backbone has no segmentation decoder yet.
    pyramid: the feature maps a dense (detection) head reads, as (layer name, stride)
        pairs, fine to coarse: the stride is the map's nominal downsampling of the
        input, which fixes the head's grid of locations (`models.detection.grid`). A
        name of None reads the layer off the graph: the last map at that stride on the
        main path (as segmentation skips are found) or, for the coarsest, the
        backbone's output. Default: the stride-16 map and the stride-32 output, as
        every ImageNet network of the registry has; () : no dense head (the backbone
        outputs a vector).
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
    offline_weights: Callable[[], str] | None = None
    skips: tuple = ()
    nested_blocks: bool = False
    operations: int = 0
    pyramid: tuple = DEFAULT_PYRAMID

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
        self.check_kwargs(dict(self.kwargs), argument="kwargs")
        object.__setattr__(self, "pyramid", tuple((name, int(stride))
                                                  for name, stride in self.pyramid))
        strides = [s for _, s in self.pyramid]
        if any(s < 1 for s in strides) or strides != sorted(set(strides)):
            raise ConfigError(f"Backbone {self.name!r}: `pyramid` should list (layer, "
                              "stride) pairs fine to coarse, strides increasing. "
                              f"Received: pyramid={self.pyramid!r}")

    def accepted_kwargs(self):
        """The constructor arguments a caller may give (`backbone_kwargs`), sorted:
        the constructor's parameters minus those transferkit sets itself
        (`OWN_ARGUMENTS`); None when the constructor takes any (`**kwargs`)."""
        try:
            params = inspect.signature(self.constructor).parameters.values()
        except (TypeError, ValueError):  # a callable without a signature: trust it
            return None
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return tuple(sorted(p.name for p in params if p.kind in (
            p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in OWN_ARGUMENTS))

    def check_kwargs(self, kwargs, argument="backbone_kwargs"):
        """Raise ConfigError naming every key of `kwargs` the constructor does not
        accept (see `accepted_kwargs`), before anything is built."""
        accepted = self.accepted_kwargs()
        unknown = sorted(k for k in kwargs if accepted is not None and k not in accepted)
        if not unknown:
            return
        hints = "".join(suggest(k, accepted) for k in unknown)
        own = [k for k in unknown if k in OWN_ARGUMENTS]
        raise ConfigError(
            f"Unknown backbone argument(s) {unknown} for backbone {self.name!r}."
            + (f" transferkit sets {own} itself." if own else "")
            + f"{hints} Accepted: {', '.join(accepted) or 'none'}. "
            f"Received: {argument}={dict(kwargs)!r}")


_REGISTRY: dict = {}
_SOURCES: dict = {}  # registry key -> real path of the .keras file it was made from
_RESOLVERS: dict = {}  # name prefix ("hub:") -> function(name) -> BackboneSpec
_BUILTINS = []  # [True] once the built-in backbones are registered


def _with_builtins():
    """Register the built-in backbones on the registry's first use, not at import: a
    name is looked up only when a model is about to be built or listed, so
    `import transferkit` and `--help` never build the Keras Applications table."""
    if not _BUILTINS:
        _BUILTINS.append(True)  # first: their own registrations come back here
        import transferkit.models as models

        models.register_builtins()


def register_resolver(prefix, resolve):
    """Let names starting with `prefix` (e.g. "hub:") resolve through `resolve(name)`,
    which returns a BackboneSpec; `get_spec` registers it on first use."""
    _RESOLVERS[prefix] = resolve


def _key(name):
    # "MobileNetV2", "mobilenet_v2" and "mobilenetv2" all name the same backbone.
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@renamed(**TRUSTED)
def register_backbone(spec, *, name=None, preprocessing="none", block_pattern=None,
                      default_size=224, min_size=32, safe_mode=True):
    """Add a backbone to the registry and return its `BackboneSpec`.

    spec: a `BackboneSpec`, or your own model as a backbone: a `keras.Model`, the path
        to a saved `.keras` model (loaded with Keras `safe_mode` on unless
        `safe_mode=False`), or a callable returning a `keras.Model` (called with
        `input_shape=` if it takes that argument). The spec is read off the model: input
        size from its input shape (`default_size`/`min_size`, 224/32 by default, when
        the model takes any size), feature size from its output; `name` defaults to the
        model's (or file's) name, `preprocessing` to "none" (the model gets raw 0-255
        RGB) and `block_pattern` to every layer its own block.
        Such a backbone's pretrained weights are its own: `weights="imagenet"` (the
        default everywhere) keeps them, `weights=None` re-initialises it.
    A second backbone with the same name raises (re-registering the same file is fine).
    """
    _with_builtins()  # a name clashing with a built-in one raises now, not later
    source = None
    if not isinstance(spec, BackboneSpec):
        if is_model_file(spec):
            source = os.path.realpath(os.fspath(spec))
        spec = spec_from_model(spec, name=name, preprocessing=preprocessing,
                               block_pattern=block_pattern, default_size=default_size,
                               min_size=min_size, safe_mode=safe_mode)
    key = _key(spec.name)
    if key in _REGISTRY and not (source and _SOURCES.get(key) == source):
        raise ConfigError(f"A backbone named {spec.name!r} is already registered."
                          + (" Rename the file, or register it with another `name`."
                             if source else ""))
    _REGISTRY[key] = spec
    if source:
        _SOURCES[key] = source
    return spec


def is_model_file(value):
    """Whether `value` names a saved Keras model (a path ending in .keras)."""
    return isinstance(value, (str, os.PathLike)) and os.fspath(value).endswith(".keras")


@renamed(**TRUSTED)
def spec_from_model(model, *, name=None, preprocessing="none", block_pattern=None,
                    default_size=224, min_size=32, safe_mode=True):
    """A `BackboneSpec` for your own model (see `register_backbone`), not registered."""
    if is_model_file(model):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ConfigError(f"The `backbone` argument names a .keras file that does not "
                              f"exist. Received: backbone={path!r}")
        make = lambda: load_model(path, safe_mode=safe_mode, compile=False)  # noqa: E731
        default_name = os.path.splitext(os.path.basename(path))[0]
    elif isinstance(model, keras.Model):
        make = lambda: _copy(model)  # noqa: E731
        default_name = model.name
    elif callable(model):
        make = model
        default_name = getattr(model, "__name__", "custom_backbone")
    else:
        raise ConfigError("The `backbone` should be a registered name, a BackboneSpec, a "
                          "keras.Model, a path to a .keras model or a callable returning "
                          f"a keras.Model. Received: {model!r}")
    probe = _call(make, None)
    if not isinstance(probe, keras.Model):
        raise ConfigError(f"The backbone callable {default_name!r} should return a "
                          f"keras.Model. It returned: {type(probe).__name__}")
    shape = tuple(probe.input_shape)
    if len(shape) != 4 or shape[-1] != 3 or (shape[1] != shape[2]):
        raise ConfigError(f"A backbone takes square RGB images, (None, size, size, 3) or "
                          f"(None, None, None, 3). Model {default_name!r} takes "
                          f"input_shape={shape}.")
    if len(probe.output_shape) not in (2, 4):
        raise ConfigError(f"A backbone outputs feature maps (batch, h, w, c) or vectors "
                          f"(batch, c). Model {default_name!r} outputs "
                          f"{probe.output_shape}.")
    fixed = shape[1]
    out = probe.output_shape
    # One level, its own output, for a dense head: the stride read off the shapes when
    # both are known (else 32, an ImageNet network's; the head resizes to its grid).
    stride = round(fixed / out[1]) if len(out) == 4 and fixed and out[1] else 32
    return BackboneSpec(
        name=re.sub(r"\W", "_", name or default_name),
        constructor=_own_constructor(make, fixed), default_size=fixed or default_size,
        min_size=fixed or min_size, preprocessing=preprocessing,
        feature_size=int(probe.output_shape[-1]),
        # Every layer its own block: `last_blocks:K` then means the last K layers.
        block_pattern=block_pattern or r"^(.+)$", family="own", imagenet=True,
        offline_weights=lambda: "own", tags=("own",), operations=len(probe.operations),
        pyramid=((None, max(1, stride)),) if len(out) == 4 else ())


def _copy(model):
    # Fresh layers with the same weights: two models built on it never share variables.
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _call(make, input_shape):
    takes_shape = "input_shape" in inspect.signature(make).parameters
    return make(input_shape=input_shape) if takes_shape and input_shape else make()


def _own_constructor(make, fixed):
    # No arguments beyond these: the model is already made (check_kwargs refuses any).
    def build(include_top=False, weights=None, input_shape=None):
        if include_top:
            raise WeightsError("A backbone registered from a model has no classifier "
                               "top: use include_top=False.")
        model = _call(make, input_shape)
        if weights is None:  # the same architecture, freshly initialised
            try:
                model = keras.models.clone_model(model)
            except ValueError as error:  # Keras re-reads the config in safe mode
                raise WeightsError(
                    "weights=None re-initialises a backbone by cloning it, which Keras "
                    f"refuses for this model in safe mode ({error}). Use its own weights "
                    "(weights='imagenet', the default).") from error
        elif weights != "imagenet":
            raise WeightsError("A backbone registered from a model builds with its own "
                               "weights ('imagenet') or None; create_backbone loads weight"
                               f" files. Received: weights={weights!r}")
        if fixed and input_shape and tuple(input_shape[:2]) != (fixed, fixed):
            raise ConfigError(f"This backbone takes {fixed}x{fixed} images only. "
                              f"Received: input_shape={tuple(input_shape)}")
        return model

    return build


def get_spec(name):
    """The `BackboneSpec` registered as `name` (case and underscores ignored); a path to
    a saved `.keras` model registers that model (in safe mode) on first use."""
    if isinstance(name, BackboneSpec):
        return name
    _with_builtins()
    for prefix, resolve in _RESOLVERS.items():
        if isinstance(name, str) and name.startswith(prefix):
            spec = resolve(name)
            if _REGISTRY.get(_key(spec.name)) is not spec:
                register_backbone(spec)
            return spec
    if is_model_file(name):
        source = os.path.realpath(os.fspath(name))
        known = [key for key, path in _SOURCES.items() if path == source]
        return _REGISTRY[known[0]] if known else register_backbone(name)
    spec = _REGISTRY.get(_key(name))
    if spec is None:
        names = [s.name for s in _REGISTRY.values()]
        raise ConfigError(
            f"Unknown backbone: backbone={name!r}.{suggest(name, names)} "
            f"Run `transferkit backbones` (or `list_backbones()`) for the {len(names)} "
            "registered names."
        )
    return spec


def resolve_input(backbone, image_size=None, scale=1.0):
    """The `InputSpec` a model on `backbone` takes: `image_size` (an int, (height,
    width) or Keras's input_shape (height, width, 3); None or 0: the spec's default
    size, times `scale` (a task's `input_scale`, default 1) rounded to a multiple of
    32, unless the backbone takes one size only), checked against the spec's minimum
    size. Every entry point resolves the input size here, once."""
    spec = get_spec(backbone)
    if isinstance(image_size, (tuple, list)) and len(image_size) == 3:
        if image_size[2] != 3:
            raise ConfigError(f"Models take RGB images: the `input_shape` argument should "
                              f"end in 3 channels. Received: input_shape={image_size!r}")
        image_size = tuple(image_size[:2])
    height, width = parse_size(image_size or default_size(spec, scale))
    if min(height, width) < spec.min_size or max(height, width) > MAX_IMAGE_SIDE:
        raise ConfigError(f"Backbone {spec.name!r} takes images of {spec.min_size} to "
                          f"{MAX_IMAGE_SIDE} pixels a side. Received: "
                          f"image_size={image_size!r}")
    return InputSpec(height, width, 3)


def default_size(spec, scale=1.0):
    """`spec`'s default input side times `scale`, rounded to a multiple of 32 (the
    coarsest stride, so every map divides evenly), at least `spec.min_size`; a
    backbone of one size only (min_size == default_size) keeps it."""
    if scale == 1.0 or spec.min_size >= spec.default_size:
        return spec.default_size
    return max(spec.min_size, 32 * round(spec.default_size * scale / 32))


def list_backbones(pattern="*", tag=None):
    """Registered backbone names matching a shell-style `pattern` (default "*")."""
    _with_builtins()
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
