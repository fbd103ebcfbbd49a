"""The configs of scoring and prediction: `EvaluateConfig` (which images, batch size)
and `PredictConfig` (how many classes are shown). Light: the commands' `--help` reads
them without loading TensorFlow."""

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError, check_choice
from transferkit.data.config import DEFAULT_BATCH_SIZE, EVAL_SPLITS


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """What `evaluate` scores (defaults: every image of the data, 32 at a time)."""

    split: str = setting("all", "all images, or the run's own val/test split of the data "
                         "(carved again exactly as the run carved it)", choices=EVAL_SPLITS)
    batch_size: int = setting(DEFAULT_BATCH_SIZE, "images per prediction batch")

    def __post_init__(self):
        check_choice("split", self.split, EVAL_SPLITS)
        if self.batch_size < 1:
            raise ConfigError(f"The `batch_size` setting should be >= 1. Received: "
                              f"batch_size={self.batch_size}")


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """What `predict` returns per image (default: the 3 most likely classes)."""

    top_k: int = setting(3, "classes to show per image")
    batch_size: int = setting(DEFAULT_BATCH_SIZE, "images per prediction batch")

    def __post_init__(self):
        if self.top_k < 1 or self.batch_size < 1:
            raise ConfigError(f"The `top_k` and `batch_size` settings should be at least "
                              f"1. Received: top_k={self.top_k}, "
                              f"batch_size={self.batch_size}")
