"""`core.files`: atomic writes, and the temp files a killed writer leaves behind."""

import json
import os
import subprocess
import sys

from transferkit.core.files import atomic_path, remove_stale_temp_files


def test_temp_files_a_killed_writer_left_are_removed_but_not_a_live_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".features.p{dead}.ab12.tmp.npz"  # a SIGKILL mid-write leaves it
    stale.write_bytes(b"torn")
    with atomic_path(tmp_path / "live.json") as live:
        with open(live, "w") as f:
            f.write("{}")
        assert remove_stale_temp_files(tmp_path) == 1  # this process is alive: kept
        assert not stale.exists() and os.path.exists(live)
    assert json.loads((tmp_path / "live.json").read_text()) == {}
