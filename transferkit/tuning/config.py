"""`TuneConfig`: how a search runs (its algorithm, budget and objective), and the names
of a tuning directory's files; light, so `transferkit tune --help` loads neither
TensorFlow nor keras-tuner."""

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError, check_choice

TUNERS = ("random", "bayesian", "hyperband")  # `tuner.TUNERS` makes them
# A tuning directory's files (besides keras-tuner's project folder and the range tests'
# lr_find_<phase> files): the base recipe, search space and settings a resume reads,
# the trials' feature cache, and the report.
BASE_RECIPE_FILE, SPACE_FILE, SEARCH_FILE = "base_recipe.json", "space.json", "search.json"
FEATURES_DIR = "features"
RESULTS_CSV, RESULTS_HTML, OBJECTIVE_PLOT = "results.csv", "results.html", "objective.png"
BEST_RECIPE_FILE = "best_recipe.json"


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A search's algorithm, trial budget and objective (defaults: random search, 10
    trials, val_accuracy or the task's own)."""

    tuner: str = setting("random", "keras-tuner search algorithm", choices=TUNERS)
    max_trials: int = setting(10, "trials to run (Hyperband decides its own number)")
    objective: str = setting("", "metric to optimise: NAME, NAME:min or NAME:max (empty: "
                             "val_accuracy, or val_loss for regression)")

    def __post_init__(self):
        check_choice("tuner", self.tuner, TUNERS)
        if self.max_trials < 1:
            raise ConfigError(f"The `max_trials` setting should be at least 1. Received: "
                              f"max_trials={self.max_trials}")
