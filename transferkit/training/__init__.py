"""Training: freezing, optimizers, the two-phase orchestrator, the feature and boundary
caches, the LR finder, checkpoints, tf.distribute strategies and recipes.

`orchestrator.fine_tune` is the one training loop; `app.train` wraps it for a run
directory, and the tuner, the demo and the benchmarks call one of the two.
"""

from transferkit.training.cache import FeatureCache, FeatureStore
from transferkit.training.checkpoint import CheckpointConfig
from transferkit.training.freezing import FreezeAudit, FreezePolicy, RecompileGuard, freeze
from transferkit.training.lr_find import AutoLR, LRFinding, find_lr
from transferkit.training.optimizers import make_optimizer
from transferkit.training.orchestrator import (FineTuneResult, PhaseCallback, Position,
                                               fine_tune)
from transferkit.training.recipe import RecipeConfig, load_recipe, recipe_from_dict
from transferkit.training.schedule import PhaseConfig, ScheduleConfig

__all__ = ["AutoLR", "CheckpointConfig", "FeatureCache", "FeatureStore", "FineTuneResult",
           "FreezeAudit", "FreezePolicy", "LRFinding", "PhaseCallback", "PhaseConfig",
           "Position", "RecipeConfig", "RecompileGuard", "ScheduleConfig", "find_lr",
           "fine_tune", "freeze", "load_recipe", "make_optimizer", "recipe_from_dict"]
