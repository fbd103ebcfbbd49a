"""`RecipeConfig`: a whole run as one tree of the frozen configs the API itself uses.

    RecipeConfig
      task, segmentation_loss, box_weight, seed
      data      DataConfig       (data.config)      data, val_data, val_split, augment ...
      detection DetectionConfig  (models.detection) detection_width, score_threshold ...
      model     ModelConfig      (models.config)    backbone, weights, image_size, ...
        head    HeadConfig       (models.config)    pooling, head_units, dropout, ...
      schedule  ScheduleConfig   (training.config)  batch_size, label_smoothing, ...
        head      PhaseConfig    head_epochs, head_lr, head_lr_auto, ...
        finetune  PhaseConfig    finetune_epochs, finetune_lr, finetune_unfreeze, ...
      runtime   RuntimeConfig    (training.config)  cache_features, boundary_cache, ...

`fine_tune(model, data)` runs `ScheduleConfig()`, and `transferkit train` runs
`RecipeConfig().schedule`, the very same object: each default is written once, in the
field that owns it. Recipe files, flags and the tuner address the leaves by flat keys
(`core.config`); a recipe file may be the nested form `to_dict` writes or a flat object
of keys, and SHORTHANDS keep the flat recipes of earlier versions loading.
"""

import dataclasses

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.config import (apply, check_value, flatten, leaves, nest, section,
                                     setting, unnest)
from transferkit.core.errors import ConfigError, suggest
from transferkit.core.files import read_json_object
from transferkit.core.task_registry import DEFAULT_TASK, get_task, task_names
from transferkit.data.config import DataConfig, augment_config
from transferkit.models.config import ModelConfig
from transferkit.models.detection.config import BOX_WEIGHT, DetectionConfig
# RuntimeConfig is importable from here as before.
from transferkit.training.config import RuntimeConfig, ScheduleConfig  # noqa: F401


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """A whole run (defaults: EfficientNet-Lite0 with ImageNet weights, the head at 1e-3
    on cached features until validation stops improving, then fine-tuning of the top 2
    blocks at 1e-5 on boundary activations; see `ScheduleConfig`)."""

    task: str = setting(DEFAULT_TASK, "what the model predicts, a registered task: "
                        f"{', '.join(task_names())}")
    segmentation_loss: str = setting("crossentropy", "segmentation only: the loss, "
                                     "crossentropy, dice or both (their sum)")
    box_weight: float = setting(BOX_WEIGHT, "detection and localization: weight of the "
                                "box loss (1 - CIoU + relative corner error) against "
                                "the focal class loss")
    seed: int = setting(0, "seed of the splits, the augmentation and the initial weights")
    data: DataConfig = section(DataConfig())
    model: ModelConfig = section(ModelConfig())
    detection: DetectionConfig = section(DetectionConfig())
    schedule: ScheduleConfig = section(ScheduleConfig())
    runtime: RuntimeConfig = section(RuntimeConfig())

    def __post_init__(self):
        self.task_config(bind=False)  # a known task, with a loss it accepts

    @classmethod
    def from_keys(cls, **keys):
        """The defaults with flat recipe `keys` applied (see `recipe_from_dict`)."""
        return recipe_from_dict(keys)

    def task_config(self, bind=True):
        """The `Task` this recipe trains: with its loss choice (tasks that have one),
        box weight and detection settings, bound to the recipe's model (`Task.bind`:
        a dense task's labels are encoded on that model's grid). The data pipeline,
        the model and the loss all take this one object."""
        task = get_task(self.task)
        task = task.with_loss(self.segmentation_loss) if task.losses else task
        task = task.with_box_weight(self.box_weight).with_detection(self.detection)
        return task.bind(self.model) if bind else task

    def input_spec(self):
        """The InputSpec of this recipe's model (its image_size, else the backbone's
        default scaled for its task: `Task.input_scale`)."""
        return self.model.input_spec(get_task(self.task))

    def feature_cache(self, store=None, *, mirror_val=False):
        """The FeatureCache of phase 1 (`cache_features`) and phase 2 (`boundary_cache`),
        or None when both are off or the task cannot train on cached tensors (e.g.
        segmentation, whose decoder reads several encoder layers): `run_cache`, which
        `fine_tune` calls too, on this recipe's settings. mirror_val: also store the val
        files' mirrors (for a flip-TTA decision; default False)."""
        from transferkit.training.cache.config import run_cache, runtime_cache

        return run_cache(self.task, augment_config(self.data.augment), self.seed, store,
                         runtime_cache(self.runtime, mirror_val=mirror_val))

    def to_dict(self):
        """The nested JSON form (what config.json and --print-config hold)."""
        return nest(self)

    def flat(self):
        """{flat key: value}: what flags, flat recipe files and the tuner address."""
        return flatten(self)


LEAVES = {leaf.key: leaf for leaf in leaves(RecipeConfig)}
# Keys of the flat recipes of earlier versions that set a phase's setting (or both
# phases'): only phase 2 unfreezes, and one optimizer for both phases is the usual wish.
SHORTHANDS = {
    "unfreeze": ("finetune_unfreeze",), "train_batchnorm": ("finetune_train_batchnorm",),
    "decay": ("finetune_decay",), "warmup_epochs": ("finetune_warmup_epochs",),
    "backbone_lr_multiplier": ("finetune_backbone_lr_multiplier",),
    "layer_lr_decay": ("finetune_layer_lr_decay",),
    "optimizer": ("head_optimizer", "finetune_optimizer"),
    "weight_decay": ("head_weight_decay", "finetune_weight_decay"),
    "early_stopping_patience": ("head_early_stopping_patience",
                                "finetune_early_stopping_patience"),
}
KEYS = tuple(LEAVES) + tuple(SHORTHANDS)


def recipe_from_dict(values, base=None):
    """A RecipeConfig from `base` (default: the defaults) with `values` applied: the
    nested form `to_dict` writes, or a flat object of keys (KEYS, shorthands first,
    so "optimizer" then "head_optimizer" gives phase 1 its own).

    Unknown keys raise ConfigError listing the valid ones; values are type-checked
    against the defaults so "5" for an int field is refused early, not mid-run.
    """
    flat = flat_values(values)
    try:
        return apply(base or RecipeConfig(), flat)
    except (TypeError, ValueError) as error:  # e.g. head_units: ["a"]
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"Invalid recipe value: {error}. Received: {values}") from None


def flat_values(values):
    """{flat key: value} of recipe `values` (the nested or the flat form; shorthands
    resolved, each value type-checked against its setting), not yet applied to a
    recipe: raises ConfigError naming an unknown key or a value of the wrong type."""
    if "trusted" in values:
        raise ConfigError("`trusted` is not a recipe key: only the person running "
                          "transferkit can vouch for a model file, with --trusted on the "
                          "command line (or safe_mode=False in the call), never a file.")
    if any(isinstance(values.get(name), dict) for name in ("data", "model", "detection",
                                                           "schedule", "runtime")):
        values = unnest(RecipeConfig, values)
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        hints = "".join(suggest(k, KEYS) for k in unknown)
        raise ConfigError(f"Unknown recipe key(s) {unknown}.{hints} Valid keys: "
                          f"{', '.join(KEYS)}")
    if "weights" in values and values["weights"] is None:  # JSON null: no weights
        values = {**values, "weights": "none"}
    flat = {}
    for key in sorted(values, key=lambda k: k not in SHORTHANDS):
        for target in SHORTHANDS.get(key, (key,)):
            flat[target] = check_value(LEAVES[target], values[key])
    for phase in ("head", "finetune"):
        # Epochs or patience the user asked for hold on cached tensors too.
        asked = {f"{phase}_epochs", f"{phase}_early_stopping_patience"} & set(flat)
        cached = {f"{phase}_cached_epochs", f"{phase}_cached_patience"}
        if asked and not cached & set(flat):
            flat.update(dict.fromkeys(cached, 0))
    return flat


def load_recipe(path, base=None):
    """Read a JSON recipe file (the nested form, or a flat object of recipe keys)."""
    values = read_json_object(path, "recipe file")
    try:
        return recipe_from_dict(values, base)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def load_run_data(recipe, verbose=True, fixes=None):
    """The `DataSplits` a recipe trains on, at the recipe's input size. fixes: a read
    `data.fixes.Fixes` to use instead of reading the recipe's fixes file again."""
    from transferkit.data.load import load_data  # TensorFlow: when data is loaded

    data = recipe.data
    return load_data(data.source(), image_size=recipe.input_spec(),
                     batch_size=recipe.schedule.batch_size, task=recipe.task_config(),
                     val_split=data.val_split, test_split=data.test_split, seed=recipe.seed,
                     augment=augment_config(data.augment), scan=data.scan,
                     class_weights=data.class_weights, follow_links=data.follow_links,
                     fixes=fixes or data.fixes or None, verbose=verbose)


@renamed(**TRUSTED)
def build_run_model(recipe, num_outputs, *, safe_mode=True):
    """The model a recipe describes, with `num_outputs` classes (or targets).

    safe_mode: False loads a `.keras` weights file without Keras safe mode (only from
        the caller, never from a recipe file)."""
    # The task picks the model: a head on pooled features, or e.g. a U-Net decoder.
    return recipe.task_config().build_model(recipe.model, num_outputs,
                                            image_size=recipe.input_spec(),
                                            trusted=not safe_mode)
