"""Training: freezing, optimizers, the two-phase orchestrator, the feature and boundary
caches, the LR finder, checkpoints, tf.distribute strategies and recipes.

`orchestrator.fine_tune` is the one training loop; `app.train` wraps it for a run
directory, and the tuner, the demo and the benchmarks call one of the two. The configs
(`training.config`, `training.recipe`) are light; the names below load their module
(and TensorFlow) on first use.
"""

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, {
    **dict.fromkeys(("FeatureCache", "FeatureStore"), "transferkit.training.cache"),
    **dict.fromkeys(("CheckpointConfig", "FreezePolicy", "LRFindConfig", "PhaseConfig",
                     "RuntimeConfig", "ScheduleConfig"), "transferkit.training.config"),
    **dict.fromkeys(("FreezeAudit", "RecompileGuard", "freeze"),
                    "transferkit.training.freezing"),
    **dict.fromkeys(("AutoLR", "LRFinding", "find_lr"), "transferkit.training.lr_find"),
    "make_optimizer": "transferkit.training.optimizers",
    **dict.fromkeys(("FineTuneResult", "PhaseCallback", "Position", "fine_tune"),
                    "transferkit.training.orchestrator"),
    **dict.fromkeys(("RecipeConfig", "load_recipe", "recipe_from_dict"),
                    "transferkit.training.recipe")})
