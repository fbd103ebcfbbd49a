"""`DoctorConfig`: how the data doctor estimates out-of-fold label probabilities; light,
so `transferkit doctor --help` loads no TensorFlow."""

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DoctorConfig:
    """The out-of-fold heads (defaults: 5 folds on clean features only, which flagged
    flips more precisely on data/sample with both backbones measured)."""

    folds: int = setting(5, "K of the out-of-fold heads")
    views: int = setting(0, "augmented views per training image added to the heads' "
                         "training rows")

    def __post_init__(self):
        if self.folds < 2:
            raise ConfigError(f"The `folds` argument should be at least 2. Received: "
                              f"folds={self.folds}")
        if self.views < 0:
            raise ConfigError(f"The `views` argument should be 0 or more. Received: "
                              f"views={self.views}")
