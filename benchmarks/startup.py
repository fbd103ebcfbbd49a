"""Start-up time of the command line: `transferkit --help`, `transferkit train --help` and
`transferkit recipes` side by side with `python -c pass` (the interpreter alone) and
`python -c "import tensorflow"` (what every command paid before the commands loaded
TensorFlow lazily), in one run, interleaved, the median of several repetitions.

    python benchmarks/startup.py            # 15 repetitions (import tensorflow: 5)
    python benchmarks/startup.py --smoke    # 2 repetitions (1), for the tests

`transferkit` runs as `python -m transferkit` with this checkout first on the path: the
console script calls the same `transferkit.cli.main:main`. The goal: `--help` under 1 s.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "python -c pass"
COMMANDS = {
    BASELINE: ["-c", "pass"],
    "transferkit --help": ["-m", "transferkit", "--help"],
    "transferkit train --help": ["-m", "transferkit", "train", "--help"],
    "transferkit recipes": ["-m", "transferkit", "recipes"],
}
TENSORFLOW = ("import tensorflow", ["-c", "import tensorflow"])
GOAL = 1.0  # seconds, for `transferkit --help`


def seconds(args, env):
    """Wall time of one `python ARGS` run (its output discarded; it must succeed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 repetitions (for tests)")
    parser.add_argument("--repeats", type=int, help="repetitions (default 15; smoke 2)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.smoke else 15)
    tf_repeats = 1 if args.smoke else max(1, repeats // 3)
    env = {**os.environ, "PYTHONPATH": REPO}
    times = {name: [] for name in [*COMMANDS, TENSORFLOW[0]]}
    for i in range(repeats):  # interleaved: a slow moment of the machine hits every row
        for name, command in COMMANDS.items():
            times[name].append(seconds(command, env))
        if i < tf_repeats:
            times[TENSORFLOW[0]].append(seconds(TENSORFLOW[1], env))
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median[BASELINE]
    print(f"start-up, median of {repeats} interleaved runs ({tf_repeats} for import "
          f"tensorflow); Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"  {BASELINE:<26}{base:8.3f} s")
    for name in list(COMMANDS)[1:]:
        print(f"  {name:<26}{median[name]:8.3f} s = {median[name] / base:.1f}x "
              f"{BASELINE} (+{median[name] - base:.3f} s)")
    tf_name = TENSORFLOW[0]
    print(f"  {tf_name:<26}{median[tf_name]:8.3f} s = {median[tf_name] / base:.1f}x "
          f"{BASELINE} (what every command paid before)")
    helped = median["transferkit --help"]
    print(f"transferkit --help under {GOAL:g} s: {'yes' if helped < GOAL else 'no'} "
          f"({helped:.3f} s; {median[tf_name] / helped:.1f}x faster than importing "
          "TensorFlow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
