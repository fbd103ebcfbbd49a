"""Does a process's memory grow across tuning trials? RSS per trial, side by side.

    python benchmarks/tuning_memory.py                    # 6 trials, a few minutes
    python benchmarks/tuning_memory.py --trials 10 --backbone tiny_test --size 32
    python benchmarks/tuning_memory.py --smoke            # 2 trials of tiny_test at 16 px

Runs the same random search three times, each in a fresh process so none inherits
another's memory (the three at once: each reads its own process's RSS):

  isolated  as `transferkit tune` runs it: each trial in its own child process
            (transferkit.tuning.process); the RSS is the tuner process's
  cleared   trials in the tuner's process (`--in-process`): keras-tuner clears the Keras
            session and collects garbage before building each trial's model
  kept      in-process with that clear_session() made a no-op (keras-tuner #395 / #873)

and prints the resident set size (Linux /proc/self/status VmRSS) after each trial and
the growth from trial 2 to the last (trial 1 pays for one-off imports and caches).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from end_to_end import parse_smoke_args  # noqa: E402

MODES = ("isolated", "cleared", "kept")
# --smoke: the three searches on the tiny test network, two trials each.
SMOKE = dict(trials=2, backbone="tiny_test", size=16, per_class=4)


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def measure(args):
    """One search in this process; prints the RSS after each trial as JSON."""
    import keras_tuner

    from conftest import make_image_folder
    from transferkit.training.cache import FeatureStore
    from transferkit.training.recipe import RecipeConfig
    from transferkit.tuning.hypermodel import TransferHyperModel
    from transferkit.tuning.process import IsolatedTrials
    from transferkit.tuning.space import SearchSpace

    if args.mode == "kept":
        keras_tuner.src.engine.tuner.keras.backend.clear_session = lambda *a, **k: None
    readings = []
    bases = (IsolatedTrials,) if args.mode == "isolated" else ()

    class Measured(*bases, keras_tuner.RandomSearch):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            readings.append(round(rss_mib(), 1))

    with tempfile.TemporaryDirectory(prefix="tk-tuning-memory-") as work:
        data = make_image_folder(os.path.join(work, "images"), per_class=args.per_class,
                                 size=args.size)
        kwargs = (("alpha", 0.35),) if args.backbone.startswith("mobilenet") else ()
        base = RecipeConfig.from_keys(data=data, backbone=args.backbone, weights="none",
                                       image_size=args.size, backbone_kwargs=kwargs, batch_size=8,
                                       head_epochs=1, finetune_epochs=1, augment="none", scan=False)
        # Wide choices so no trial repeats another's hyperparameters.
        space = SearchSpace(head_width=(0, 16, 32, 64, 128, 256), label_smoothing=None)
        store = FeatureStore(os.path.join(work, "features"))
        tuner = Measured(TransferHyperModel(base, space, store=store),
                         objective="val_accuracy", max_trials=args.trials, directory=work,
                         project_name="search", seed=0)
        tuner.search(verbose=0)
    print(json.dumps(readings))


def run_searches(args):
    """The three searches, all at once (each reads its own process's RSS); returns
    {mode: RSS readings}."""
    searches = {}
    for mode in MODES:
        command = [sys.executable, __file__, "--mode", mode, "--trials", str(args.trials),
                   "--backbone", args.backbone, "--size", str(args.size),
                   "--per-class", str(args.per_class)]
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        search = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        searches[mode] = search, out, err
    codes = {mode: search.wait() for mode, (search, _, _) in searches.items()}
    results = {}
    for mode, (_, out, err) in searches.items():
        with out, err:
            out.seek(0), err.seek(0)
            if codes[mode] != 0:
                sys.exit(f"the {mode} search failed (exit {codes[mode]}):\n"
                         f"{err.read()[-4000:]}")
            results[mode] = json.loads(out.read().strip().splitlines()[-1])
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6, help="trials per search (6)")
    parser.add_argument("--backbone", default="mobilenet_v2",
                        help="of every trial (default mobilenet_v2; MobileNets at alpha "
                        "0.35), random init")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--per-class", type=int, default=12,
                        help="images per class, 2 classes (12)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parse_smoke_args(parser, argv, SMOKE)
    if args.mode:
        return measure(args)
    results = run_searches(args)
    print(f"{args.backbone} at {args.size} px, {args.trials} trials of 1 + 1 epochs; "
          "RSS in MiB after each trial")
    growth = {}
    for mode, readings in results.items():
        growth[mode] = readings[-1] - readings[1] if len(readings) > 1 else 0.0
        per_trial = growth[mode] / max(1, len(readings) - 2)
        print(f"  {mode:<8} {' '.join(f'{r:7.1f}' for r in readings)}   growth trial 2 "
              f"-> {len(readings)}: {growth[mode]:+.1f} MiB ({per_trial:+.1f} per trial)")


if __name__ == "__main__":
    sys.exit(main())
