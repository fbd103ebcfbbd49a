"""Quiet TensorFlow's native (C++) log for the command line, unless the person set
`TF_CPP_MIN_LOG_LEVEL` themselves.

Why setting the variable is not enough (TF 2.21, read in the installed libraries): TF
logs through absl. `libtensorflow_framework.so.2`'s static initializer of
`logging_initializer.cc` reads TF_CPP_MIN_LOG_LEVEL (and TF_CPP_MAX_VLOG_LEVEL,
TF_CPP_VMODULE) and calls `absl::SetMinLogLevel`, but other static initializers of
the same library run before it and log at INFO ("port.cc ... oneDNN custom operations
are on", "cudart_stub.cc ... Could not find cuda drivers"); absl, not yet
initialised, writes those to stderr whatever the level ("WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR"). The same happens a
second time in `_pywrap_profiler_plugin.so`, which `import tensorflow` loads and which
links its own copy of absl and of those initializers. No variable reaches those lines.
So the command line (1) sets TF_CPP_MIN_LOG_LEVEL=3 (the "E0000 ... failed call to
cuInit" of a machine without a GPU is an ERROR line; TensorFlow's real errors reach the
person as exceptions, which the command line reports) and (2) imports TensorFlow with
file descriptor 2 pointed at a temporary file, then writes back every line of it that
is not a native log line, so nothing else printed during the import is lost. TF's
Python logger is set to errors only: its warnings (tf.function retracing) speak to the
developers of transferkit, not to its users.
"""

import logging
import os
import re
import sys
import tempfile

import transferkit

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "3"
# absl's line prefix: severity, MMDD, time (before absl is initialised the seconds are
# the Unix time: "00:00:1796653821.403277"), thread id, file:line]
NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"


def quiet_tensorflow():
    """Import TensorFlow with its native start-up log filtered out, and keep its log
    quiet afterwards; a no-op when TensorFlow is already imported or the person set
    TF_CPP_MIN_LOG_LEVEL (their setting, and what TensorFlow makes of it, wins)."""
    if "tensorflow" in sys.modules or transferkit.TF_LOG_LEVEL_GIVEN:
        return
    os.environ[LEVEL] = QUIET_LEVEL
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with _native_lines_dropped():
        import tensorflow  # noqa: F401


class _native_lines_dropped:
    """Point file descriptor 2 at a temporary file; on exit, restore it and write back
    every line that is not a native log line."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.capture = tempfile.TemporaryFile()
        os.dup2(self.capture.fileno(), 2)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.capture.seek(0)
        kept = [line for line in self.capture.read().decode(errors="replace")
                .splitlines(keepends=True)
                if not (NATIVE_LOG_LINE.match(line) or line.startswith(ABSL_PREAMBLE))]
        self.capture.close()
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False
