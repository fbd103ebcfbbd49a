"""One guarded way to open a listed file (issue 30): every listing reader goes through
`data.listing` before anything opens a listed file, so a FIFO named anywhere is
reported and skipped (never waited on), and listing files with odd bytes are refused
naming the line. Inputs are read and checked before `--out` is written."""

import contextlib
import io
import os
import signal

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder, make_seg_folder
from transferkit import cli
from transferkit.core.errors import DataError
from transferkit.data.boxes import list_boxes
from transferkit.data.files import folder_dataset
from transferkit.data.listing import (ListedFileRejected, csv_rows, read_listed_image,
                                      read_listing_text)
from transferkit.data.load import load_data


@contextlib.contextmanager
def no_hang(seconds=30):
    """Fail, instead of waiting forever, when the body blocks (e.g. opening a FIFO):
    SIGALRM interrupts the blocking call in this (the main) thread."""
    def alarm(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s (a FIFO was opened?)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _png(path, size=(40, 30), colour=(200, 30, 30)):
    Image.new("RGB", size, colour).save(path)
    return str(path)


def _skipped(report, name):
    """The kinds of the scan problems of the file called `name`."""
    return {p.kind for p in report.problems if os.path.basename(p.path) == name
            and p.action == "skipped"}


def test_the_guard_refuses_special_huge_and_undecodable_files_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    os.symlink("/dev/zero", tmp_path / "zero.png")
    good = _png(tmp_path / "good.png")
    (tmp_path / "cut.png").write_bytes(open(good, "rb").read()[:60])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60x20, shown turned a quarter
    Image.new("RGB", (60, 20)).save(tmp_path / "turned.jpg", exif=exif)
    with no_hang():
        for name, kind in (("fifo.png", "not_regular"), ("zero.png", "not_regular"),
                           ("cut.png", "corrupt")):
            with pytest.raises(ListedFileRejected) as caught:
                read_listed_image(tmp_path / name)
            assert caught.value.problem.kind == kind
            assert caught.value.problem.path == str(tmp_path / name)
        with pytest.raises(ListedFileRejected, match="max_pixels"):
            read_listed_image(good, max_pixels=100)
        assert read_listed_image(good).upright_size == (40, 30)
        assert read_listed_image(tmp_path / "turned.jpg").upright_size == (20, 60)


def _boxes_csv(root, names):
    lines = ["path,label,xmin,ymin,xmax,ymax"]
    lines += [f"{name},{'ab'[i % 2]},2,2,20,20" for i, name in enumerate(names)]
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return str(root / "boxes.csv")


def test_a_fifo_named_in_a_boxes_csv_is_skipped_not_waited_on(tmp_path):
    # Before: the box reader opened every listed path with Pillow before the scan's
    # regular-file check, so this hung `train` and `scan`.
    names = [os.path.basename(_png(tmp_path / f"{i}.png", colour=(40 * i, 9, 9)))
             for i in range(6)]
    os.mkfifo(tmp_path / "fifo.png")
    csv_path = _boxes_csv(tmp_path, names + ["fifo.png"])
    with no_hang():
        data = load_data(csv_path, task="localization", image_size=32, val_split=0.0,
                         verbose=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main(["scan", csv_path, "--task", "localization"])
    assert _skipped(data.scan_report, "fifo.png") == {"not_regular"}
    assert len(data.train_files) == 6
    assert code == 0 and "fifo.png" in out.getvalue()


def test_a_fifo_in_a_voc_folder_is_skipped_as_image_and_as_annotation(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    _png(tmp_path / "JPEGImages" / "x.png")
    os.mkfifo(tmp_path / "JPEGImages" / "f.png")
    os.mkfifo(tmp_path / "Annotations" / "a_fifo.xml")
    for name in ("x", "f"):
        (tmp_path / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.png</filename><object><name>cat</name>"
            "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax>"
            "</bndbox></object></annotation>")
    with no_hang():
        paths, labels, problems = list_boxes(str(tmp_path))
    kinds = {os.path.basename(p.path): p.kind for p in problems}
    # Both read through the guarded opener (detection's VOC reader): named, never opened.
    assert kinds["a_fifo.xml"] == kinds["f.png"] == "not_regular"
    assert all("FIFO" in p.reason for p in problems if "f" in os.path.basename(p.path))
    assert [os.path.basename(p) for p in paths] == ["x.png"]
    assert [label.label for label in labels] == ["cat"]


@pytest.mark.parametrize("where", ["folder", "label_csv"])
def test_a_fifo_in_a_class_folder_or_label_csv_is_skipped(tmp_path, where):
    folder = make_image_folder(tmp_path / "d", per_class=4, size=16)
    os.mkfifo(os.path.join(folder, "red", "fifo.png"))
    source = folder
    if where == "label_csv":
        rows = [f"{c}/{n},{c}" for c in ("red", "blue")
                for n in sorted(os.listdir(os.path.join(folder, c)))]
        (tmp_path / "d" / "labels.csv").write_text("path,label\n" + "\n".join(rows))
        source = str(tmp_path / "d" / "labels.csv")
    with no_hang():
        data = load_data(source, image_size=16, val_split=0.0, verbose=False)
    assert _skipped(data.scan_report, "fifo.png") == {"not_regular"}
    assert len(data.train_files) == 8


@pytest.mark.parametrize("listing", ["csv", "folder"])
def test_a_fifo_mask_or_image_is_reported_not_waited_on(tmp_path, listing):
    root = make_seg_folder(tmp_path / "seg", count=6, size=16)
    masks = sorted(os.listdir(os.path.join(root, "masks")))
    os.remove(os.path.join(root, "masks", masks[0]))
    os.mkfifo(os.path.join(root, "masks", masks[0]))
    os.remove(os.path.join(root, "images", masks[1]))
    os.mkfifo(os.path.join(root, "images", masks[1]))
    source = root
    if listing == "csv":
        rows = [f"images/{m},masks/{m}" for m in masks]
        (tmp_path / "seg" / "pairs.csv").write_text("image,mask\n" + "\n".join(rows))
        source = str(tmp_path / "seg" / "pairs.csv")
    with no_hang():
        data = load_data(source, task="segmentation", image_size=16, val_split=0.0,
                         verbose=False)
    bad = [p for p in data.scan_report.problems if p.kind == "bad_mask"]
    assert len(bad) == 1 and "FIFO" in bad[0].reason
    assert _skipped(data.scan_report, masks[1]) == {"not_regular"}
    assert len(data.train_files) == 4


def test_an_unknown_data_folder_skips_and_names_unusable_files(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "u", classes=("x",), per_class=3, size=16)
    os.mkfifo(os.path.join(folder, "x", "fifo.jpg"))
    (tmp_path / "u" / "x" / "text.jpg").write_text("not an image")
    with no_hang():
        dataset, kept = folder_dataset(folder, "unknown_data", (16, 16), verbose=True)
    assert len(kept) == 3 and sum(int(x.shape[0]) for x, _ in dataset) == 3
    printed = capsys.readouterr().out
    assert "fifo.jpg" in printed and "text.jpg" in printed
    for name in os.listdir(os.path.join(folder, "x")):
        if name.endswith(".png"):
            os.remove(os.path.join(folder, "x", name))
    with pytest.raises(DataError, match="`unknown_data` folder.*no usable image"):
        folder_dataset(folder, "unknown_data", (16, 16))


@pytest.mark.parametrize("content, line, what", [
    (b"path,label\na.png,cat\n\xff\xfe.png,dog\n", 3, "UTF-8"),
    (b"path,label\na.png,cat\nb.png,d\x00og\n", 3, "NUL"),
    (b"path,label\na.png,cat\n" + b"b.png," + b"x" * 200_000 + b"\n", 3, "field larger"),
])
def test_listing_csvs_with_odd_bytes_are_refused_naming_the_line(tmp_path, content, line,
                                                                  what):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"labels.csv, line {line}:.*{what}"):
        csv_rows(path)
    with pytest.raises(DataError, match=f"line {line}"):
        load_data(str(path), image_size=16, verbose=False)


def test_a_listing_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "classes.txt")
    with no_hang(), pytest.raises(DataError, match="FIFO"):
        read_listing_text(tmp_path / "classes.txt", "classes file")


TRAIN = ["--backbone", "tiny_test", "--weights", "none", "--image-size", "16",
         "--head-epochs", "0", "--finetune-epochs", "1", "--unfreeze", "none",
         "--batch-size", "4", "--augment", "none", "--no-report"]


@pytest.mark.parametrize("flag", ["--unknown-data", "--val-data"])
def test_inputs_that_do_not_decode_are_refused_before_out_is_written(tmp_path, capsys,
                                                                      flag):
    # Before: an unknown-data folder of files named .jpg that do not decode passed the
    # up-front check (extensions only), training ran, the end step failed: exit 2 and
    # no model.keras. Now every input is decoded before anything is written.
    data = make_image_folder(tmp_path / "data", per_class=4, size=16)
    bad = tmp_path / "bad"
    for cls in ("red", "blue"):
        (bad / cls).mkdir(parents=True)
        for i in range(2):
            (bad / cls / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "run"
    code = cli.main(["train", "--data", data, flag, str(bad), "--out", str(out), *TRAIN])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err
    assert not out.exists()  # nothing written: no config.json, no run.json


def test_images_are_decoded_once_per_reader_not_reopened_by_path(tmp_path, monkeypatch):
    # Box sizes come from the bytes the guard read: Pillow never gets the path.
    from PIL import Image as PILImage

    names = [os.path.basename(_png(tmp_path / f"{i}.png")) for i in range(2)]
    csv_path = _boxes_csv(tmp_path, names)
    real = PILImage.open

    def by_bytes_only(fp, *args, **kwargs):
        assert not isinstance(fp, (str, os.PathLike)), f"opened by path: {fp}"
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(PILImage, "open", by_bytes_only)
    paths, labels, problems = list_boxes(csv_path)
    assert len(paths) == 2 and not problems
    np.testing.assert_allclose(labels[0].box, (2 / 40, 2 / 30, 20 / 40, 20 / 30))
