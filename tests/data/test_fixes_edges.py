"""The fixes file's edges (issue 30): any encoding problem, CSV error or oversized field
is exit 2 naming the line; rows naming files that are not in the data are listed as
such and not counted as applied, in the summary and in run.json."""

import json
import os

import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import DataError
from transferkit.data.fixes import read_fixes
from transferkit.data.load import load_data

TRAIN = ["--backbone", "tiny_test", "--weights", "none", "--image-size", "16",
         "--head-epochs", "0", "--finetune-epochs", "1", "--unfreeze", "none",
         "--batch-size", "4", "--augment", "none", "--no-report", "--no-novelty",
         "--no-cache-features", "--no-auto-tta"]


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "d", per_class=4, size=16)


@pytest.mark.parametrize("tail, line, what", [
    (b"{img},exclude,\n\xe9t\xe9.png,exclude,\n", 3, "UTF-8"),
    (b"{img},exclude,\n{img},relabel,bl\x00ue\n", 3, "NUL"),
    (b"{img},exclude,\n\"{img},exclude,\n", 3, "action '' is not one of"),  # open quote
    (b"{img},exclude,\n{img},relabel," + b"x" * 200_000 + b"\n", 3, "field larger"),
    (b"{img},delete,\n", 2, "action 'delete'"),
    (b",exclude,\n", 2, "should name a file"),
])
def test_a_malformed_fixes_file_is_exit_2_naming_the_line(folder, tmp_path, capsys,
                                                         tail, line, what):
    img = os.path.join(folder, "red", "0.png").encode()
    path = tmp_path / "fixes.csv"
    path.write_bytes(b"path,action,label\n" + tail.replace(b"{img}", img))
    with pytest.raises(DataError, match=f"fixes.csv, line {line}:.*{what}"):
        read_fixes(path)
    out = tmp_path / "run"
    code = cli.main(["train", "--data", folder, "--fixes", str(path), "--out", str(out),
                     *TRAIN])
    err = capsys.readouterr().err
    assert code == 2 and f"line {line}" in err and "likely a bug" not in err
    assert not out.exists()


def test_rows_naming_files_outside_the_data_are_listed_and_not_counted(folder, tmp_path,
                                                                       capsys):
    # Before: such a row was kept silently and counted as an applied exclusion.
    elsewhere = make_image_folder(tmp_path / "other", per_class=1, size=16)
    inside = os.path.join(folder, "red", "0.png")
    outside = os.path.join(elsewhere, "red", "0.png")
    path = tmp_path / "fixes.csv"
    path.write_text(f"path,action,label\n{inside},exclude,\n{outside},exclude,\n"
                    f"{os.path.join(elsewhere, 'blue', '0.png')},relabel,red\n")
    data = load_data(folder, image_size=16, val_split=0.0, fixes=str(path))
    printed = capsys.readouterr().out
    assert "1 exclusion(s) applied" in printed and "0 relabel(s)" in printed
    assert "2 row(s)" in printed and "not in the data" in printed and outside in printed
    assert data.fixes == {"relabel": 0, "exclude": 1, "not_in_data": sorted(
        [os.path.realpath(outside), os.path.realpath(os.path.join(elsewhere, "blue",
                                                                  "0.png"))])}
    assert len(data.train_files) == 7
    out = tmp_path / "run"
    assert cli.main(["train", "--data", folder, "--fixes", str(path), "--out", str(out),
                     *TRAIN]) == 0
    record = json.load(open(out / "run.json"))["fixes"]
    assert (record["exclude"], record["relabel"]) == (1, 0)
    assert record["not_in_data"] == data.fixes["not_in_data"]
