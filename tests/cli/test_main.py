"""The command line starts fast: `--help`, every command's `--help` and `recipes` load no
TensorFlow (each command imports what it runs inside `run`)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import contextlib, io, json, sys
from transferkit.cli.main import COMMANDS, main
names = [m.__name__.rsplit(".", 1)[1].replace("_", "-") for m in COMMANDS]
runs = [["--help"]] + [[n, "--help"] for n in names] + [["recipes"],
                                                        ["recipes", "efficientnet_lite0"]]
seen = []
for argv in runs:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    heavy = sorted(m for m in ("tensorflow", "keras", "keras_tuner") if m in sys.modules)
    seen.append([argv, code, len(out.getvalue()), heavy])
print(json.dumps(seen))
"""


def test_help_of_every_command_and_the_recipe_list_load_no_tensorflow():
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seen) >= 15  # --help, 12 commands, the list and one recipe
    for argv, code, printed, heavy in seen:
        assert code == 0 and printed > 200, (argv, code, printed)
        assert heavy == [], (argv, heavy)  # checked after each, so the first names it


def test_the_console_command_answers_help_without_tensorflow():
    env = {**os.environ, "PYTHONPATH": REPO}
    code = ("import runpy, sys; sys.argv = ['transferkit', 'train', '--help']\n"
            "try:\n    runpy.run_module('transferkit', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('TF', 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--head-epochs" in done.stdout and done.stdout.rstrip().endswith("TF False")
    assert done.stderr == ""


def test_the_console_command_ends_with_its_code_and_all_its_output_once_tensorflow_loaded(
        tmp_path):
    # Once TensorFlow is loaded, `console` ends the process without the interpreter's
    # shutdown: the exit code and every line written to a pipe must still arrive.
    env = {**os.environ, "PYTHONPATH": REPO}
    sample = os.path.join(REPO, "data", "sample")
    done = subprocess.run([sys.executable, "-m", "transferkit", "scan", sample], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("Scanned 200 files") and len(lines) >= 2, done.stdout
    missing = str(tmp_path / "nowhere")
    done = subprocess.run([sys.executable, "-m", "transferkit", "scan", missing], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and missing in done.stderr, (done.returncode, done.stderr)
