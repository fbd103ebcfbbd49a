"""Files written whole or not at all, and files read without blocking or flooding memory.

Every model, checkpoint, report and JSON file transferkit writes goes through
`atomic_path`: a temp file beside the target, fsynced, then renamed over it, so a crash
or a kill mid-write leaves the previous file intact, never a torn one. The temp
file's name holds the writer's pid, so `remove_stale_temp_files` can tell what a
killed writer left from a write in progress.

Every file transferkit reads (JSON records, recipes, listings, images) is opened by
`read_regular_file`: only a regular file, opened non-blocking (a FIFO named where a
file belongs cannot hang a command), at most a byte limit read (a link to /dev/zero is
refused, not read forever). `read_json` adds errors that name the file.
"""

import contextlib
import json
import os
import re
import stat
import tempfile
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


MAX_BYTES = 256 * 2**20  # larger files are refused before being read into memory
MAX_JSON_BYTES = 64 * 2**20  # a JSON record or recipe larger than this is not ours


def read_regular_file(path, limit: int = MAX_BYTES, head: bool = False) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes (with
    `head`: its first `limit` bytes); raises OSError otherwise (`NotRegularFile`,
    `FileTooLarge`, or the system's). Opened non-blocking and checked on the open
    descriptor, so a FIFO, socket or device is refused without blocking or reading it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
                    else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "folder" if stat.S_ISDIR(mode) else "special file")
            raise NotRegularFile(path, f"a {kind}, not a regular file")
        data = handle.read(limit if head else limit + 1)
    if len(data) > limit:
        raise FileTooLarge(path, f"more than {limit} bytes")
    return data


class NotRegularFile(OSError):
    """A FIFO, socket, device or folder where a file was expected."""

    def __init__(self, path, reason):
        super().__init__(reason)
        self.filename, self.strerror = path, reason


class FileTooLarge(OSError):
    """A file over the byte limit (refused before it is read into memory)."""

    def __init__(self, path, reason):
        super().__init__(reason)
        self.filename, self.strerror = path, reason


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

    A file that exists but is not a regular file of at most MAX_JSON_BYTES holding
    valid UTF-8 JSON raises ConfigError naming `what` and the path.
    """
    if not os.path.lexists(path):
        return None
    try:
        return parse_json(read_regular_file(path, MAX_JSON_BYTES), f"{what} {path}")
    except OSError as error:
        raise ConfigError(f"Cannot read the {what} {path}: "
                          f"{error.strerror or error}") from None


def parse_json(data, what):
    """The JSON value of `data` (bytes or str); ConfigError naming `what` (e.g. "run file
    runs/x/run.json") for anything that is not valid JSON: bad UTF-8, integers of
    thousands of digits, nesting deeper than Python's recursion limit."""
    try:
        return json.loads(data)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise ConfigError(f"The {what} is not valid JSON: {error}") from None
    except RecursionError:
        raise ConfigError(f"The {what} is nested too deeply to be ours.") from None


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
