"""`data.files`: the file listing of folder and CSV sources. Links leaving the data
folder only on request, special files refused unread, what --no-scan keeps, and no
file in two splits."""

import os
import shutil

import pytest
from PIL import Image

from conftest import make_image_folder, make_linked_class_folder
from transferkit.core.errors import DataError
from transferkit.data.files import image_dataset
from transferkit.data.load import load_data


@pytest.mark.parametrize("scan", [True, False])
def test_links_leaving_the_data_folder_are_followed_only_when_asked(tmp_path, capsys,
                                                                   scan):
    folder = make_linked_class_folder(tmp_path)
    data = load_data(folder, image_size=16, batch_size=4, val_split=0.0, scan=scan)
    assert data.class_names == ("blue", "red") and len(data.train_files) == 8
    out = capsys.readouterr().out
    assert "green" in out and "outside" in out  # reported, not silently dropped
    data = load_data(folder, image_size=16, batch_size=4, val_split=0.0, scan=scan,
                     follow_links=True)
    assert data.class_names == ("blue", "green", "red") and len(data.train_files) == 12


def test_predict_refuses_special_files_without_reading_them(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="pipe.png"):
        image_dataset([str(fifo)], (16, 16))
    os.symlink("/dev/zero", tmp_path / "zero.png")
    with pytest.raises(DataError, match="zero.png"):
        image_dataset([str(tmp_path / "zero.png")], (16, 16))


def test_no_scan_lists_only_files_tf_decodes_and_names_the_others(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    Image.new("RGB", (16, 16)).save(os.path.join(folder, "red", "scan.tiff"))
    with open(os.path.join(folder, "blue", "text.jpg"), "w") as f:
        f.write("hello")
    data = load_data(folder, image_size=16, batch_size=4, scan=False, val_split=0.0)
    out = capsys.readouterr().out
    assert "scan.tiff" in out and "text.jpg" in out and "skipped 2 of 10" in out
    assert len(data.train_files) == 8


def test_the_same_file_in_two_splits_is_refused_or_removed_from_the_later(tmp_path,
                                                                          capsys):
    folder = make_image_folder(tmp_path / "train", per_class=4, size=16)
    with pytest.raises(DataError, match="val source.*only files of the train source"):
        load_data({"train": folder, "val": folder}, image_size=16, scan=False)
    # Rows naming the same file in both CSVs (one spelled through a link): removed.
    os.symlink(folder, tmp_path / "alias")
    rows = [f"{c}/{i}.png,{c}" for c in ("red", "blue") for i in range(4)]
    (tmp_path / "train.csv").write_text("\n".join(f"train/{r}" for r in rows[:6]))
    (tmp_path / "val.csv").write_text("\n".join(f"alias/{r}" for r in rows[5:]))
    for scan in (False, True):
        data = load_data({"train": str(tmp_path / "train.csv"),
                          "val": str(tmp_path / "val.csv")}, image_size=16, scan=scan)
        assert "1 file(s) of the val source are also in the train source" in \
            capsys.readouterr().out
        assert len(data.train_files) == 6 and len(data.val_files) == 2
    # The same content under another name: the scan removes the later copy.
    val = make_image_folder(tmp_path / "val", per_class=2, size=16, seed=5)
    shutil.copy(os.path.join(folder, "red", "0.png"), os.path.join(val, "red", "copy.png"))
    data = load_data({"train": folder, "val": val}, image_size=16)
    assert "copy.png" not in " ".join(data.val_files) and len(data.val_files) == 4
    assert any(p.kind == "duplicate" and "split 'train'" in p.reason
               for p in data.scan_report.problems)
