"""Where a default `transferkit train` spends its time, against the floor of its work.

    python benchmarks/stages.py                     # data/sample, 3 seeds
    python benchmarks/stages.py --image-size 128    # the sample at 128 px
    python benchmarks/stages.py --generated         # end_to_end's texture folders
    python benchmarks/stages.py --smoke             # tiny: the code paths, not figures

Per seed, side by side, each a whole process as a user runs it (start-up included),
both on a cold feature cache:

  train   `transferkit train --data ... --out ... --seed S` with nothing else set
          (--image-size where given): the run records its stage timings in run.json
          (`core.timing`); its wall and CPU time are measured from here.
  floor   the work no default run can skip: a process that imports what `train`
          imports, builds the same model and passes every image once per view the run
          stores through the backbone (the clean and augmented training views, the
          validation images and their mirrors), on the same input pipeline.

Prints each stage's wall seconds, share of the run and CPU seconds (mean ± sd over
seeds), the floor, the ratio of the whole run to its floor (wall and CPU), and the run's
final validation accuracy. CPU seconds are the process's (all threads), less sensitive
to other jobs on a shared machine than wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

SAMPLE = REPO / "data" / "sample"
# --smoke: a handful of small images, for the test suite.
SMOKE = dict(per_class=6, image_size=32, seeds=1)
# --generated: end_to_end.py's texture folders at its --imagenet size.
GENERATED = dict(classes=6, per_class=200, val_per_class=100, size=160)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(SAMPLE),
                        help="a folder of class subfolders (default: data/sample)")
    parser.add_argument("--generated", action="store_true",
                        help="end_to_end.py's generated textures instead of --data: "
                        + ", ".join(f"{k} {v}" for k, v in GENERATED.items())
                        + " (train/ and val/ folders, --image-size default 160)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="--image-size of the run (default: the backbone's own)")
    parser.add_argument("--per-class", type=int, default=None,
                        help="use only this many images of each class of --data")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--smoke", action="store_true",
                        help="6 images a class at 32 px, 1 seed: the code paths only")
    parser.add_argument("--source", default=str(REPO),
                        help="the transferkit source tree whose `train` is timed (default: "
                        "this one; the floor always runs this one), to time another "
                        "version side by side")
    parser.add_argument("--floor", nargs=argparse.REMAINDER,
                        help=argparse.SUPPRESS)  # the floor process itself
    args = parser.parse_args(argv)
    if args.floor is not None:
        return floor_run(args.floor)
    if args.smoke:
        for key, value in SMOKE.items():
            if getattr(args, key) in (None, parser.get_default(key)):
                setattr(args, key, value)
    with tempfile.TemporaryDirectory(prefix="tk_stages_") as root:
        data = prepare_data(args, root)
        runs = [one_seed(args, data, seed, root) for seed in range(args.seeds)]
    report(args, data, runs)
    return 0


def prepare_data(args, root):
    """The train flags of the data: ["--data", D] or with --generated also --val-data."""
    if args.generated:
        from end_to_end import synth_folders

        size = args.image_size or GENERATED["size"]
        args.image_size = size
        train, val = synth_folders(os.path.join(root, "data"), GENERATED["classes"],
                                   args.per_class or GENERATED["per_class"],
                                   GENERATED["val_per_class"], size, seed=0)
        return ["--data", train, "--val-data", val]
    if args.per_class:
        import shutil

        folder = os.path.join(root, "data")
        for name in sorted(os.listdir(args.data)):
            source = os.path.join(args.data, name)
            if os.path.isdir(source):
                os.makedirs(os.path.join(folder, name))
                for file in sorted(os.listdir(source))[:args.per_class]:
                    shutil.copy(os.path.join(source, file), os.path.join(folder, name))
        return ["--data", folder]
    return ["--data", args.data]


def timed(command, env, cwd):
    """(wall seconds, CPU seconds of the child, stdout) of a whole process, run in `cwd`
    (not the repository: `python -m` puts the working directory first on the path)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def one_seed(args, data, seed, root):
    """The default train run and its floor, each a whole process on a cold cache."""
    size = ["--image-size", str(args.image_size)] if args.image_size else []
    rest = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": args.source + os.pathsep + rest}
    out = os.path.join(root, f"run{seed}")
    load = os.getloadavg()[0]
    env["TRANSFERKIT_CACHE"] = os.path.join(root, f"cache{seed}")  # cold
    wall, cpu, stdout = timed([sys.executable, "-m", "transferkit", "train", *data, *size,
                               "--seed", str(seed), "--out", out], env, root)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + rest
    env["TRANSFERKIT_CACHE"] = os.path.join(root, f"floor_cache{seed}")
    floor_wall, floor_cpu, floor_out = timed(
        [sys.executable, os.path.abspath(__file__), "--floor", *data, *size, "--seed",
         str(seed)], env, root)
    info = json.load(open(os.path.join(out, "run.json")))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    # A --source from before stage timings records none: its run is timed whole only.
    stages = info.get("stages", {"total": {"wall": wall, "cpu": cpu}, "stages": {}})
    summary = next((line for line in stdout.splitlines() if line.startswith("time: ")),
                   "(this version records no stage timings)")
    return dict(wall=wall, cpu=cpu, stages=stages, summary=summary,
                floor_wall=floor_wall, floor_cpu=floor_cpu,
                passes=json.loads(floor_out.strip().splitlines()[-1])["passes"],
                accuracy=metrics["val"]["accuracy"], load=(load, os.getloadavg()[0]))


def floor_run(argv):
    """The floor: what `transferkit train` imports, its model built, and one backbone
    pass per image and view it stores (see the module docstring); prints the passes."""
    import transferkit.cli.main  # noqa: F401 - the imports a train run pays for
    from transferkit.cli.train import recipe_from_args
    from transferkit.cli.main import build_parser
    from transferkit.training.recipe import recipe_from_dict

    from end_to_end import floor_passes  # the one floor, end_to_end's too

    args = build_parser().parse_args(["train", *argv, "--out", "unused"])
    recipe = recipe_from_dict({"scan": False}, recipe_from_args(args))  # no health scan
    passes = floor_passes(recipe)
    print(json.dumps({"passes": int(passes)}), flush=True)
    # Ends as the `transferkit` command does (`cli.main.console`): the interpreter's
    # shutdown with TensorFlow loaded (about a second) is no part of the floor.
    sys.stderr.flush()
    os._exit(0)


def mean_sd(values, digits=1):
    values = np.asarray(values, dtype=float)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


def report(args, data, runs):
    names = list(dict.fromkeys(name for run in runs for name in run["stages"]["stages"]))

    def stage(run, name, key):
        return run["stages"]["stages"].get(name, {}).get(key, 0.0)

    where = "generated textures" if args.generated else " ".join(data)
    if os.path.realpath(args.source) != str(REPO):
        where += f" (train from {args.source})"
    loads = ", ".join(f"{a:.1f}/{b:.1f}" for run in runs for a, b in [run["load"]])
    print(f"default `transferkit train` on {where}"
          f"{f' at {args.image_size} px' if args.image_size else ''}, {len(runs)} seed(s), "
          f"cold feature cache; load average before/after each run: {loads} on "
          f"{os.cpu_count()} cores")
    print(f"  {'stage':<14} {'wall s':>13} {'share':>6} {'CPU s':>13}")
    total = np.mean([run["stages"]["total"]["wall"] for run in runs])
    for name in names:
        walls = [stage(run, name, "wall") for run in runs]
        cpus = [stage(run, name, "cpu") for run in runs]
        print(f"  {name:<14} {mean_sd(walls):>13} {np.mean(walls) / total:6.0%} "
              f"{mean_sd(cpus):>13}")
    if names:
        print(f"  {'recorded':<14} "
              f"{mean_sd([r['stages']['total']['wall'] for r in runs]):>13} "
              f"{'':>6} {mean_sd([r['stages']['total']['cpu'] for r in runs]):>13}")
    else:
        print("  (no stage timings: this version does not record them)")
    print(f"  {'whole process':<14} {mean_sd([r['wall'] for r in runs]):>13} {'':>6} "
          f"{mean_sd([r['cpu'] for r in runs]):>13}")
    print(f"floor (imports, the model, one backbone pass per image and view: "
          f"{runs[0]['passes']} passes): wall {mean_sd([r['floor_wall'] for r in runs])} s, "
          f"CPU {mean_sd([r['floor_cpu'] for r in runs])} s")
    wall_ratio = [r["wall"] / r["floor_wall"] for r in runs]
    cpu_ratio = [r["cpu"] / r["floor_cpu"] for r in runs]
    print(f"whole run / floor: wall {mean_sd(wall_ratio, 2)}x, CPU {mean_sd(cpu_ratio, 2)}x "
          "(per seed, side by side)")
    print(f"final val accuracy: {mean_sd([r['accuracy'] for r in runs], 3)}")
    print(f"the run's own summary (seed 0): {runs[0]['summary']}")


if __name__ == "__main__":
    sys.exit(main())
