"""`DataConfig`: where a run's images come from and how they are split and augmented."""

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError
from transferkit.data.augment import AUGMENT_PRESETS, augment_config
from transferkit.data.splits import check_split_fractions


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """A run's data (defaults: 20% validation carved from `train`, light augmentation,
    the health scan on)."""

    train: str = setting("", "training data: a folder of class subfolders, a CSV of "
                         "path,label rows, or tfds:NAME[:SPLIT]", key="data")
    val: str = setting("", "validation data of the same kinds (empty: carved from the "
                       "training data with val_split)", key="val_data")
    val_split: float = setting(0.2, "fraction in [0, 1) of the training data held out "
                               "for validation when val_data is not given")
    test_split: float = setting(0.0, "fraction in [0, 1) held out as a test split")
    augment: str = setting("light", "augmentation preset for the training split: "
                           f"{', '.join(AUGMENT_PRESETS)}")
    class_weights: bool = setting(False, "weigh classes inversely to their frequency "
                                  "(multiclass and binary)")
    scan: bool = setting(True, "health-scan file sources first and skip corrupt, "
                         "truncated or duplicate files")
    follow_links: bool = setting(False, "use links in the data folder whose target "
                                 "lies outside it (default: reported and skipped)")
    unknown: str = setting("", "a folder of real 'none of these' images: the novelty "
                           "score is chosen and checked against them (empty: synthetic "
                           "outliers made from the validation images)", key="unknown_data")
    fixes: str = setting("", "a fixes CSV (path,action,label; written by `transferkit "
                         "doctor` and its review page): relabels and exclusions applied "
                         "to the file listing at load time; the files stay as they are")

    def __post_init__(self):
        augment_config(self.augment)  # a known preset
        check_split_fractions(self.val_split, self.test_split, error=ConfigError)

    def source(self):
        """What `load_data` takes: the training source, or {"train", "val"} sources."""
        return {"train": self.train, "val": self.val} if self.val else self.train
