"""Health scan: a folder of bad and odd files, made here, reported file by file; special
files and links leaving the folder; files TensorFlow cannot decode."""

import importlib
import io
import json
import os
import shutil
import struct
import zlib

import keras
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import make_image_folder
from transferkit import cli
from transferkit.data.load import load_data
from transferkit.core.errors import DataError
from transferkit.data.scan import scan
from transferkit.data.pipeline import decode_image

RNG = np.random.default_rng(0)


def _rgb(h=16, w=24):
    return Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _bomb_png() -> bytes:
    """A valid 10x10 PNG whose header claims 100000x100000 pixels."""
    buf = io.BytesIO()
    Image.new("L", (10, 10)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# name -> (class folder, expected problem kind, action); odd files are kept.
BAD = {
    "truncated.jpg": ("cat", "corrupt", "skipped"),
    "notes.jpg": ("cat", "not_image", "skipped"),
    "readme.txt": ("dog", "not_image", "skipped"),
    "empty.png": ("dog", "empty", "skipped"),
    "bomb.png": ("cat", "too_large", "skipped"),
    "tiny.png": ("dog", "too_small", "skipped"),
    "loop_a.jpg": ("cat", "symlink_loop", "skipped"),
    "dangling.jpg": ("dog", "unreadable", "skipped"),
    "copy.jpg": ("dog", "duplicate", "skipped"),
}
ODD = {  # name -> trait the scan must find
    "png_named.jpg": "extension_mismatch",
    "cmyk.jpg": "cmyk",
    "deep.png": "16bit",
    "alpha.png": "alpha",
    "gray.jpg": "grayscale",
    "anim.gif": "animated",
    "rotated.jpg": "exif_rotated",
    "scan.tiff": "unsupported_format",
}


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "messy"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            _rgb().save(root / c / f"ok{i}.jpg")
    cat, dog = root / "cat", root / "dog"
    buf = io.BytesIO()
    _rgb(64, 64).save(buf, "JPEG")
    (cat / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (cat / "notes.jpg").write_text("not an image")
    (dog / "readme.txt").write_text("hello")
    (dog / "empty.png").write_bytes(b"")
    (cat / "bomb.png").write_bytes(_bomb_png())
    _rgb(2, 2).save(dog / "tiny.png")
    os.symlink(cat / "loop_b.jpg", cat / "loop_a.jpg")
    os.symlink(cat / "loop_a.jpg", cat / "loop_b.jpg")
    os.symlink(root / "missing.jpg", dog / "dangling.jpg")
    os.symlink(root, dog / "again")  # folder loop back to the root
    shutil.copy(cat / "ok0.jpg", dog / "copy.jpg")
    (cat / ".DS_Store").write_bytes(b"\0junk")  # hidden: ignored, not reported
    _rgb().save(cat / "png_named.jpg", "PNG")
    _rgb().convert("CMYK").save(cat / "cmyk.jpg", "JPEG")
    deep = (RNG.random((16, 24)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(dog / "deep.png")
    _rgb().convert("RGBA").save(dog / "alpha.png")
    _rgb().convert("L").save(dog / "gray.jpg")
    frames = [_rgb().convert("P") for _ in range(2)]
    frames[0].save(cat / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    _rgb(16, 24).save(cat / "rotated.jpg", exif=exif)
    _rgb().save(dog / "scan.tiff")
    return root


def test_scan_reports_every_bad_file_with_path_and_reason(messy, tmp_path):
    report = scan(messy, normalized_dir=tmp_path / "norm", workers=4)
    by_name = {os.path.basename(p.path): p for p in report.problems if p.path}
    for name, (folder, kind, action) in BAD.items():
        problem = by_name[name]
        assert problem.kind == kind, (name, problem)
        assert problem.action == action and problem.reason
        assert problem.path == str(messy / folder / name)
    assert by_name["again"].kind == "symlink_loop"
    assert by_name["loop_b.jpg"].kind == "symlink_loop"
    assert ".DS_Store" not in by_name
    assert "ok0.jpg" in by_name["copy.jpg"].reason
    assert report.rejected == {"corrupt": 1, "not_image": 2, "empty": 1, "too_large": 1,
                               "too_small": 1, "symlink_loop": 3, "unreadable": 1,
                               "duplicate": 1}
    for name, trait in ODD.items():
        assert trait in by_name[name].kind.split(","), (name, by_name[name])
    assert report.converted["grayscale"] == 1 and report.converted["cmyk"] == 1
    assert report.converted["animated"] == 1 and report.converted["exif_rotated"] == 1
    assert report.class_counts == {"cat": 4 + 4, "dog": 4 + 4}
    assert len(report.decode_paths) == 16 and report.num_files == 24  # loops are not files
    assert report.duplicates == ((str(messy / "cat" / "ok0.jpg"),
                                  str(messy / "dog" / "copy.jpg")),)
    assert "truncated.jpg" in report.summary()


def test_odd_files_decode_as_upright_three_channel_images(messy, tmp_path):
    report = scan(messy, normalized_dir=tmp_path / "norm")
    for name in ODD:
        folder = "cat" if (messy / "cat" / name).exists() else "dog"
        image = decode_image(report.decode_paths[str(messy / folder / name)], (32, 32))
        assert image.shape == (32, 32, 3)
    rotated = str(messy / "cat" / "rotated.jpg")
    decoded = decode_image(report.decode_paths[rotated], (24, 16)).numpy()
    upright = np.asarray(ImageOps.exif_transpose(Image.open(rotated)).convert("RGB"))
    assert upright.shape == (24, 16, 3)  # 24 wide on disk, 24 tall once rotated
    assert np.abs(decoded - upright).max() <= 1
    # 16-bit data is rescaled, not clipped to white.
    deep = decode_image(report.decode_paths[str(messy / "dog" / "deep.png")], (16, 24))
    assert 60 < float(np.mean(deep)) < 200


def test_training_survives_the_messy_folder_and_report_is_json(messy, tmp_path, capsys):
    splits = load_data(messy, image_size=16, batch_size=4, val_split=0.25, seed=0,
                       normalized_dir=tmp_path / "norm")
    assert "skipped" in capsys.readouterr().out
    assert splits.counts == {"train": 12, "val": 4}
    assert not set(splits.train_files) & splits.scan_report.skipped
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    history = model.fit(splits.train, validation_data=splits.val, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    out = tmp_path / "run" / "scan.json"
    splits.scan_report.to_json(out)
    saved = json.loads(out.read_text())
    assert saved["rejected"]["corrupt"] == 1 and len(saved["problems"]) >= 17
    assert not list(out.parent.glob("*.tmp"))


def test_header_guard_and_class_warnings(tmp_path):
    for c, n in (("big", 12), ("small", 2)):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(n):
            _rgb(40, 40).save(tmp_path / "d" / c / f"{i}.png")
    (tmp_path / "d" / "none").mkdir()
    report = scan(tmp_path / "d", normalized_dir=tmp_path / "n", max_pixels=1000)
    assert report.rejected == {"too_large": 14}
    report = scan(tmp_path / "d", normalized_dir=tmp_path / "n")
    kinds = {p.kind: p for p in report.problems}
    assert kinds["small_class"].path == "small" and kinds["empty_class"].path == "none"
    assert "big: 0.58" in kinds["imbalance"].reason  # 14 / (2 * 12)
    assert report.class_weights == pytest.approx({"big": 14 / 24, "small": 14 / 4})


def test_one_class_or_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "one" / "cat").mkdir(parents=True)
    _rgb().save(tmp_path / "one" / "cat" / "a.jpg")
    with pytest.raises(DataError, match="1 class.*'cat'.*at least 2"):
        load_data(tmp_path / "one", image_size=16, normalized_dir=tmp_path / "n")
    (tmp_path / "none" / "cat").mkdir(parents=True)
    (tmp_path / "none" / "cat" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="no usable images"):
        load_data(tmp_path / "none", image_size=16, normalized_dir=tmp_path / "n")
    with pytest.raises(DataError, match="not a folder"):
        scan(tmp_path / "nope")


# --- special files, links leaving the folder, what TF cannot decode ------------------

def _hostile_folder(root):
    """A two-class folder with a FIFO, a link to /dev/zero, a link leaving the folder,
    an ICO (a format Pillow knows but is not allowed to parse) and a text file .jpg."""
    folder = make_image_folder(root / "data", per_class=3, size=16)
    outside = make_image_folder(root / "outside", classes=("red",), per_class=1, size=16,
                                seed=1)
    os.mkfifo(os.path.join(folder, "red", "pipe.jpg"))
    os.symlink("/dev/zero", os.path.join(folder, "red", "zero.png"))
    os.symlink(os.path.join(outside, "red", "0.png"), os.path.join(folder, "blue", "x.png"))
    Image.new("RGB", (16, 16)).save(os.path.join(folder, "blue", "icon.ico"))
    with open(os.path.join(folder, "blue", "notes.jpg"), "w") as f:
        f.write("not an image")
    return folder


def test_the_scan_skips_special_files_outside_links_and_unallowed_formats(tmp_path):
    folder = _hostile_folder(tmp_path)
    report = scan(folder, normalized_dir=tmp_path / "norm")
    kinds = {os.path.basename(p.path): p.kind for p in report.problems if p.path}
    assert kinds["pipe.jpg"] == "not_regular" and "FIFO" in str(report.problems)
    assert kinds["zero.png"] == "outside_link" and kinds["x.png"] == "outside_link"
    assert kinds["icon.ico"] == "not_image" and kinds["notes.jpg"] == "not_image"
    assert len(report.decode_paths) == 6
    followed = scan(folder, normalized_dir=tmp_path / "norm", follow_links=True)
    kinds = {os.path.basename(p.path): p.kind for p in followed.problems if p.path}
    assert kinds["zero.png"] == "not_regular"  # a device: refused, not read forever
    assert len(followed.decode_paths) == 7  # the outside image, when asked
    assert cli.main(["scan", folder, "--follow-links"]) == 0
    assert cli.main(["scan", folder, "--workers", "0"]) == 2


def test_a_file_tf_cannot_decode_is_normalised_by_the_scan(tmp_path, monkeypatch):
    scan_module = importlib.import_module("transferkit.data.scan")  # not data.scan()

    folder = make_image_folder(tmp_path / "data", per_class=2, size=16)
    odd = os.path.join(folder, "red", "0.png")
    odd_bytes = open(odd, "rb").read()
    real = scan_module.tf_decodes
    # Stands in for a file Pillow reads and TF refuses (which varies by TF build).
    monkeypatch.setattr(scan_module, "tf_decodes",
                        lambda data: data != odd_bytes and real(data))
    report = scan_module.scan(folder, normalized_dir=tmp_path / "norm")
    assert report.decode_paths[odd] != odd and "tf_undecodable" in report.converted
    assert decode_image(report.decode_paths[odd], (16, 16)).shape == (16, 16, 3)
