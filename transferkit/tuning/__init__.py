"""Tuning: keras-tuner sweeps over the whole two-phase recipe.

`space` (what a sweep varies), `hypermodel` (one trial = both phases), `tuner` (`tune`,
the tuners, resume and distributed search), `process`/`trial` (a process per trial),
`report` (results table, plot, best recipe). The names below load keras-tuner on first
use, so `transferkit.tuning.report` and `.space` stay light.
"""

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, {
    "TransferHyperModel": "transferkit.tuning.hypermodel",
    "Range": "transferkit.tuning.space", "SearchSpace": "transferkit.tuning.space",
    "TuneResult": "transferkit.tuning.tuner", "load_search": "transferkit.tuning.tuner",
    "tune": "transferkit.tuning.tuner",
    "best_recipe_path": "transferkit.tuning.report"})
