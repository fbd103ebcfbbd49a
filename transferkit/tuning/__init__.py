"""Tuning: keras-tuner sweeps over the whole two-phase recipe.

`space` (what a sweep varies), `hypermodel` (one trial = both phases), `tuner` (`tune`,
the tuners, resume and distributed search), `process`/`trial` (a process per trial),
`report` (results table, plot, best recipe). The names below load keras-tuner on first
use, so `transferkit.tuning.report` and `.space` stay light.
"""

_LAZY = {"TransferHyperModel": "transferkit.tuning.hypermodel",
         "Range": "transferkit.tuning.space", "SearchSpace": "transferkit.tuning.space",
         "TuneResult": "transferkit.tuning.tuner", "load_search": "transferkit.tuning.tuner",
         "tune": "transferkit.tuning.tuner",
         "best_recipe_path": "transferkit.tuning.report"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transferkit.tuning' has no attribute {name!r}")
