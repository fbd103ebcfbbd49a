"""Saving and loading models: atomic writes, safe loads, metadata that travels along.

A `.keras` file is a zip; transferkit adds one more member, `transferkit.json` (class
names, task, input spec, backbone), which Keras ignores on load, so everything a
command needs to use the model travels inside the model file itself.

Custom classes (layers, losses, optimizers) register when their modules are imported:
`load_model` imports them first (`KERAS_OBJECT_MODULES`), so every load can
find them.
"""

import importlib
import importlib.util
import json
import os
import zipfile

import keras

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import TransferkitError, UnsafeModelError
from transferkit.core.files import atomic_path

METADATA_NAME = "transferkit.json"  # the metadata's name everywhere (models.bundle)
# The modules defining the Keras classes (layers, losses, optimizers) a saved model may
# name, by module name: imported (by importlib, so this layer imports nothing above it)
# before a file is loaded, so its classes resolve by their registered names.
KERAS_OBJECT_MODULES = ("transferkit.models.layers", "transferkit.models.losses",
                        "transferkit.models.temperature", "transferkit.models.tta",
                        "transferkit.training.optimizers")
MAX_MEMBER_BYTES = 2**30  # a member of a .keras file this large is not transferkit's


def archive_members():
    """(the config member, (the weights members, one of which is present)) of a Keras
    3 .keras archive, as Keras's own saving code names them (weights are HDF5, or
    NumPy's npz when saved with weights_format="npz")."""
    from keras.src.saving import saving_lib  # Keras's names, not copies of them

    return saving_lib._CONFIG_FILENAME, (saving_lib._VARS_FNAME_H5,
                                         saving_lib._VARS_FNAME_NPZ)


def save_model(model, path, metadata=None, extras=None):
    """Save `model` to a `.keras` file atomically, with `metadata` (a JSON-able dict)
    and `extras` ({member name: bytes}, e.g. the novelty arrays) inside the zip."""
    if not os.fspath(path).endswith(".keras"):
        raise TransferkitError(f"Models are saved as .keras files. Received: path={path}")
    with atomic_path(path) as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_NAME, json.dumps(metadata, indent=2, default=str))
        if extras:
            with zipfile.ZipFile(tmp, "a") as archive:
                for name, data in extras.items():
                    archive.writestr(name, data)
    return path


def read_extra(path, name):
    """The bytes of member `name` that `save_model(..., extras=)` stored, or None; a
    member over MAX_MEMBER_BYTES (a zip bomb) or unreadable is refused naming it."""
    try:
        with zipfile.ZipFile(path) as archive:
            if name not in archive.namelist():
                return None
            if archive.getinfo(name).file_size > MAX_MEMBER_BYTES:
                raise TransferkitError(f"{path}: member {name} is larger than "
                                       f"{MAX_MEMBER_BYTES} bytes; refused.")
            return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError,
            NotImplementedError) as error:  # what a damaged or odd zip raises
        raise TransferkitError(f"{path} is not a .keras model file (member {name}): "
                               f"{error}") from None


def read_metadata(path):
    """The transferkit metadata stored in a `.keras` file ({} if there is none); a
    member that is not a JSON object is refused naming the file (its fields are checked
    where they are used: `models.bundle.read_bundle_metadata`)."""
    data = read_extra(path, METADATA_NAME)
    if data is None:
        return {}
    try:
        values = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise TransferkitError(f"{path} is not a .keras model file: its {METADATA_NAME} "
                               f"is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise TransferkitError(f"{path}: its {METADATA_NAME} should hold a JSON object. "
                               f"Received: {type(values).__name__}")
    return values


@renamed(**TRUSTED)
def load_model(path, *, safe_mode=True, compile=True):
    """Load a `.keras` model with Keras `safe_mode` on (default) unless `safe_mode=False`
    (a file from someone you trust: `--trusted` on the command line).

    A file that needs unsafe deserialization (a Lambda layer's Python code) is refused
    with an explanation: loading it would run code written by whoever made the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TransferkitError(f"No model file at {path}.")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" for these
        raise TransferkitError(f"{path} is not a .keras model file (not a zip archive).")
    _import_layer_packages(path)
    for module in KERAS_OBJECT_MODULES:  # their classes: by name in the file
        importlib.import_module(module)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    except Exception as error:  # noqa: BLE001 - any failure to read a model names it
        if not safe_mode or "safe_mode" not in str(error) or not isinstance(error, ValueError):
            # Chained, so `--debug` still shows where Keras failed.
            raise TransferkitError(f"Cannot load the model file {path}: "
                                   f"{type(error).__name__}: {error}") from error
        raise UnsafeModelError(
            f"Refusing to load {path}: it contains a layer that runs arbitrary Python "
            "code when loaded (e.g. a Lambda layer), which Keras blocks in safe mode. "
            "Load it only if you trust whoever wrote the file: pass safe_mode=False "
            "(`--trusted` on the command line).") from error


def _import_layer_packages(path):
    # A model on a KerasHub backbone names KerasHub's registered layer classes; they
    # exist once keras_hub is imported (an import, not code from the file: safe mode
    # still decides what the file may do).
    try:
        with zipfile.ZipFile(path) as archive:
            uses_hub = b'"keras_hub' in archive.read(archive_members()[0])
    except (zipfile.BadZipFile, KeyError, OSError):
        return
    if uses_hub and importlib.util.find_spec("keras_hub") is not None:
        importlib.import_module("keras_hub")
