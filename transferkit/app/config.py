"""The configs of the applications over the training loop: `AddClassConfig` (how the
head of an extended run trains). Light: `transferkit add-class --help` reads it without
loading TensorFlow."""

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AddClassConfig:
    """How `add_classes` fits the head after imprinting the new classes (defaults: up
    to 30 epochs on cached features, early stopping after 3 without improvement)."""

    epochs: int = setting(30, "head fit cap, with early stopping (0: imprint only)")
    patience: int = setting(3, "early-stopping patience of the head fit")

    def __post_init__(self):
        if self.epochs < 0 or self.patience < 0:
            raise ConfigError(f"add-class needs epochs >= 0 and patience >= 0. Received: "
                              f"epochs={self.epochs}, patience={self.patience}")
