"""The training configs: what each phase is, the schedule of both, how a run executes,
its checkpoints and the learning-rate range test; frozen dataclasses, light (no Keras),
so `--help`, recipe files and the flags read them without loading TensorFlow.

    FreezePolicy     which backbone layers train ("last_blocks:2", ...)
    PhaseConfig      one phase: epochs, learning rate, freezing, optimizer, ...
    ScheduleConfig   both phases and what they share (batch size, monitor, ...)
    RuntimeConfig    caches, tf.distribute strategy, mixed precision, reports
    CheckpointConfig how often a run saves checkpoints, and how many it keeps
    LRFindConfig     the range test: its phase, rate range and steps

The code that uses them lives beside: `freezing`, `schedule`, `orchestrator`,
`distribute`, `checkpoint`, `lr_find`.
"""

import dataclasses
import re

from transferkit.core.config import section, setting
from transferkit.core.errors import ConfigError, check_choice, suggest
from transferkit.data.config import DEFAULT_BATCH_SIZE
from transferkit.models.config import FALSE_REJECTION

PHASES = ("head", "finetune")
DECAYS = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")  # `optimizers.OPTIMIZERS` makes them
STRATEGIES = ("auto", "one", "mirrored", "multiworker", "tpu")  # `distribute` makes them
KINDS = ("all", "none", "top_layers", "from_layer", "last_blocks", "fraction", "regex")


@dataclasses.dataclass(frozen=True)
class FreezePolicy:
    """What stays frozen in the backbone (the head always trains).

    kind: "all" (phase 1), "none", "top_layers" (value: N layers from the top train),
        "from_layer" (value: name of the first layer that trains), "last_blocks"
        (value: K blocks, per the spec's block layout), "fraction" (value: 0-1 of layers
        from the top), or "regex" (value: pattern; matching layers train).
    train_batchnorm: False (default) keeps BatchNorm frozen, hence in inference mode:
        its moving statistics came from the source data and small target batches
        would wreck them (keras-team/keras #9214).
    """

    kind: str = "all"
    value: object = None
    train_batchnorm: bool = False

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        needs = {"top_layers": int, "last_blocks": int, "fraction": float,
                 "from_layer": str, "regex": str}
        if self.kind in needs and not isinstance(self.value, needs[self.kind]):
            raise ConfigError(
                f"FreezePolicy(kind={self.kind!r}) needs a value of type "
                f"{needs[self.kind].__name__}. "
                f"Received: value={self.value!r}")
        if self.kind == "regex":
            compile_regex(self.value)
        if self.kind == "fraction" and not 0.0 <= self.value <= 1.0:
            raise ConfigError(f"The `value` of a 'fraction' policy should be in [0, 1]. "
                              f"Received: value={self.value}")

    @classmethod
    def parse(cls, text):
        """From a string: "all", "none", "last_blocks:2", "top_layers:20", "regex:^block5"."""
        if isinstance(text, cls):
            return text
        kind, _, value = str(text).partition(":")
        caster = {"top_layers": int, "last_blocks": int, "fraction": float}.get(kind, str)
        try:
            value = caster(value) if value else None
        except ValueError:
            raise ConfigError(f"Cannot read freeze policy {text!r}: the value after ':' "
                              f"should be of type {caster.__name__}.") from None
        return cls(kind, value)

    def __str__(self):
        return self.kind if self.value is None else f"{self.kind}:{self.value}"


def compile_regex(text):
    """`text` compiled, or ConfigError naming the freeze policy."""
    try:
        return re.compile(text)
    except re.error as error:
        raise ConfigError(f"The freeze policy 'regex:{text}' is not a valid regular "
                          f"expression: {error}.") from None


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """One phase of training (defaults: the head phase's; `FINETUNE_PHASE` holds the
    fine-tuning phase's). Every field is a recipe key and a flag, prefixed with the
    phase: `head_epochs`, `finetune_lr`, ..."""

    epochs: int = setting(5, "epochs of this phase (0: skip it)")
    learning_rate: float = setting(1e-3, "peak learning rate of this phase", key="lr")
    lr_auto: bool = setting(False, "run the LR range test when the phase starts and use "
                            "its suggestion instead of the learning rate (recorded in "
                            "config.json, so a resumed run keeps it)")
    freeze: FreezePolicy = setting(
        FreezePolicy("all"), "which backbone layers train: all (frozen), none, "
        "last_blocks:K, top_layers:N, fraction:F, from_layer:NAME or regex:PATTERN",
        key="unfreeze", parse=FreezePolicy.parse, show=str,
        also=[("train_batchnorm", "train_batchnorm",
               "let unfrozen BatchNorm layers train (normally they stay in inference "
               "mode: small target batches would wreck ImageNet's moving statistics)")])
    optimizer: str = setting("adam", f"optimizer: one of {', '.join(OPTIMIZERS)}",
                             choices=OPTIMIZERS)
    weight_decay: float = setting(0.0, "decoupled weight decay (0: off)")
    decay: str = setting("constant", "learning-rate shape over the phase after warmup: "
                         "constant or cosine", choices=DECAYS)
    warmup_epochs: int = setting(0, "epochs of linear warmup from 0 to the learning rate")
    early_stopping_patience: int = setting(
        3, "epochs without improvement of the monitored metric before the phase stops "
        "and restores its best weights (0: off, the phase runs all its epochs and "
        "keeps its last weights)")
    cached_epochs: int = setting(
        0, "epochs of this phase when it runs on cached tensors (phase 1 on cached "
        "features, phase 2 on boundary activations), where an epoch costs milliseconds: "
        "a cap that early stopping ends, with cached_patience (0: epochs, as live; a "
        "recipe or flag that sets epochs but not this sets it to 0)")
    cached_patience: int = setting(
        0, "early-stopping patience on cached tensors (0: early_stopping_patience)")
    backbone_lr_multiplier: float = setting(
        1.0, "backbone learning rate relative to the head's (discriminative rates)")
    layer_lr_decay: float = setting(
        1.0, "layer-wise learning-rate decay in (0, 1]: the backbone block at depth d "
        "from the top learns at rate x decay**d (1.0: off)")

    def __post_init__(self):
        object.__setattr__(self, "freeze", FreezePolicy.parse(self.freeze))
        # None was the API's "off" before 0 was: both mean "no early stopping".
        object.__setattr__(self, "early_stopping_patience",
                           int(self.early_stopping_patience or 0))
        check_choice("decay", self.decay, DECAYS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError("The `layer_lr_decay` setting should be in (0, 1] (1.0: off; "
                              "below 1, each block down from the top learns that much "
                              f"slower). Received: layer_lr_decay={self.layer_lr_decay}")
        if self.epochs < 0 or self.learning_rate <= 0:
            raise ConfigError("A phase needs epochs >= 0 and learning_rate > 0. Received: "
                              f"epochs={self.epochs}, learning_rate={self.learning_rate}")
        if min(self.warmup_epochs, self.early_stopping_patience, self.cached_epochs,
               self.cached_patience) < 0:
            raise ConfigError("A phase needs warmup_epochs >= 0 and "
                              "early_stopping_patience, cached_epochs, cached_patience "
                              f">= 0. Received: warmup_epochs={self.warmup_epochs}, "
                              f"early_stopping_patience={self.early_stopping_patience}, "
                              f"cached_epochs={self.cached_epochs}, "
                              f"cached_patience={self.cached_patience}")

    def on_cache(self):
        """This phase as it runs on cached tensors: `cached_epochs` and `cached_patience`
        in place of `epochs` and `early_stopping_patience` where set (a skipped phase,
        epochs=0, stays skipped)."""
        if not self.epochs or not (self.cached_epochs or self.cached_patience):
            return self
        return dataclasses.replace(
            self, epochs=self.cached_epochs or self.epochs,
            early_stopping_patience=self.cached_patience or self.early_stopping_patience)


# On cached features an epoch of the head costs milliseconds: phase 1 trains to
# convergence (validation loss stops improving for 10 epochs, best weights restored)
# within a cap of 200, instead of stopping after a handful of epochs.
HEAD_PHASE = PhaseConfig(cached_epochs=200, cached_patience=10)
# 1e-5 and the top blocks unfrozen with BN frozen follow the Keras fine-tuning guides;
# cosine decay to 0 over the phase lets the last epochs settle at a tiny rate. On
# boundary activations only the top runs, so the phase can afford more epochs.
FINETUNE_PHASE = PhaseConfig(learning_rate=1e-5, freeze=FreezePolicy("last_blocks", 2),
                             decay="cosine", cached_epochs=15, cached_patience=5)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Both phases plus what they share (defaults: 5 + 5 epochs live; on cached tensors
    phase 1 up to 200 epochs with patience 10 and phase 2 up to 15 with patience 5;
    1e-3 then 1e-5 with cosine decay, the top 2 blocks unfrozen)."""

    head: PhaseConfig = section(HEAD_PHASE, prefix="head_")
    finetune: PhaseConfig = section(FINETUNE_PHASE, prefix="finetune_")
    label_smoothing: float = setting(0.0, "label smoothing of the classification loss")
    monitor: str = setting("val_loss", "metric early stopping watches (val_loss, "
                           "val_accuracy, ...; loss when there is no validation split)")
    batch_size: int = setting(DEFAULT_BATCH_SIZE, "images per training step (global, "
                              "across replicas)")
    batchnorm_stats_batches: int = setting(
        100, "after a phase in which BatchNorm layers trained (from scratch, "
        "train_batchnorm, a decoder's own BN), recompute their moving mean and variance "
        "exactly over up to this many training batches without augmentation (0: off, "
        "keep Keras's moving averages, which lag the weights on small data)")

    def __post_init__(self):
        if self.batch_size < 1 or self.batchnorm_stats_batches < 0:
            raise ConfigError(f"The `batch_size` setting should be >= 1 and "
                              f"`batchnorm_stats_batches` >= 0. Received: "
                              f"batch_size={self.batch_size}, "
                              f"batchnorm_stats_batches={self.batchnorm_stats_batches}")

    def fixed(self):
        """This schedule with each phase's epochs and patience on cached tensors too (no
        `cached_epochs`/`cached_patience`): for callers whose epoch timeline must not
        depend on where a phase runs (a tuner's trials)."""
        fixed = {name: dataclasses.replace(self.phase(name), cached_epochs=0,
                                           cached_patience=0) for name in PHASES}
        return dataclasses.replace(self, **fixed)

    def phase(self, name):
        """The PhaseConfig of phase `name` ("head" or "finetune")."""
        return getattr(self, check_choice("phase", name, PHASES))

    def span(self, name, start=0):
        """(first, end) global epochs of phase `name` if phase 1 began at `start` and
        ran all its epochs (the timeline a tuner's epoch budget refers to)."""
        first = start + (self.head.epochs if name == "finetune" else 0)
        return first, first + self.phase(name).epochs


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How a run executes: caches, scale-out and outputs (none of it changes what the
    model learns, except mixed precision's rounding)."""

    cache_features: bool = setting(True, "phase 1 on cached backbone features (the "
                                   "frozen backbone runs once per image and view)")
    # 1 costs what 2 augmented views cost before the clean view was kept, and a second
    # augmented view changed accuracy by 0.003 (Lite0, generated textures, one seed).
    feature_views: int = setting(1, "augmented views cached per training image beside "
                                 "the clean one (0: clean features only)")
    boundary_cache: bool = setting(True, "phase 2 on activations cached at the freeze "
                                   "boundary (the frozen bottom runs once)")
    boundary_cache_max_gb: float = setting(2.0, "largest boundary cache in GB of "
                                           "float16 activations; above it phase 2 runs "
                                           "live and says so")
    strategy: str = setting("auto", f"tf.distribute strategy: {', '.join(STRATEGIES)}",
                            choices=STRATEGIES)
    mixed_precision: bool = setting(False, "mixed_float16 compute (GPUs with tensor "
                                    "cores); the output layer stays float32")
    report: bool = setting(True, "write report.html with plots at the end of the run")
    auto_tta: bool = setting(True, "at the end of the run, score flip TTA on the val "
                             "split and keep it in model.keras only where it helps "
                             "(strictly better headline metric, loss no worse)")
    novelty: bool = setting(True, "fit a novelty score at the end of the run (stored in "
                            "model.keras; predict then says which images are unlike "
                            "every class)")
    false_rejection: float = setting(FALSE_REJECTION, "fraction of validation images the "
                                     "novelty threshold calls unknown (in (0, 1))")

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"The `strategy` setting should be one of "
                              f"{list(STRATEGIES)}. Received: strategy={self.strategy!r}"
                              f"{suggest(self.strategy, STRATEGIES)}")
        if not 0 < self.false_rejection < 1:
            raise ConfigError(f"The `false_rejection` setting should be in (0, 1). "
                              f"Received: false_rejection={self.false_rejection}")
        if self.boundary_cache_max_gb < 0 or self.feature_views < 0:
            raise ConfigError("The `boundary_cache_max_gb` (GB) and `feature_views` "
                              "settings should be >= 0. Received: boundary_cache_max_gb="
                              f"{self.boundary_cache_max_gb}, "
                              f"feature_views={self.feature_views}")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When a run checkpoints and how many checkpoints it keeps (defaults: at each
    epoch's end, the last 3)."""

    every_steps: int = setting(0, "also checkpoint every STEPS optimizer steps (0: at "
                               "epoch ends only)", key="save_every")
    keep: int = setting(3, "checkpoints to keep", key="keep_checkpoints")

    def __post_init__(self):
        if self.every_steps < 0 or self.keep < 1:
            raise ConfigError("CheckpointConfig needs every_steps >= 0 and keep >= 1. "
                              f"Received: every_steps={self.every_steps}, keep={self.keep}")


@dataclasses.dataclass(frozen=True)
class LRFindConfig:
    """The learning-rate range test (defaults: phase 2's rate, from 1e-7 to 1 over at
    most 100 steps, the loss smoothed with factor 0.98)."""

    phase: str = setting("finetune", "the phase whose rate to find: head or finetune "
                         "(finetune: phase 1 runs first, as the rate is phase 2's from "
                         "there)", choices=PHASES)
    min_lr: float = setting(1e-7, "the smallest learning rate tried")
    max_lr: float = setting(1.0, "the largest learning rate tried")
    steps: int = setting(100, "at most this many steps (fewer once the loss diverges)")
    beta: float = setting(0.98, "smoothing factor of the loss's moving average, in [0, 1)")

    def __post_init__(self):
        check_choice("phase", self.phase, PHASES)
        if not 0 < self.min_lr < self.max_lr or self.steps < 5 or not 0 <= self.beta < 1:
            raise ConfigError("The range test needs 0 < min_lr < max_lr, steps >= 5 and "
                              f"0 <= beta < 1. Received: min_lr={self.min_lr}, "
                              f"max_lr={self.max_lr}, steps={self.steps}, "
                              f"beta={self.beta}")
