"""Class names that differ only in case or Unicode normalisation (issue 30): refused
where they would merge or split a class without a word (add-class, Unicode-only
differences, fixes relabels), warned about where they are valid on this system (train
with "Cat" and "cat" folders); messages suggest only flags the command has."""

import os
import unicodedata

import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import DataError
from transferkit.core.inputs import InputSpec
from transferkit.core.rundir import RunDir
from transferkit.data.load import load_data
from transferkit.data.names import confusable_pairs
from transferkit.models.builder import build_model
from transferkit.models.bundle import bundle_metadata, save_bundle
from transferkit.training.recipe import RecipeConfig

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


def test_confusable_pairs_tell_case_from_normalisation():
    assert NFC != NFD
    assert confusable_pairs(["cat", "Cat", "dog", NFC, NFD]) == [
        ("cat", "Cat", "case"), (NFC, NFD, "unicode")]
    assert confusable_pairs(["CAFÉ"], [NFD, "dog"]) == [("CAFÉ", NFD, "case")]
    assert confusable_pairs(["a", "b"]) == []


def test_train_refuses_names_that_differ_only_in_normalisation(tmp_path):
    folder = make_image_folder(tmp_path / "d", classes=(NFC, NFD), per_class=3, size=16)
    with pytest.raises(DataError, match="differ only in Unicode normalisation"):
        load_data(folder, image_size=16, verbose=False)


def test_train_warns_about_names_that_differ_only_in_case(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "d", classes=("cat", "Cat"), per_class=3,
                               size=16)
    data = load_data(folder, image_size=16, val_split=0.0)
    assert data.class_names == ("Cat", "cat")  # distinct here: two classes
    printed = capsys.readouterr().out
    assert "'Cat' and 'cat' differ only in letter case" in printed
    assert "macOS and Windows" in printed


def _fake_run(root, data, names=("cat", "dog")):
    """A run directory (model.keras, config.json, class_names.json) of a tiny model,
    without training: what add-class reads before any work."""
    run = RunDir(root)
    model = build_model("tiny_test", len(names), weights=None, image_size=16)
    save_bundle(model, run.model_file, bundle_metadata(
        names, "multiclass", InputSpec(16, 16), backbone="tiny_test"))
    run.write_config(RecipeConfig.from_keys(data=data, backbone="tiny_test",
                                            weights="none", image_size=16).to_dict())
    run.write_class_names(list(names))
    return run.path


def test_add_class_refuses_a_class_that_differs_only_in_case(tmp_path, capsys):
    old = make_image_folder(tmp_path / "old", classes=("cat", "dog"), per_class=3, size=16)
    run = _fake_run(tmp_path / "run", old)
    new = make_image_folder(tmp_path / "new", classes=("Cat",), per_class=3, size=16)
    code = cli.main(["add-class", run, "--data", new, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "'Cat' and 'cat' differ only in letter case" in err
    assert not (tmp_path / "out").exists()


def test_add_class_into_a_run_suggests_only_its_own_flags(tmp_path, capsys):
    old = make_image_folder(tmp_path / "old", classes=("cat", "dog"), per_class=3, size=16)
    run = _fake_run(tmp_path / "run", old)
    other = _fake_run(tmp_path / "other", old)
    new = make_image_folder(tmp_path / "new", classes=("bird",), per_class=3, size=16)
    code = cli.main(["add-class", run, "--data", new, "--out", other])
    err = capsys.readouterr().err
    # Before: "Pass --resume to continue it", a flag add-class does not have.
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    assert "--resume" not in err


def test_a_relabel_to_another_spelling_names_the_class_it_means(tmp_path):
    folder = make_image_folder(tmp_path / "d", classes=("cat", "dog"), per_class=3,
                               size=16)
    target = os.path.join(folder, "dog", "0.png")
    (tmp_path / "fixes.csv").write_text(f"path,action,label\n{target},relabel,Cat\n")
    with pytest.raises(DataError, match="relabel to 'Cat'.*'Cat' and 'cat' differ only "
                       "in letter case"):
        load_data(folder, image_size=16, fixes=str(tmp_path / "fixes.csv"), verbose=False)
