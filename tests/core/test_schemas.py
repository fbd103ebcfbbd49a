"""What is read back is checked field by field (issue 30): the schema checker itself,
then each file it guards (a .tflite sidecar, a model's metadata and novelty member,
run.json, config.json, class_names.json), each refused with exit 2 naming the file
and the field where it used to end in "unexpected error, likely a bug" (exit 1)."""

import io
import json
import os
import re
import zipfile

import numpy as np
import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.core.schema import (AnyOf, Bool, Int, List, Map, Nullable, Num, Obj,
                                     Str, check)
from transferkit.evaluation.evaluate import load_run
from transferkit.models.builder import build_model
from transferkit.models.bundle import bundle_metadata, read_sidecar, save_bundle
from transferkit.models.novelty import Novelty
from transferkit.core.inputs import InputSpec


def test_the_checker_names_the_file_the_field_what_is_allowed_and_the_value():
    schema = Obj({"name": Str(choices=("a", "b")), "n": Int(min=1),
                  "p": Num(above=0, below=1), "flag": Bool(),
                  "items": List(Obj({"t": Num(min=0)}), max_len=2),
                  "names": List(Str(), unique=True), "map": Map(Str()),
                  "either": AnyOf(Int(), Str()), "maybe": Nullable(Int())},
                 required=("name",))
    ok = {"name": "a", "n": 3, "p": 0.5, "flag": False, "items": [{"t": 0}],
          "names": ["x", "y"], "map": {"k": "v"}, "either": "s", "maybe": None}
    assert check(ok, schema, "test file f.json") == ok
    cases = [({**ok, "name": "c"}, "`name` should be one of ['a', 'b']. Received: 'c'"),
             ({**ok, "n": True}, "`n` should be an int >= 1. Received: True"),
             ({**ok, "n": 0}, "`n` should be an int >= 1. Received: 0"),
             ({**ok, "p": 1}, "`p` should be a number > 0 and < 1"),
             ({**ok, "p": float("nan")}, "`p` should be a number"),
             ({**ok, "items": [{"t": 0}, {"t": "x"}]}, "`items[1].t` should be a number"),
             ({**ok, "items": [{}, {}, {}]}, "`items` should be a list of at most 2"),
             ({**ok, "names": ["x", "x"]}, "`names[1]` should be a value not already"),
             ({**ok, "map": {"k": 1}}, "`map.k` should be a string"),
             ({**ok, "either": 1.5}, "`either` should be an int or a string"),
             ({**ok, "extra": 1}, "`extra` should be one of the known keys"),
             ({"n": 1}, "the required field `name` is missing"),
             ([ok], "its content should be an object")]
    for value, message in cases:
        with pytest.raises(ConfigError) as caught:
            check(value, schema, "test file f.json")
        assert str(caught.value).startswith("The test file f.json is not valid: ")
        assert message in str(caught.value), str(caught.value)


@pytest.fixture(scope="module")
def model():
    return build_model("tiny_test", 2, weights=None, image_size=16)


def _novelty(features=None, dim=None):
    d = dim or 8
    return Novelty("mahalanobis", 1.0, 0.05, {"mahalanobis": 0.9}, "synthetic",
                   {"means": np.zeros((2, d), np.float32),
                    "precision": np.eye(d, dtype=np.float32)})


def _feature_size(model):
    from transferkit.models.parts import resolve

    return int(np.prod(resolve(model).features.shape[1:]))


def _bundle(model, path, arrays_of=None, **meta):
    """A model bundle at `path`; `arrays_of`: a Novelty saved with it; `meta`: metadata
    keys set as they are (tampered ones too)."""
    metadata = {**bundle_metadata(("a", "b"), "multiclass", InputSpec(16, 16)), **meta}
    return save_bundle(model, str(path), metadata, novelty=arrays_of)


def _replace_member(path, name, data):
    """The .keras zip at `path` with member `name` replaced by `data` (tampering)."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for n, content in members.items():
            archive.writestr(n, content)


def _evaluate(path, folder, capsys):
    code = cli.main(["evaluate", str(path), "--data", folder])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("schemas") / "images",
                             classes=("a", "b"), per_class=2, size=16)


def test_a_tampered_novelty_member_is_refused_naming_the_file(model, folder, tmp_path,
                                                              capsys):
    path = _bundle(model, tmp_path / "m.keras", arrays_of=_novelty(dim=_feature_size(model)))
    assert load_run(path).novelty.detector == "mahalanobis"  # the good one loads
    # A pickled object array: never unpickled (allow_pickle=False), now also refused.
    buffer = io.BytesIO()
    np.savez(buffer, means=np.array([{"x": 1}], dtype=object),
             precision=np.eye(2, dtype=np.float32))
    _replace_member(path, "novelty.npz", buffer.getvalue())
    code, err = _evaluate(path, folder, capsys)
    assert code == 2 and "m.keras (member novelty.npz)" in err and "likely a bug" not in err
    for arrays, message in (
            ({"means": np.zeros((2, 3), np.float32)}, "lacks its arrays ['precision']"),
            ({"means": np.full((2, 3), np.nan, np.float32),
              "precision": np.eye(3, dtype=np.float32)}, "`means` holds NaN"),
            ({"means": np.zeros((2, 3), np.float32),
              "precision": np.eye(4, dtype=np.float32)}, "share one feature size"),
            ({"means": np.zeros((2, 5), np.float32),
              "precision": np.eye(5, dtype=np.float32)}, "are for 5 features")):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _replace_member(path, "novelty.npz", buffer.getvalue())
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_run(path)
    _replace_member(path, "novelty.npz", b"PK\x03\x04 torn")
    code, err = _evaluate(path, folder, capsys)
    assert code == 2 and "novelty.npz" in err


@pytest.mark.parametrize("meta, field", [
    ({"class_names": "ab"}, "class_names"),
    ({"task": "panoptic"}, "task"),  # no registered task
    ({"input": {"height": "16", "width": 16}}, "input.height"),
    ({"input": {"height": 16, "width": 10**9}}, "input.width"),
    ({"novelty": {"detector": "msp", "threshold": "x", "false_rejection": 0.05,
                  "auroc": {}, "criterion": "synthetic"}}, "novelty.threshold"),
    ({"temperature": -1}, "temperature"),
    ({"labels": ["a"]}, "labels"),
])
def test_bad_model_metadata_is_refused_naming_the_field(model, folder, tmp_path, capsys,
                                                        meta, field):
    path = _bundle(model, tmp_path / "m.keras", **meta)
    code, err = _evaluate(path, folder, capsys)
    assert code == 2, err
    assert "transferkit.json of" in err and "m.keras" in err and f"`{field}`" in err


@pytest.mark.parametrize("change, field", [
    ({"input": {"height": 16.5, "width": 16}}, "input.height"),
    ({"class_names": ["a", 3]}, "class_names[1]"),
    ({"novelty": {"detector": "knn", "threshold": 1.0, "false_rejection": 2,
                  "auroc": {"knn": 0.5}, "criterion": "x"}}, "novelty.false_rejection"),
])
def test_a_tflite_sidecar_with_a_wrong_type_is_refused_before_the_file_is_run(
        tmp_path, folder, capsys, change, field):
    # Before: a sidecar value of the wrong type ended in a numpy/TypeError and the
    # CLI's "unexpected error, likely a bug" (exit 1).
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(b"TFL3 not run: the sidecar is checked first")
    meta = {**bundle_metadata(("a", "b"), "multiclass", InputSpec(16, 16)), **change}
    (tmp_path / "model.tflite.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=f"sidecar .*model.tflite.json.*`{re.escape(field)}`"):
        read_sidecar(artifact)
    for argv in (["evaluate", str(artifact), "--data", folder],
                 ["predict", str(artifact), os.path.join(folder, "a", "0.png")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "model.tflite.json" in err and f"`{field}`" in err


def _run_dir(model, root, **keys):
    """A run directory of `model` whose config.json is the recipe of `keys`."""
    from transferkit.training.recipe import RecipeConfig

    run = RunDir(root)
    _bundle(model, run.model_file)
    run.write_config(RecipeConfig.from_keys(backbone="tiny_test", **keys).to_dict())
    run.write_class_names(["a", "b"])
    return run


@pytest.mark.parametrize("name, content, field", [
    ("run.json", {"run_id": 5}, "run_id"),
    ("run.json", {"run_id": "x", "fixes": "some.csv"}, "fixes"),
    ("run.json", {"run_id": "x", "resumes": [{"time": "yesterday"}]}, "resumes[0].time"),
    ("class_names.json", ["a", 2], "[1]"),
    ("class_names.json", {"a": 1}, ""),
])
def test_run_records_are_checked_when_read(model, tmp_path, name, content, field):
    run = _run_dir(model, tmp_path / "run")
    with open(run.file(name), "w") as f:
        json.dump(content, f)
    with pytest.raises(ConfigError, match=f"{name} is not valid: .*{re.escape(field)}"):
        run.read_info() if name == "run.json" else run.read_class_names()


def test_a_resume_over_a_damaged_run_json_exits_2_naming_it(model, tmp_path, capsys):
    # Before: run.json "fixes": "x" reached `.get` on a string (AttributeError, exit 1).
    data = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=3,
                             size=16)
    run = _run_dir(model, tmp_path / "run", data=data, weights="none", image_size=16)
    with open(run.file("run.json"), "w") as f:
        json.dump({"run_id": "x", "fixes": "x"}, f)
    code = cli.main(["train", "--data", data, "--backbone", "tiny_test", "--weights",
                     "none", "--image-size", "16", "--out", run.path, "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "run.json" in err and "`fixes`" in err


def test_a_bad_run_config_is_refused_naming_the_file_and_key(model, tmp_path, folder,
                                                             capsys):
    run = _run_dir(model, tmp_path / "run")
    with open(run.config_file, "w") as f:
        json.dump({"schedule": {"batch_size": "32"}}, f)
    code, err = _evaluate(run.path, folder, capsys)
    assert code == 2 and "config.json" in err and "batch_size" in err
