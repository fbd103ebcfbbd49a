"""Files written whole or not at all, and JSON read with errors that name the file.

Every model, checkpoint, report and JSON file transferkit writes goes through
`atomic_path`: a temp file beside the target, fsynced, then renamed over it, so a crash
or a kill mid-write leaves the previous file intact, never a torn one. The temp
file's name holds the writer's pid, so `remove_stale_temp_files` can tell what a
killed writer left from a write in progress.
"""

import contextlib
import json
import os
import tempfile
import re
import time

from transferkit.core.errors import ConfigError

_UMASK = os.umask(0o022)  # read once at import (os.umask can only read by setting)
os.umask(_UMASK)
TEMP_MARK = ".tmp"  # every temp file's name holds this, so a later run can clean them


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; on success fsync it and rename it over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    if base.endswith(".weights"):  # Keras insists on the ".weights.h5" suffix
        base, ext = base[: -len(".weights")], ".weights" + ext
    # The writer's pid in the name: remove_stale_temp_files keeps a live writer's file.
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.p{os.getpid()}.", suffix=f"{TEMP_MARK}{ext}",
                               dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as error:  # e.g. `path` is a folder: name it, not the temp file
            raise OSError(error.errno, error.strerror, path) from None
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cache_root(*parts):
    """transferkit's cache folder, $TRANSFERKIT_CACHE or ~/.cache/transferkit (with
    `parts` joined below it): the feature cache ("features") and the scan's normalised
    copies ("normalized") live there."""
    root = os.environ.get("TRANSFERKIT_CACHE") or os.path.join("~", ".cache", "transferkit")
    return os.path.join(os.path.expanduser(root), *parts)


def remove_stale_temp_files(folder, max_age: float = 3600.0) -> int:
    """Delete the temp files `atomic_path` left in `folder` when its process was killed
    mid-write; returns how many. A file whose writer (by the pid in its name) still
    runs is kept, so folders shared by several processes (a feature cache) are safe;
    a file without a pid is removed once older than `max_age` seconds."""
    if not os.path.isdir(folder):
        return 0
    removed = 0
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not (name.startswith(".") and TEMP_MARK in name) or os.path.islink(path) \
                or not os.path.isfile(path):
            continue
        found = _PID.search(name)
        try:
            if found and _alive(int(found.group(1))):
                continue
            if not found and time.time() - os.path.getmtime(path) < max_age:
                continue
            os.remove(path)
            removed += 1
        except OSError:
            pass
    return removed


_PID = re.compile(r"\.p(\d+)\.")


def _alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def write_json(path, data):
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=str)


def write_text(path, text):
    """Write `text` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def read_json(path, what="JSON file"):
    """The JSON value in file `path`, or None if there is no such file.

    A file that exists but is not valid JSON raises ConfigError naming `what` and path.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"The {what} {path} is not valid JSON: {error}") from None
    except OSError as error:
        raise ConfigError(f"Cannot read the {what} {path}: {error.strerror}") from None


def read_json_object(path, what):
    """The JSON object in file `path`; ConfigError naming `what` and the path otherwise."""
    values = read_json(path, what)
    if values is None:
        raise ConfigError(f"No {what} at {path}.")
    if not isinstance(values, dict):
        raise ConfigError(f"The {what} {path} should hold a JSON object of keys.")
    return values


def _fsync_dir(folder):
    # The rename itself must reach the disk, or a power cut can undo it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
