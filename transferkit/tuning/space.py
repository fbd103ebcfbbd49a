"""The search space of a sweep over the two-phase recipe, and how a trial becomes a recipe.

Every dimension of `SearchSpace` is one of:

    None          not searched: the base recipe's value is used
    a scalar      fixed to that value (still recorded with each trial)
    a tuple       a choice among these values (JSON: a list)
    Range(...)    an int or float range, optionally log-scaled
                  (JSON: {"min": 1e-5, "max": 1e-3, "log": true})

`declare(hp, space)` registers the dimensions with keras-tuner and returns the trial's
values; `resolve(values, base)` turns them into a RecipeConfig with dataclasses.replace.
The same `resolve` writes `best_recipe.json`, which `transferkit train --from-tuning`
reads, so the retrained run is exactly the best trial's recipe.
"""

import dataclasses

from transferkit.core.errors import ConfigError, check_choice, suggest
from transferkit.core.files import read_json_object
from transferkit.data.config import AUGMENT_PRESETS
from transferkit.training.recipe import recipe_from_dict


@dataclasses.dataclass(frozen=True)
class Range:
    """An int range (both ends ints) or a float range; `log` samples on a log scale."""

    min: float
    max: float
    log: bool = False
    step: object = None

    def __post_init__(self):
        if not self.min <= self.max or (self.log and self.min <= 0):
            raise ConfigError(f"A search range needs min <= max (and min > 0 when log). "
                              f"Received: min={self.min}, max={self.max}, log={self.log}")

    @property
    def is_int(self):
        return all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (self.min, self.max))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What a sweep varies. Defaults: head shape, dropout, both learning rates, how many
    blocks phase 2 unfreezes and label smoothing; backbone, epochs and augmentation
    follow the base recipe unless given.

    backbone: names of registered backbones; each trains at its spec's default size.
    head_width: hidden units of the head (0: a linear probe, then head_depth is unused).
    head_depth: number of hidden Dense layers of that width.
    unfreeze_blocks: K in phase 2's "last_blocks:K" freeze policy.
    augment: preset names of `data.augment.AUGMENT_PRESETS` (none, light, medium, strong).
    decoder_width: a segmentation decoder's filters at its shallowest stage (None: the
        recipe's); for segmentation set the head dimensions to null, no head is built.
    layer_lr_decay: phase 2's layer-wise learning-rate decay, in (0, 1] (None: the
        recipe's; e.g. (0.65, 0.75, 0.9) for a ViT).
    box_weight: localization's box loss weight against the class loss (None: the
        recipe's; e.g. (1.0, 3.0, 10.0)).
    """

    backbone: object = None
    head_width: object = (0, 128, 256)
    head_depth: object = Range(1, 2)
    dropout: object = Range(0.0, 0.5, step=0.1)
    head_lr: object = Range(1e-4, 1e-2, log=True)
    finetune_lr: object = Range(1e-6, 1e-4, log=True)
    unfreeze_blocks: object = (1, 2, 3)
    head_epochs: object = None
    finetune_epochs: object = None
    augment: object = None
    label_smoothing: object = (0.0, 0.1)
    decoder_width: object = None
    layer_lr_decay: object = None
    box_weight: object = None

    def __post_init__(self):
        for name in DIMENSIONS:
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, name, value)
            if isinstance(value, tuple) and not value:
                raise ConfigError(f"Search dimension `{name}` has no choices. Give a "
                                  "list of values, a range, or null for the recipe's value.")
        if choices(self.backbone):
            from transferkit.models.registry import get_spec  # Keras: only to check names

            for name in choices(self.backbone):
                get_spec(name)  # raises with close matches for an unknown backbone
        for name in choices(self.augment):
            check_choice("augment", name, AUGMENT_PRESETS)

    def to_dict(self):
        """JSON-able form, read back by `space_from_dict`."""
        return {name: _dim_to_json(getattr(self, name)) for name in DIMENSIONS}

    def max_value(self, name, base):
        """The largest value dimension `name` can take (the base recipe's when unsearched)."""
        value = getattr(self, name)
        if value is None:
            return base.flat()[name]
        if isinstance(value, Range):
            return value.max
        return max(choices(value))


DIMENSIONS = tuple(f.name for f in dataclasses.fields(SearchSpace))


def choices(dim):
    """The listed values of a dimension (() for None or a Range)."""
    if dim is None or isinstance(dim, Range):
        return ()
    return dim if isinstance(dim, tuple) else (dim,)


def declare(hp, space):
    """Register `space` on keras-tuner `hp`; returns {name: value} of the active ones."""
    values = {}
    for name in DIMENSIONS:
        dim = getattr(space, name)
        if dim is None:
            continue
        if name == "head_depth" and "head_width" in values:
            widths = [w for w in choices(space.head_width) if w]
            if not widths:  # only linear probes: depth means nothing
                continue
            # Depth only exists for a head with hidden layers, so the tuner never runs
            # two trials that differ in a depth no model uses.
            with hp.conditional_scope("head_width", widths):
                value = _register(hp, name, dim)
            if value is not None:
                values[name] = value
            continue
        values[name] = _register(hp, name, dim)
    return values


def _register(hp, name, dim):
    if isinstance(dim, Range):
        if dim.is_int:
            return hp.Int(name, dim.min, dim.max, step=dim.step or 1,
                          sampling="log" if dim.log else "linear")
        return hp.Float(name, float(dim.min), float(dim.max), step=dim.step,
                        sampling="log" if dim.log else "linear")
    if isinstance(dim, tuple):
        return hp.Choice(name, list(dim)) if len(dim) > 1 else hp.Fixed(name, dim[0])
    return hp.Fixed(name, dim)


def resolve(values, base):
    """The RecipeConfig of a trial: `base` with the trial's `values` applied.

    Keys keras-tuner adds itself ("tuner/epochs", ...) are ignored; unknown keys raise.
    """
    values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    unknown = sorted(set(values) - set(DIMENSIONS))
    if unknown:
        raise ConfigError(f"Unknown hyperparameter(s) {unknown}."
                          f"{''.join(suggest(k, DIMENSIONS) for k in unknown)} "
                          f"Valid names: {', '.join(DIMENSIONS)}")
    changes = {k: values[k] for k in ("dropout", "head_lr", "finetune_lr", "head_epochs",
                                      "finetune_epochs", "augment", "label_smoothing",
                                      "decoder_width", "layer_lr_decay", "box_weight")
               if k in values}
    if "backbone" in values:
        from transferkit.models.registry import get_spec

        spec = get_spec(values["backbone"])
        # Another backbone trains at its own default size (image_size 0, resolved by
        # RecipeConfig.input_spec like every size), and constructor kwargs (e.g. alpha)
        # belong to the base recipe's backbone only.
        model = base.model
        same = get_spec(model.backbone).name == spec.name
        changes.update(backbone=spec.name, image_size=model.image_size if same else 0,
                       backbone_kwargs=model.backbone_kwargs if same else ())
    if "head_width" in values:
        width = int(values["head_width"])
        depth = int(values.get("head_depth") or 1)
        changes["head_units"] = (width,) * depth if width else ()
    if "unfreeze_blocks" in values:
        changes["unfreeze"] = f"last_blocks:{int(values['unfreeze_blocks'])}"
    for key in ("head_epochs", "finetune_epochs", "unfreeze_blocks", "decoder_width"):
        if key in changes:
            changes[key] = int(changes[key])
    for key in ("dropout", "head_lr", "finetune_lr", "label_smoothing", "layer_lr_decay",
                "box_weight"):
        if key in changes:
            # Stepped ranges accumulate float error (0.30000000000000004): keep 10
            # significant digits, far below any effect on training.
            changes[key] = float(f"{float(changes[key]):.10g}")
    return recipe_from_dict(changes, base)


def space_from_dict(values, base=SearchSpace()):
    """A SearchSpace from `base` with JSON-style `values` applied (unknown keys raise)."""
    unknown = sorted(set(values) - set(DIMENSIONS))
    if unknown:
        raise ConfigError(f"Unknown search dimension(s) {unknown}."
                          f"{''.join(suggest(k, DIMENSIONS) for k in unknown)} "
                          f"Valid dimensions: {', '.join(DIMENSIONS)}")
    return dataclasses.replace(base, **{k: _dim_from_json(k, v) for k, v in values.items()})


def load_space(path, base=SearchSpace()):
    """Read a search space JSON file (an object of dimension names)."""
    values = read_json_object(path, "search space file")
    try:
        return space_from_dict(values, base)
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{path}: {error}") from None


def _dim_from_json(name, value):
    if isinstance(value, dict):
        extra = sorted(set(value) - {"min", "max", "log", "step"})
        if extra or not {"min", "max"} <= set(value):
            raise ConfigError(f"Search dimension `{name}`: a range is "
                              '{"min": ..., "max": ..., "log": false, "step": null}. '
                              f"Received: {value}")
        return Range(**value)
    return tuple(value) if isinstance(value, list) else value


def _dim_to_json(value):
    if isinstance(value, Range):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value
