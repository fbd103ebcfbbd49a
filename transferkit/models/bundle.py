"""A model bundle: a model file and what travels with it, written by one function and
checked field by field when read back.

    meta = bundle_metadata(class_names, "multiclass", input_spec, backbone="tiny_test")
    save_bundle(model, "runs/x/model.keras", meta, novelty=novelty)       # train, add-class
    save_bundle(model, "out/model.keras", meta, novelty=novelty, companions=True)  # export
    write_companions("out/model.tflite", meta)   # any other artifact: labels and sidecar

What a bundle holds:

    model.keras          the model, written atomically (`saving.save_model`), with members
      transferkit.json   METADATA_NAME: class names, task, input spec, backbone, TTA, ...
      novelty.npz        the novelty score's arrays (`novelty.ARRAYS_NAME`; its settings
                         are the metadata's "novelty")
    labels.txt           LABELS_NAME (exports): the class names, one a line, output order
    <artifact>.json      the sidecar (exports): the same metadata, beside any format

Read back, the metadata (inside the .keras file, a sidecar, a SavedModel's assets) is
checked against `metadata_schema()` and the novelty member by `Novelty.from_parts`: a
bad value is a ConfigError naming the file and the field, never a crash later.
"""

import os

from transferkit.core.errors import ConfigError
from transferkit.core.files import MAX_JSON_BYTES, parse_json, read_regular_file, write_json
from transferkit.core.files import write_text
from transferkit.core.schema import (AnyOf, Int, List, Map, Null, Num, Obj, Str, check)
from transferkit.core.task_registry import task_names
from transferkit.models.novelty import ARRAYS_NAME, SETTINGS_SCHEMA, Novelty
from transferkit.models.saving import METADATA_NAME, read_extra, read_metadata, save_model

LABELS_NAME = "labels.txt"
SIDECAR_SUFFIX = ".json"  # <artifact>.json
MAX_SIDE = 16384  # a stored input size above this is not one transferkit wrote


def bundle_metadata(class_names, task, input_spec, *, backbone=None, novelty=None, **extra):
    """The metadata dict every model file and export carries: class names (output
    order), the task's name (`task`: a name or a Task) and settings, the input spec, the backbone (when known), the novelty
    score's settings (a `Novelty`, when given) and `extra` keys (e.g. tta, format)."""
    meta = {"class_names": [str(n) for n in class_names],
            "task": getattr(task, "name", task), "input": input_spec.to_json()}
    # A Task's own settings (`Task.settings`, e.g. detection's post-processing).
    settings = task.settings() if hasattr(task, "settings") else {}
    if settings:
        meta["task_settings"] = settings
    if backbone is not None:
        meta["backbone"] = backbone
    meta.update(extra)
    if novelty is not None:
        meta["novelty"] = novelty.to_json()
    return meta


def save_bundle(model, path, metadata, *, novelty=None, companions=False):
    """Save `model` to the `.keras` file `path` atomically, with `metadata` inside and,
    given a `Novelty`, its settings in the metadata and its arrays as a member; with
    `companions`, also labels.txt and the `<path>.json` sidecar beside it. Returns path."""
    metadata = dict(metadata)
    extras = None
    if novelty is not None:
        metadata["novelty"] = novelty.to_json()
        extras = {ARRAYS_NAME: novelty.arrays_bytes()}
    save_model(model, path, metadata=metadata, extras=extras)
    if companions:
        write_companions(path, metadata)
    return path


def write_companions(artifact, metadata):
    """labels.txt (the class names, one a line) beside `artifact` and its sidecar
    `<artifact>.json` (the metadata), each written atomically."""
    write_labels(os.path.dirname(os.fspath(artifact).rstrip("/")) or ".",
                 metadata["class_names"])
    write_json(sidecar_path(artifact), metadata)


def write_assets(folder, metadata):
    """labels.txt and transferkit.json (the metadata) in `folder` (a SavedModel's
    assets/, which TF Serving ships with the model)."""
    write_labels(folder, metadata["class_names"])
    write_json(os.path.join(folder, METADATA_NAME), metadata)


def write_labels(folder, class_names):
    write_text(os.path.join(folder, LABELS_NAME), "".join(f"{n}\n" for n in class_names))


def sidecar_path(artifact):
    """`<artifact>.json`, the sidecar of an exported file or folder."""
    return os.fspath(artifact).rstrip("/") + SIDECAR_SUFFIX


# --- reading back ----------------------------------------------------------------------

def metadata_schema():
    """The schema of a bundle's metadata: every key any transferkit version writes
    (the registered tasks are read now: a plugin task registers before)."""
    side = Int(min=1, max=MAX_SIDE)
    return Obj({
        "class_names": List(Str(), unique=True),
        "task": Str(choices=task_names()),
        "backbone": Str(),
        "input": Obj({"height": side, "width": side, "channels": Int(min=1, max=4)},
                     required=("height", "width")),
        "image_size": AnyOf(side, List(side, min_len=2, max_len=2)),  # older files
        "tta": AnyOf(Null(), Str(), Map()),  # the decision record, or a preset name
        "novelty": SETTINGS_SCHEMA,
        "temperature": Num(above=0),
        # `Task.settings` of the tasks that have any (detection's post-processing);
        # the task checks the values again when it applies them.
        "task_settings": Obj({"score_threshold": Num(min=0, below=1),
                              "max_detections": Int(min=1), "nms_iou": Num(above=0, max=1),
                              "detection_width": Int(min=1)}),
        "format": Str(), "quantize": AnyOf(Null(), Str()), "source": Str(),
        "input_format": Str(), "signatures": Map(), "transferkit_version": Str(),
    })


def check_metadata(metadata, what):
    """`metadata` if it fits `metadata_schema()`; ConfigError naming `what` (e.g.
    "metadata transferkit.json of runs/x/model.keras") and the field otherwise."""
    return check(metadata, metadata_schema(), what)


def read_bundle_metadata(path):
    """The checked metadata stored in the `.keras` file `path` ({} if it has none)."""
    return check_metadata(read_metadata(path), f"metadata {METADATA_NAME} of {path}")


def read_novelty(path, metadata):
    """The `Novelty` of the `.keras` file `path` (its checked `metadata`'s settings and
    its novelty.npz member, validated), or None when it has none."""
    if not metadata.get("novelty"):
        return None
    return Novelty.from_parts(metadata["novelty"], read_extra(path, ARRAYS_NAME) or b"",
                              where=f"{path} (member {ARRAYS_NAME})")


def read_sidecar(artifact, required=False):
    """The checked metadata of `<artifact>.json`, or None when there is none (a
    ConfigError naming it when `required`)."""
    path = sidecar_path(artifact)
    if not os.path.lexists(path):
        if required:
            raise ConfigError(f"{artifact} has no {os.path.basename(path)} beside it (the "
                              "class names, task and input size `transferkit export` "
                              "writes); export it again, or pass the run it came from.")
        return None
    try:
        raw = read_regular_file(path, MAX_JSON_BYTES)
    except OSError as error:
        raise ConfigError(f"Cannot read the sidecar {path}: {error.strerror or error}") \
            from None
    return check_metadata(parse_json(raw, f"sidecar {path}"), f"sidecar {path}")
