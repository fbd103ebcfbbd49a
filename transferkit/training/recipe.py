"""`RecipeConfig`: every setting of a training run in one frozen, flat dataclass.

Recipes, the CLI and the tuner all produce one of these; `run.train` consumes it. Flat
on purpose: each field is one command-line flag and one recipe key, and unknown keys
are rejected with the list of valid ones instead of being silently ignored.
"""

import dataclasses

from transferkit.core.errors import ConfigError, suggest
from transferkit.core.task_registry import get_task
from transferkit.core.files import read_json_object
from transferkit.data.augment import augment_config
from transferkit.models.builder import resolve_input
from transferkit.models.heads import HeadConfig
from transferkit.training.cache import FeatureCache
from transferkit.training.freezing import FreezePolicy
from transferkit.training.schedule import PhaseConfig, ScheduleConfig


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """A whole run. Defaults are MobileNetV2's published-practice settings."""

    # data
    data: str = ""
    val_data: str = ""
    task: str = "multiclass"
    val_split: float = 0.2
    test_split: float = 0.0
    seed: int = 0
    batch_size: int = 32
    augment: str = "light"  # none | light | medium | strong
    class_weights: bool = False
    scan: bool = True
    follow_links: bool = False  # use links that leave the data folder
    # model
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"  # imagenet | none | path to weights or .keras model
    image_size: int = 0  # 0: the backbone's default size
    backbone_kwargs: tuple = ()  # e.g. (("alpha", 0.35),)
    pooling: str = "avg"
    head_units: tuple = ()
    dropout: float = 0.2
    head_batch_norm: bool = False
    l2: float = 0.0
    # phase 1: head on the frozen backbone
    head_epochs: int = 5
    head_lr: float = 1e-3
    head_lr_auto: bool = False  # run the LR range test first and use its suggestion
    cache_features: bool = True
    feature_views: int = 2  # augmented views cached per image (0: clean features only)
    # phase 2: fine-tuning
    finetune_epochs: int = 5
    finetune_lr: float = 1e-5
    finetune_lr_auto: bool = False  # range test after phase 1; its suggestion for phase 2
    unfreeze: str = "last_blocks:2"
    train_batchnorm: bool = False
    backbone_lr_multiplier: float = 1.0
    layer_lr_decay: float = 1.0  # per-block LR factor from the top, in (0, 1]; 1.0: off
    decay: str = "cosine"
    warmup_epochs: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    early_stopping_patience: int = 3
    # Phase 2 on activations cached at the freeze boundary (training.boundary); above
    # the cap (GB of float16 activations) phase 2 runs live and says so.
    boundary_cache: bool = True
    boundary_cache_max_gb: float = 2.0
    # segmentation (tasks with a choice of loss and a decoder)
    segmentation_loss: str = "crossentropy"  # crossentropy | dice | both
    decoder_width: int = 32  # U-Net decoder filters at the shallowest skip (doubling)
    # scale-out
    strategy: str = "auto"
    mixed_precision: bool = False
    # outputs
    report: bool = True  # report.html with plots at the end of the run

    def __post_init__(self):
        # Tuples, not lists, so the config stays hashable and truly frozen.
        object.__setattr__(self, "head_units", tuple(int(u) for u in self.head_units))
        kwargs = self.backbone_kwargs.items() if isinstance(self.backbone_kwargs, dict) \
            else self.backbone_kwargs
        object.__setattr__(self, "backbone_kwargs", tuple(tuple(kv) for kv in kwargs))
        augment_config(self.augment)  # a known preset
        self.head_config()  # validates task, pooling, dropout, l2
        self.schedule_config()  # validates the phases and the unfreeze policy
        if self.boundary_cache_max_gb < 0:
            raise ConfigError("The `boundary_cache_max_gb` setting should be >= 0 (GB). "
                              f"Received: boundary_cache_max_gb={self.boundary_cache_max_gb}")
        self.task_config()  # validates the loss choice
        if self.decoder_width < 1:
            raise ConfigError(f"decoder_width should be >= 1. Received: "
                              f"decoder_width={self.decoder_width}")

    def task_config(self):
        """The `Task` this recipe trains (with its loss choice, for tasks that have one)."""
        task = get_task(self.task)
        return task.with_loss(self.segmentation_loss) if task.losses else task

    def input_spec(self):
        """The InputSpec of this recipe's model (its image_size, else the backbone's)."""
        return resolve_input(self.backbone, self.image_size or None)

    def weights_arg(self):
        """`weights` as `build_model` takes it (None for "none")."""
        return None if self.weights in ("", "none", "None") else self.weights

    def feature_cache(self, store=None):
        """The FeatureCache of phase 1 (`cache_features`) and phase 2 (`boundary_cache`),
        or None when both are off or the task cannot train on cached tensors (e.g.
        segmentation, whose decoder reads several encoder layers)."""
        if not (self.cache_features or self.boundary_cache) or \
                not get_task(self.task).caches_features:
            return None
        augment = augment_config(self.augment)
        return FeatureCache(views=self.feature_views if augment else 0, augment=augment,
                            store=store, seed=self.seed, head=self.cache_features,
                            boundary=self.boundary_cache,
                            boundary_max_gb=self.boundary_cache_max_gb)

    def head_config(self):
        return HeadConfig(task=self.task, pooling=self.pooling, units=self.head_units,
                          dropout=self.dropout, batch_norm=self.head_batch_norm, l2=self.l2)

    def schedule_config(self):
        common = dict(optimizer=self.optimizer, weight_decay=self.weight_decay,
                      early_stopping_patience=self.early_stopping_patience or None)
        head = PhaseConfig(epochs=self.head_epochs, learning_rate=self.head_lr,
                           freeze=FreezePolicy("all"), **common)
        policy = FreezePolicy.parse(self.unfreeze)
        policy = dataclasses.replace(policy, train_batchnorm=self.train_batchnorm)
        finetune = PhaseConfig(epochs=self.finetune_epochs, learning_rate=self.finetune_lr,
                               freeze=policy, decay=self.decay,
                               warmup_epochs=self.warmup_epochs,
                               backbone_lr_multiplier=self.backbone_lr_multiplier,
                               layer_lr_decay=self.layer_lr_decay, **common)
        return ScheduleConfig(head=head, finetune=finetune,
                              label_smoothing=self.label_smoothing,
                              batch_size=self.batch_size)

    def to_dict(self):
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(RecipeConfig))


def recipe_from_dict(values, base=None):
    """A RecipeConfig from `base` (default: the defaults) with `values` applied.

    Unknown keys raise ConfigError listing the valid ones; values are type-checked
    against the defaults so "5" for an int field is refused early, not mid-run.
    """
    base = base or RecipeConfig()
    if "trusted" in values:
        raise ConfigError("`trusted` is not a recipe key: only the person running "
                          "transferkit can vouch for a model file, with --trusted on the "
                          "command line (or trusted=True in the call), never a file.")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        hints = "".join(suggest(k, FIELDS) for k in unknown)
        raise ConfigError(f"Unknown recipe key(s) {unknown}.{hints} Valid keys: "
                          f"{', '.join(FIELDS)}")
    clean = {}
    for key, value in values.items():
        default = getattr(RecipeConfig(), key)
        if key == "weights" and value is None:  # JSON null: no pretrained weights
            value = "none"
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"Recipe key {key!r} should be true or false. "
                              f"Received: {key}={value!r}")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, tuple) and isinstance(value, (list, dict)):
            value = tuple(value.items()) if isinstance(value, dict) else tuple(value)
        # bool is an int subclass: without the second test "head_epochs": true means 1.
        if not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(
                default, bool):
            raise ConfigError(f"Recipe key {key!r} should be a {type(default).__name__}. "
                              f"Received: {key}={value!r}")
        clean[key] = value
    try:
        return dataclasses.replace(base, **clean)
    except (TypeError, ValueError) as error:  # e.g. head_units: ["a"]
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"Invalid recipe value: {error}. Received: {clean}") from None


def load_recipe(path, base=None):
    """Read a JSON recipe file (a flat object of RecipeConfig keys)."""
    values = read_json_object(path, "recipe file")
    try:
        return recipe_from_dict(values, base)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
