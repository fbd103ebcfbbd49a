"""`cli.quiet`: TensorFlow's native start-up lines are dropped, everything else written to
file descriptor 2 meanwhile comes back."""

import os
import subprocess
import sys

from transferkit.cli.quiet import ABSL_PREAMBLE, NATIVE_LOG_LINE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Lines TF 2.21 writes on a machine without a GPU (copied from a run), and lines that
# are not native log lines.
NATIVE = [
    "I0000 00:00:1796653821.403277   27407 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796653821.403827   27407 cudart_stub.cc:31] Could not find cuda drivers",
    "E0000 00:00:1796653829.151251   27718 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error",
]
OTHER = ["Scanned 200 files in 0.2 s: 200 usable, 0 skipped.",
         "WARNING: a line of someone else's", "I0000 is not a log line without the rest"]


def test_the_pattern_tells_native_log_lines_from_the_rest():
    assert all(NATIVE_LOG_LINE.match(line) for line in NATIVE)
    assert not any(NATIVE_LOG_LINE.match(line) for line in OTHER)


def test_native_lines_written_during_the_import_are_dropped_and_the_rest_kept():
    # A stand-in for the import: writes to fd 2 directly, as the C++ libraries do.
    code = f"""
import os, sys
from transferkit.cli import quiet
lines = {NATIVE + OTHER!r}
with quiet._native_lines_dropped():
    os.write(2, ("{ABSL_PREAMBLE} are written to STDERR\\n").encode())
    for line in lines:
        os.write(2, (line + "\\n").encode())
    print("python stderr", file=sys.stderr)
print("stdout")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stdout\n"
    assert done.stderr.splitlines() == OTHER + ["python stderr"]


def test_a_level_the_person_set_is_left_alone():
    code = ("import sys, os, transferkit\nfrom transferkit.cli.quiet import "
            "quiet_tensorflow\nquiet_tensorflow()\n"
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'tensorflow' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.stdout.split() == ["1", "False"], done.stderr
