"""The data configs: `DataConfig` (where a run's images come from, how they are split
and augmented) and `AugmentConfig` with its named presets; light, so listing the
settings (`--help`, recipe files) loads no TensorFlow. The ops that use them live in
`data.augment`, `data.splits` and `data.load`."""

from __future__ import annotations

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError, DataError, check_choice, suggest

SPLIT_NAMES = ("train", "val", "test")
# What a command scores of a data source: all of it, or a run's own val or test split
# of it (carved again exactly as the run carved it).
EVAL_SPLITS = ("all", "val", "test")
# Images per batch wherever none is given: the pipeline's, evaluation's and the
# schedule's default (`ScheduleConfig.batch_size`), so they agree.
DEFAULT_BATCH_SIZE = 32


def check_split_fractions(val_split, test_split, error=DataError):
    """Raise `error` (default DataError) unless both fractions are in [0, 1) and
    leave some training data (their sum < 1)."""
    for name, value in (("val_split", val_split), ("test_split", test_split)):
        if not 0 <= value < 1:
            raise error(f"{name} must be in [0, 1). Received: {name}={value}")
    if val_split + test_split >= 1:
        raise error(f"val_split + test_split must be < 1. Received: "
                    f"{val_split} + {test_split}")


FLIP_MODES = (None, "horizontal", "vertical", "horizontal_and_vertical")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation hyperparameters (all searchable by the tuner; 0 disables an op).

    crop_scale: area range of the random resized crop, (0.6, 1.0); None disables.
    crop_ratio: aspect-ratio range of that crop, (3/4, 4/3).
    flip: one of FLIP_MODES, "horizontal".
    rotation: max angle as a fraction of a full turn (Keras' convention), 0.0.
    zoom: max zoom in or out as a fraction, 0.0. translation: max shift as a
        fraction of height/width, 0.0.
    brightness: max delta as a fraction of the 0-255 range, 0.0. contrast,
        saturation: max factor change (factor in [1-x, 1+x]), 0.0. hue: max hue
        shift in [0, 0.5], 0.0.
    mixup_alpha, cutmix_alpha: Beta(alpha, alpha) mixing of whole batches, 0.0; if
        both are set, each batch uses one of them at random.
    box_min_visibility: boxes of several objects (`data.box_augment`) only: the
        fraction of a box's area a crop, zoom or shift must leave in view for the box
        to stay (clipped to the image); below it the object is dropped, 0.3. A sliver
        of an object would ask for a box around a few ambiguous pixels; dropping a
        larger part would teach background where most of an object shows.
    """

    crop_scale: tuple[float, float] | None = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: str | None = "horizontal"
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    box_min_visibility: float = 0.3

    def __post_init__(self):
        if self.flip not in FLIP_MODES:
            hint = suggest(self.flip, FLIP_MODES[1:])
            raise DataError(f"AugmentConfig: flip should be one of {FLIP_MODES}. "
                            f"Received: flip={self.flip!r}.{hint}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and value < 0:
                raise DataError(f"AugmentConfig: {f.name} must be >= 0. "
                                f"Received: {f.name}={value}")
        if self.zoom >= 1:
            raise DataError(f"AugmentConfig: zoom must be < 1 (a zoom factor in "
                            f"[1 - zoom, 1 + zoom]). Received: zoom={self.zoom}")
        if self.box_min_visibility > 1:
            raise DataError("AugmentConfig: box_min_visibility must be in [0, 1]. "
                            f"Received: box_min_visibility={self.box_min_visibility}")
        if self.hue > 0.5:
            raise DataError(f"AugmentConfig: hue must be in [0, 0.5]. Received: hue={self.hue}")
        scale = self.crop_scale
        if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
            raise DataError("AugmentConfig: crop_scale must be (low, high) with "
                            f"0 < low <= high <= 1. Received: crop_scale={scale}")

    @property
    def mixes(self) -> bool:
        """True if batches are mixed (mixup or cutmix) after batching."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


# Named presets for recipes, the CLI (`--augment`) and the tuner's search space.
AUGMENT_PRESETS = {
    "none": None,
    "light": AugmentConfig(crop_scale=(0.8, 1.0), flip="horizontal"),
    "medium": AugmentConfig(crop_scale=(0.6, 1.0), flip="horizontal", rotation=0.05,
                            brightness=0.1, contrast=0.1),
    "strong": AugmentConfig(crop_scale=(0.4, 1.0), flip="horizontal", rotation=0.1,
                            zoom=0.1, translation=0.1, brightness=0.2, contrast=0.2,
                            saturation=0.2, hue=0.02, mixup_alpha=0.2),
}


def augment_config(name):
    """The AugmentConfig (or None) of a preset: "none", "light", "medium" or "strong"."""
    return AUGMENT_PRESETS[check_choice("augment", name, AUGMENT_PRESETS)]



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
