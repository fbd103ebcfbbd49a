"""Saving and loading models: atomic writes, safe loads, metadata that travels along.

A `.keras` file is a zip; transferkit adds one more member, `transferkit.json` (class
names, task, backbone, image size), which Keras ignores on load, so the class names
travel inside the model file itself.
"""

import contextlib
import json
import os
import tempfile
import zipfile

import keras

import transferkit.models.layers  # noqa: F401  (registers custom layers before any load)
import transferkit.training.optimizers  # noqa: F401
from transferkit.core.errors import TransferkitError, UnsafeModelError

METADATA_NAME = "transferkit.json"
_UMASK = os.umask(0o022)  # read once at import (os.umask can only read by setting)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; on success fsync it and rename it over `path`.

    A crash or kill mid-write leaves the previous file intact, never a torn one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    if base.endswith(".weights"):  # Keras insists on the ".weights.h5" suffix
        base, ext = base[: -len(".weights")], ".weights" + ext
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, data):
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=str)


def save_model(model, path, metadata=None):
    """Save `model` to a `.keras` file atomically, with `metadata` (a JSON-able dict)."""
    if not os.fspath(path).endswith(".keras"):
        raise TransferkitError(f"Models are saved as .keras files. Received: path={path}")
    with atomic_path(path) as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_NAME, json.dumps(metadata, indent=2, default=str))
    return path


def read_metadata(path):
    """The transferkit metadata stored in a `.keras` file ({} if there is none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_NAME in archive.namelist():
                return json.loads(archive.read(METADATA_NAME))
    except zipfile.BadZipFile as error:
        raise TransferkitError(f"{path} is not a .keras model file: {error}") from None
    return {}


def load_model(path, *, trusted=False, compile=True):
    """Load a `.keras` model with Keras `safe_mode` on unless `trusted=True`.

    A file that needs unsafe deserialization (a Lambda layer's Python code) is refused
    with an explanation: loading it would run code written by whoever made the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TransferkitError(f"No model file at {path}.")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=not trusted)
    except ValueError as error:
        if trusted or "safe_mode" not in str(error):
            raise
        raise UnsafeModelError(
            f"Refusing to load {path}: it contains a layer that runs arbitrary Python "
            "code when loaded (e.g. a Lambda layer), which Keras blocks in safe mode. "
            "Load it only if you trust whoever wrote the file: pass trusted=True "
            "(`--trusted` on the command line).") from error


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
