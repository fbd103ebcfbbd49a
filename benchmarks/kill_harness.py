"""Kill harness: SIGKILL `transferkit train` at random points, `--resume`, check the run.

    python benchmarks/kill_harness.py --rounds 3          # 3 runs x 4 kills each
    python benchmarks/kill_harness.py --points phase1,save --rounds 1
    python benchmarks/kill_harness.py --smoke             # 1 run x 4 kills + 5 scenario kills
    python benchmarks/kill_harness.py --rounds 0 --scenarios export,tune --kills 3

Each round trains the tiny_test backbone on a generated image folder in a subprocess
and kills it, in turn, at each kill point: "phase1" (mid-epoch in phase 1, after a
first checkpoint), "save" (inside a checkpoint write, held open while an older
checkpoint exists), "boundary" (the first step of phase 2) and "phase2" (mid-epoch in
the last epoch). The training process is `transferkit train` run by this script's
`--child` mode, which adds two probes from outside (no hook in transferkit itself): a
progress line after every batch, and a pause inside a checkpoint's weights write.
After each kill it
resumes with `--resume`; the last resume runs to the end. A round survives when:
- history.json has exactly head_epochs + finetune_epochs records, numbered 1..N, with
  the right phase each;
- each kill lost at most one checkpoint interval (--save-every steps);
- every checkpoint's trainable state and optimizer position match its phase;
- every file in the run directory is readable (JSON parses, .weights.h5 and .keras
  load).
It prints "N/N runs survived".

Then `scenarios` kills (--kills times each, after a random delay, without test hooks:
it polls for the temp files core/files.py writes, or a phase's own files) during the
feature- and boundary-cache write, the final model save, the report, a SavedModel
export into a folder that already holds one, and `transferkit tune`. After each kill
every file left in the run, cache, export and tuning folders must load (JSON, HTML,
PNG, .keras, .weights.h5, .npz/.npy, SavedModel), and the next run (`--resume`, the
export again, `tune --resume`) must complete and leave no temp file behind. It prints
a line per scenario and "N kills, all files loadable: yes/no, next run completed:
yes/no", and exits 1 unless everything held. The test suite runs the script with
--smoke (tests/test_benchmarks.py, marked slow): every kill point once.
"""

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from end_to_end import parse_smoke_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POINTS = ("phase1", "save", "boundary", "phase2")
# What `--child` reads: the file that receives "global_step phase epoch step" after
# every batch, and "SECONDS@STEP", a pause inside each checkpoint weights write from
# global step STEP on (so a kill can land mid-save).
PROGRESS_ENV, HOLD_SAVE_ENV = "KILL_HARNESS_PROGRESS", "KILL_HARNESS_HOLD_SAVE"
# --smoke: one run through every kill point, on the 2 + 2 epochs `harness` defaults to.
SMOKE = dict(rounds=1, head_epochs=2, finetune_epochs=2, kills=1)


def make_images(root, per_class=16, size=32, seed=0):
    """A two-class colour-coded image folder (red vs blue) of PNGs."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("red", "blue")):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)).astype("uint8")
            pixels[..., 2 * c] += 180
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    return root


def harness(root, points=POINTS, *, head_epochs=2, finetune_epochs=2, every=3, seed=0,
            timeout=240, log=print):
    """Kill one training run at each of `points` in turn, resume, check; returns problems.

    An empty list means the run survived.
    """
    rng = random.Random(seed)
    data = make_images(os.path.join(root, "images"), seed=seed)
    run = os.path.join(root, "run")
    progress = os.path.join(root, "progress.txt")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "train", "--data", data,
           "--backbone", "tiny_test", "--weights", "none", "--image-size", "32",
           "--batch-size", "4", "--augment", "none", "--no-cache-features",
           "--head-epochs", str(head_epochs), "--finetune-epochs", str(finetune_epochs),
           "--early-stopping-patience", "0", "--unfreeze", "none", "--decay", "cosine",
           "--save-every", str(every), "--out", run]
    problems, states, total = [], {}, head_epochs + finetune_epochs
    for i, point in enumerate([*points, None]):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO,
               PROGRESS_ENV: progress}
        if point == "save":
            # hold a save open after the first checkpoint, so the kill tears a write
            # while an older checkpoint exists
            kept = _committed(run)
            after = kept[-1]["global_step"] + 1 if kept else every + 1
            env[HOLD_SAVE_ENV] = f"30@{after}"
        args = cmd + (["--resume"] if i else [])
        with open(os.path.join(root, f"log-{i}.txt"), "w") as out:
            proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
            try:
                if point is None:
                    if proc.wait(timeout) != 0:
                        problems.append(f"final resume exited {proc.returncode} "
                                        f"(see log-{i}.txt)")
                    break
                # phase1: a global step after the first checkpoint; phase2: a step
                # into the last epoch; save: the first global step whose save is held
                target = rng.randint(1, 3) + (every if point == "phase1" else 0)
                if point == "save":
                    target = after
                if not _wait_for(point, proc, progress, run, total, target, timeout):
                    problems.append(f"{point}: the kill point was never reached "
                                    f"(exit {proc.poll()}; see log-{i}.txt)")
                    continue
                proc.send_signal(signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        done = _progress(progress)[-1][0]
        kept = _committed(run)
        states.update({s["global_step"]: s for s in kept})
        resumed_from = kept[-1]["global_step"] if kept else 0
        log(f"  killed at {point:<8} after step {done}: resumes from step {resumed_from} "
            f"(lost {done - resumed_from})")
        if done - resumed_from > every:
            problems.append(f"{point}: lost {done - resumed_from} steps > every={every}")
    states.update({s["global_step"]: s for s in _committed(run)})
    return problems + _check_run(run, total, head_epochs, states, progress)


def _wait_for(point, proc, progress, run, total, target, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        rows = _progress(progress)
        last = rows[-1] if rows else None
        if point == "save" and any(  # a held-open write: .ckpt-<step>.<random>.tmp.weights.h5
                int(os.path.basename(p).split(".")[1][5:]) >= target for p in
                glob.glob(os.path.join(run, "checkpoints", ".ckpt-*.tmp.weights.h5"))):
            return True
        if last and point == "phase1" and last[1] == "head" and last[0] >= target:
            return True
        if last and point == "boundary" and last[1] == "finetune":
            return True
        if last and point == "phase2" and last[1] == "finetune" and last[2] == total - 1 \
                and last[3] >= target:
            return True
        time.sleep(0.02)
    return False


def _progress(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4:
                    rows.append((int(parts[0]), parts[1], int(parts[2]), int(parts[3])))
    return rows or [(0, "", 0, 0)]


def _committed(run):
    out = []
    for path in sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def _check_run(run, total, head_epochs, states, progress):
    problems = []
    with open(os.path.join(run, "history.json")) as f:
        history = json.load(f)
    epochs = [r["epoch"] for r in history]
    phases = [r["phase"] for r in history]
    want = ["head"] * head_epochs + ["finetune"] * (total - head_epochs)
    if epochs != list(range(1, total + 1)) or phases != want:
        problems.append(f"history.json has epochs {epochs} / phases {phases}")
    steps_per_epoch = max(r[3] for r in _progress(progress))
    head_steps = head_epochs * steps_per_epoch
    for phase in ("head", "finetune"):
        group = [s for s in states.values() if s["phase"] == phase]
        if len({(s["trainable_params"], s["freeze_policy"]) for s in group}) > 1:
            problems.append(f"{phase}: trainable state differs between checkpoints")
        for s in group:
            expected = s["global_step"] - (head_steps if phase == "finetune" else 0)
            if s["optimizer_iterations"] != expected:
                problems.append(f"ckpt {s['global_step']}: optimizer at "
                                f"{s['optimizer_iterations']}, expected {expected}")
    head = {s["trainable_params"] for s in states.values() if s["phase"] == "head"}
    tune = {s["trainable_params"] for s in states.values() if s["phase"] == "finetune"}
    if head and tune and not max(head) < min(tune):
        problems.append(f"phase 2 does not train more than phase 1: {head} vs {tune}")
    return problems + _unreadable(run, tune)


def _unreadable(run, tune):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, REPO)
    import h5py

    from transferkit.models.saving import load_model

    problems = []
    for path in glob.glob(os.path.join(run, "**", "*"), recursive=True) + \
            glob.glob(os.path.join(run, "**", ".*"), recursive=True):
        try:
            if path.endswith(".json"):
                with open(path) as f:
                    json.load(f)
            elif path.endswith(".weights.h5"):
                with h5py.File(path, "r") as f:
                    f.visititems(lambda name, obj: obj[()] if isinstance(
                        obj, h5py.Dataset) else None)
            elif path.endswith(".keras"):
                model = load_model(path)
                count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
                if tune and count not in tune:
                    problems.append(f"{path}: {count} trainable params, phase 2 had {tune}")
            elif os.path.basename(path).startswith(".") and ".tmp" in path:
                problems.append(f"leftover temp file {path}")
        except Exception as error:  # any failure to read is what we look for
            problems.append(f"unreadable {path}: {type(error).__name__}: {error}")
    return problems


# --- kills during the other writes: feature cache, final save, report, export, tune ---
#
# No test hook: each scenario polls for the temp files `core/files.py` writes beside
# their target (".<name>.<random>.tmp<ext>") or for the phase's own files, then waits
# a random delay and sends SIGKILL, so the kill lands inside the write or just after.
SCENARIOS = ("cache", "final_save", "report", "export", "tune")


def _tk(args, cache):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO,
           "TRANSFERKIT_CACHE": cache}
    return [sys.executable, "-m", "transferkit", *args], env


def _temp_files(folder):
    return [p for p in glob.glob(os.path.join(folder, "**", ".*"), recursive=True)
            if ".tmp" in os.path.basename(p) or os.path.basename(p).startswith(".saved_model.")]


def _kill_when(cmd, env, log_path, seen, delay, timeout=240):
    """Run `cmd`; once `seen()` is true wait `delay` s and SIGKILL its process group.
    Returns "killed" (inside the moment), "late" (the moment never showed: killed at
    the timeout), "finished" or "failed" (ended by itself, exit 0 or not)."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # tune's trial processes too
        deadline, hit = time.time() + timeout, False
        try:
            while proc.poll() is None and time.time() < deadline:
                if seen():
                    hit = True
                    time.sleep(delay)
                    break
                time.sleep(0.005)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed" if hit else "late"
            return "finished" if proc.returncode == 0 else "failed"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _complete(cmd, env, log_path, timeout=300):
    with open(log_path, "w") as out:
        return subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout).returncode == 0


def unloadable(folder, temp_ok=True):
    """Files under `folder` that do not load (models, checkpoints, JSON, caches, HTML,
    images, SavedModels, CSV), plus leftover temp files unless `temp_ok`."""
    import h5py
    import tensorflow as tf

    from transferkit.models.saving import load_model

    problems = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True) +
                       glob.glob(os.path.join(folder, "**", ".*"), recursive=True)):
        name = os.path.basename(path)
        if ".tmp" in name or name.startswith(".saved_model."):
            if not temp_ok:
                problems.append(f"leftover temp file {path}")
            continue  # never read by anything: the next run removes it
        if "/.saved_model." in path:
            continue
        try:
            if os.path.isdir(path):
                if os.path.exists(os.path.join(path, "saved_model.pb")):
                    tf.saved_model.load(path)
            elif name.endswith(".json"):
                with open(path) as f:
                    json.load(f)
            elif name.endswith(".weights.h5") or name.endswith(".h5"):
                with h5py.File(path, "r") as f:
                    f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset)
                                 else None)
            elif name.endswith(".keras"):
                load_model(path)
            elif name.endswith(".npz"):
                with np.load(path, allow_pickle=False) as archive:
                    [archive[k] for k in archive.files]
            elif name.endswith(".npy"):
                np.load(path, mmap_mode="r")
            elif name.endswith(".html"):
                with open(path, encoding="utf-8") as f:
                    if not f.read().rstrip().endswith("</html>"):
                        raise ValueError("cut short")
            elif name.endswith(".png"):
                with Image.open(path) as image:
                    image.load()
            elif name.endswith(".tflite"):
                tf.lite.Interpreter(model_path=path).allocate_tensors()
            elif name.endswith(".csv"):
                with open(path, encoding="utf-8") as f:
                    f.read()
        except Exception as error:  # any failure to load is what we look for
            problems.append(f"unloadable {path}: {type(error).__name__}: {error}")
    return problems


def scenarios(root, names=SCENARIOS, kills=1, seed=0, log=print):
    """Kill `kills` times at each scenario's moment; after each kill check that every
    file left loads and that the next run (`--resume`, `tune --resume`, the export
    again) completes. Returns {scenario: (kills, kills inside the moment, problems)}."""
    rng = random.Random(seed)
    data = make_images(os.path.join(root, "images"), per_class=12, seed=seed)
    cache = os.path.join(root, "tkcache")
    run, exports, tuning = (os.path.join(root, n) for n in ("run", "exports", "tuning"))
    train = ["train", "--data", data, "--backbone", "tiny_test", "--weights", "none",
             "--image-size", "32", "--batch-size", "8", "--augment", "light",
             # last_blocks:1: phase 2 on the boundary cache too (a longer write to hit)
             "--head-epochs", "1", "--finetune-epochs", "1", "--unfreeze", "last_blocks:1",
             "--early-stopping-patience", "0", "--out", run]
    export = ["export", run, "--format", "savedmodel", "--out", exports]
    tune = ["tune", "--data", data, "--backbone", "tiny_test", "--weights", "none",
            "--image-size", "32", "--batch-size", "8", "--augment", "none",
            "--head-epochs", "1", "--finetune-epochs", "1", "--max-trials", "2",
            "--no-report", "--in-process", "--out", tuning]
    moments = {  # (command, what to watch, where the files are, what shows the moment)
        "cache": (train, [run, cache], lambda: _temp_files(os.path.join(cache, "features"))),
        "final_save": (train, [run], lambda: glob.glob(os.path.join(run, ".model.*"))),
        "report": (train, [run], lambda: glob.glob(os.path.join(run, ".report.*"))
                   or os.path.isdir(os.path.join(run, "report"))),
        "export": (export, [exports], lambda: _temp_files(exports)),
        "tune": (tune, [tuning], lambda: glob.glob(os.path.join(tuning, "**", "trial.json"),
                                                   recursive=True)),
    }
    results, step = {}, 0
    # The training scenarios share one run: each kill's next run is the next kill's run
    # (it must get past the last moment to reach its own), and one resume completes it.
    trains = [n for n in names if n in ("cache", "final_save", "report")]
    for name in names:
        cmd, folders, seen = moments[name]
        args = list(cmd)
        if name == "export" and not os.path.exists(os.path.join(run, "model.keras")):
            _complete(*_tk(train, cache), os.path.join(root, "log-train-first.txt"))
        if name == "export" and not os.path.exists(os.path.join(exports, "model")):
            # An export folder that already holds an artifact: the one a kill may tear.
            _complete(*_tk(export, cache), os.path.join(root, "log-export-first.txt"))
        inside, problems = 0, []
        for k in range(kills):
            step += 1
            again = args + (["--resume"] if name in ("cache", "final_save", "report", "tune")
                            and os.path.isdir(os.path.join(run if name != "tune" else tuning))
                            else [])
            if name == "cache":
                shutil.rmtree(cache, ignore_errors=True)  # so there is a cache to write
            delay = rng.uniform(0, 0.05 if name != "tune" else 1.5)
            how = _kill_when(*_tk(again, cache), os.path.join(root, f"log-{step}.txt"),
                             seen, delay)
            inside += how == "killed"
            if how == "failed":
                problems.append(f"the next run after the previous kill failed "
                                f"(see log-{step}.txt)")
            problems += [f"after the kill: {p}" for f in folders for p in unloadable(f)]
            if name in trains and (name != trains[-1] or k < kills - 1):
                continue  # the next kill's run is this kill's next run
            resumed = args + (["--resume"] if name != "export" else [])
            if not _complete(*_tk(resumed, cache), os.path.join(root, f"log-{step}-next.txt")):
                problems.append(f"the next run after kill {k + 1} failed "
                                f"(see log-{step}-next.txt)")
            problems += [f"after the next run: {p}" for f in folders
                         for p in unloadable(f, temp_ok=f == cache)]
        results[name] = (kills, inside, problems)
        log(f"  {name:<10} {kills} kill(s), {inside} inside the moment: "
            f"{'all files loadable, next run completed' if not problems else 'FAILED'}"
            + "".join(f"\n    - {p}" for p in problems))
    return results


def child(argv):
    """`transferkit ARGV` with the harness's probes (see PROGRESS_ENV, HOLD_SAVE_ENV)
    patched in from outside: transferkit itself has no test hooks."""
    import contextlib

    from transferkit.cli.main import main as transferkit
    from transferkit.training import checkpoint

    progress = os.environ.get(PROGRESS_ENV)
    if progress:
        batch_end = checkpoint.Checkpointer.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):
            # Written before the batch end's own work, which first counts this step
            # (hence the + 1s) and then may save: a kill inside that save finds this
            # step recorded as done.
            with open(progress, "a") as f:
                f.write(f"{self.global_step + 1} {self.run.name} {self.epoch} "
                        f"{self.step + 1}\n")
            batch_end(self, batch, logs)

        checkpoint.Checkpointer.on_train_batch_end = on_train_batch_end
    seconds, _, from_step = (os.environ.get(HOLD_SAVE_ENV) or "0").partition("@")
    if float(seconds):
        atomic_path, weights = checkpoint.atomic_path, checkpoint.FILE_NAMES["weights"]

        @contextlib.contextmanager
        def held_open(path, *args, **kwargs):
            # CheckpointManager.save writes ckpt-<global step>.weights.h5 through this:
            # pause once the temp file is written, before it is renamed into place.
            with atomic_path(path, *args, **kwargs) as tmp:
                yield tmp
                name = os.path.basename(path)
                if weights.fullmatch(name) and int(name[5:13]) >= int(from_step or 0):
                    time.sleep(float(seconds))

        checkpoint.atomic_path = held_open
    return transferkit(argv)


def main(argv=None):
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="training runs (3)")
    parser.add_argument("--points", default=",".join(POINTS),
                        help=f"kill points, in order (default {','.join(POINTS)})")
    parser.add_argument("--every", type=int, default=3,
                        help="checkpoint every N steps (--save-every, default 3)")
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="kills during other writes, or 'none' (default "
                        f"{','.join(SCENARIOS)})")
    parser.add_argument("--kills", type=int, default=3,
                        help="kills per scenario, each after a random delay (3)")
    args = parse_smoke_args(parser, argv, SMOKE, "one short run through every kill point")
    points = args.points.split(",")
    survived = 0
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as root:
            start = time.time()
            print(f"run {round_ + 1}: kills at {', '.join(points)}")
            problems = harness(root, points, head_epochs=args.head_epochs,
                               finetune_epochs=args.finetune_epochs, every=args.every,
                               seed=round_)
            print(f"  {'survived' if not problems else 'FAILED'} in "
                  f"{time.time() - start:.0f} s" + "".join(f"\n  - {p}" for p in problems))
            survived += not problems
    print(f"{survived}/{args.rounds} runs survived")
    names = [n for n in args.scenarios.split(",") if n and n != "none"]
    ok = True
    if names:
        with tempfile.TemporaryDirectory() as root:
            start = time.time()
            print(f"kills during other writes: {', '.join(names)}")
            results = scenarios(root, names, kills=args.kills)
            kills = sum(k for k, _, _ in results.values())
            problems = [p for _, _, ps in results.values() for p in ps]
            loadable = not any("unloadable" in p or "leftover" in p for p in problems)
            completed = not any("failed" in p for p in problems)
            print(f"{kills} kills, all files loadable: {'yes' if loadable else 'no'}, "
                  f"next run completed: {'yes' if completed else 'no'} "
                  f"({time.time() - start:.0f} s)")
            ok = loadable and completed
    return 0 if survived == args.rounds and ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # the training process harness() runs and kills
        sys.exit(child(sys.argv[2:]))
    sys.exit(main())
