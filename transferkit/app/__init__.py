"""Applications over the training loop: a whole run into a run directory (`train`), and
the range test of a recipe (`find_lr_for_recipe`).

`training.orchestrator.fine_tune` is the one training loop; `train` wraps it for a run
directory (`core.rundir.RunDir`), and the tuner, the demo, the commands and the
benchmarks call one of the two. (Nothing is re-exported here: `train` would hide
the module of the same name; the public `train` is `transferkit.train`.)
"""
