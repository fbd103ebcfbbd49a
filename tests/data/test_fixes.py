"""`data.fixes`: a review's decisions (relabel, exclude, keep) applied to the listing at
load time, the user's files untouched; errors name the file, the line and the value."""

import os

import numpy as np
import pytest

from conftest import make_image_folder
from transferkit.cli.main import main
from transferkit.core.errors import DataError
from transferkit.data.fixes import read_fixes, write_fixes
from transferkit.data.load import load_data


def test_fixes_apply_at_load_time_without_touching_files(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=6, size=32)
    red0, blue1 = os.path.join(data, "red", "0.png"), os.path.join(data, "blue", "1.png")
    before = sorted(os.listdir(os.path.join(data, "red")))
    write_fixes(tmp_path / "fixes.csv", [(red0, "relabel", "blue"), (blue1, "exclude", ""),
                                         (os.path.join(data, "red", "2.png"), "keep", "")])
    splits = load_data(data, image_size=32, val_split=0.0, fixes=str(tmp_path / "fixes.csv"),
                       verbose=False)
    files = dict(zip(splits.train_files, np.argmax(splits.train_labels, axis=1)))
    assert blue1 not in files and len(files) == 11
    assert splits.class_names[files[red0]] == "blue"
    assert sorted(os.listdir(os.path.join(data, "red"))) == before


def test_fixes_errors_name_the_file_line_and_missing_files(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", per_class=3, size=32)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,action,label\n" + os.path.join(data, "red", "0.png") + ",rename,x\n")
    with pytest.raises(DataError, match=r"bad.csv, line 2: action 'rename' is not one of"):
        read_fixes(bad)
    gone = tmp_path / "gone.csv"
    gone.write_text("path,action,label\n/nowhere/a.png,exclude,\n/nowhere/b.png,keep,\n")
    with pytest.raises(DataError, match=r"2 file\(s\) that do not exist.*a.png, /nowhere/b.png"):
        read_fixes(gone)
    unknown = tmp_path / "unknown.csv"
    write_fixes(unknown, [(os.path.join(data, "red", "0.png"), "relabel", "purple")])
    with pytest.raises(DataError, match=r"relabel to 'purple'.*Allowed: \['blue', 'red'\]"):
        load_data(data, image_size=32, fixes=str(unknown), verbose=False)
    assert main(["train", "--data", data, "--fixes", str(gone), "--backbone", "tiny_test",
                 "--out", str(tmp_path / "run")]) == 2
    assert "gone.csv names 2 file(s) that do not exist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "run.json")  # refused before claiming
