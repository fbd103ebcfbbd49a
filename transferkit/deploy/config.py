"""The export's choices and `ExportConfig` (what `export --check` scores and how close
an artifact must stay); light, so `transferkit export --help` loads no TensorFlow."""

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError, check_choice
from transferkit.data.config import EVAL_SPLITS

FORMATS = ("keras", "savedmodel", "tflite")
ALL = "all"  # every format: keras, savedmodel, TFLite fp32 and fp16, int8 with data
QUANTIZE = ("fp16", "int8")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The parity check of exported artifacts (defaults: the run's validation split,
    tolerance 0.01)."""

    split: str = setting("val", "images the parity check scores: the run's val (or "
                         "test) split of the data, or all of it", choices=EVAL_SPLITS)
    tolerance: float = setting(0.01, "largest difference of the headline metric, and "
                               "largest fraction of disagreeing predictions, the parity "
                               "check accepts")

    def __post_init__(self):
        check_choice("split", self.split, EVAL_SPLITS)
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"The `tolerance` setting should be in [0, 1). Received: "
                              f"tolerance={self.tolerance}")
