"""Annotations: the boxes CSV, box checks, guarded reads and padding."""

import os
import threading

import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy import ndimage

from conftest import (DETECTION_CLASSES, DETECTION_COLOURS, DETECTION_FORMATS,
                      make_detection_folder)

from transferkit.core.errors import DataError
from transferkit.data.annotations import (MAX_BOXES, ImageObjects, Obj, check_rows,
                                          choose_max_boxes, drop_unknown, pad_objects,
                                          read_objects)


def _image(path, width, height, orientation=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(np.full((height, width, 3), 90, np.uint8))
    if orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, exif=exif)
    return path


def _csv(tmp_path, text, name="boxes.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _kinds(problems):
    return sorted(p.kind for p in problems)


def test_csv_rows_become_objects_normalised_by_each_images_own_size(tmp_path):
    _image(tmp_path / "img" / "a.png", 64, 32)
    _image(tmp_path / "img" / "b.png", 40, 80)
    _image(tmp_path / "img" / "c.png", 20, 20)
    path = _csv(tmp_path, "path,label,xmin,ymin,xmax,ymax\n"
                "img/a.png,cat,0,0,32,16\n"
                "img/b.png,dog,10,20,30,60\n"
                "img/a.png,dog,16,8,64,32\n"
                "img/c.png,,,,,\n")
    paths, labels, problems, names = read_objects(path)
    assert problems == [] and names is None
    assert paths == [str(tmp_path / "img" / n) for n in ("a.png", "b.png", "c.png")]
    a, b, c = labels
    assert [o.label for o in a.objects] == ["cat", "dog"]
    assert a.objects[0].box == (0.0, 0.0, 0.5, 0.5)
    assert a.objects[1].box == (0.25, 0.25, 1.0, 1.0)
    assert a.objects[1].where == f"{path} line 4" and a.where == f"{path} line 2"
    assert b.objects == (Obj("dog", (0.25, 0.25, 0.75, 0.75), f"{path} line 3"),)
    assert c == ImageObjects((), f"{path} line 5")  # a background image
    # A folder holding boxes.csv reads as that CSV.
    assert read_objects(tmp_path)[1] == labels


def test_boxes_are_in_pixels_of_the_upright_image(tmp_path):
    # Stored 60x20 with EXIF orientation 6 (a quarter turn): viewers and the pipeline
    # show it 20 wide and 60 high, so the box normalises by 20 and 60.
    _image(tmp_path / "turned.jpg", 60, 20, orientation=6)
    path = _csv(tmp_path, "turned.jpg,x,0,0,10,30\n")
    _, labels, problems, _ = read_objects(path)
    assert problems == []
    assert labels[0].objects[0].box == (0.0, 0.0, 0.5, 0.5)


def test_box_checks_name_file_and_line_and_keep_the_image(tmp_path):
    _image(tmp_path / "a.png", 40, 20)
    path = _csv(tmp_path, "a.png,in,0,0,40,20\n"        # line 1: whole image
                "a.png,slack,-0.5,0,40.8,20\n"            # 2: within a pixel: silent
                "a.png,part,-10,5,20,30\n"                # 3: partly out: clipped
                "a.png,out,50,0,60,10\n"                  # 4: wholly out
                "a.png,empty,5,5,5,10\n"                  # 5: zero width
                "a.png,inverted,30,5,10,10\n")            # 6: xmax < xmin
    paths, labels, problems, _ = read_objects(path)
    assert paths == [str(tmp_path / "a.png")]
    objects = {o.label: o.box for o in labels[0].objects}
    assert objects == {"in": (0.0, 0.0, 1.0, 1.0), "slack": (0.0, 0.0, 1.0, 1.0),
                       "part": (0.0, 0.25, 0.5, 1.0)}
    by_line = {p.reason.split(":")[0]: p for p in problems}
    assert sorted(by_line) == [f"{path} line {n}" for n in (3, 4, 5, 6)]
    assert by_line[f"{path} line 3"].kind == "box_clipped"
    assert "outside the 40x20 image" in by_line[f"{path} line 4"].reason
    assert "empty box" in by_line[f"{path} line 5"].reason
    assert "inverted box" in by_line[f"{path} line 6"].reason
    assert all(p.action == "warning" and p.path == str(tmp_path / "a.png")
               for p in problems)


def test_unreadable_listings_skip_their_image_and_say_why(tmp_path):
    for name in ("ok", "bad_number", "cells", "nolabel", "nan"):
        _image(tmp_path / f"{name}.png", 16, 16)
    path = _csv(tmp_path, "ok.png,a,1,1,8,8\n"
                "bad_number.png,a,1,1,x,8\n"
                "bad_number.png,a,1,1,8,8\n"
                "cells.png,a,1,1,8\n"
                "nolabel.png,,1,1,8,8\n"
                "nan.png,a,1,1,nan,8\n"
                "missing.png,a,1,1,8,8\n")
    paths, labels, problems, _ = read_objects(path)
    assert paths == [str(tmp_path / "ok.png")]
    reasons = {os.path.basename(p.path): (p.kind, p.reason) for p in problems}
    assert reasons["bad_number.png"][0] == "bad_annotation"
    assert reasons["bad_number.png"][1].startswith(f"{path} line 2:")
    assert "'x'" in reasons["bad_number.png"][1]
    assert "received 5 cells" in reasons["cells.png"][1]
    assert "no class label" in reasons["nolabel.png"][1]
    assert "not a finite number" in reasons["nan.png"][1]
    assert reasons["missing.png"][0] == "unreadable"
    assert all(p.action == "skipped" for p in problems)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_listed_fifo_is_reported_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    _image(tmp_path / "ok.png", 16, 16)
    path = _csv(tmp_path, "pipe.png,a,1,1,8,8\nok.png,a,1,1,8,8\n")
    found = {}
    reader = threading.Thread(target=lambda: found.update(out=read_objects(path)),
                              daemon=True)  # a blocked open must not hang the run
    reader.start()
    reader.join(timeout=60)
    assert "out" in found, "read_objects blocked on a FIFO"
    paths, _, problems, _ = found["out"]
    assert paths == [str(tmp_path / "ok.png")]
    assert [(p.kind, p.path) for p in problems] == [("not_regular",
                                                     str(tmp_path / "pipe.png"))]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_the_csv_itself_is_a_data_error(tmp_path):
    os.mkfifo(tmp_path / "boxes.csv")
    with pytest.raises(DataError, match="not a regular file"):
        read_objects(tmp_path / "boxes.csv")


def test_files_that_are_not_csv_text_are_data_errors(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"caf\xe9.png,a,1,1,2,2\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_objects(tmp_path / "latin.csv")
    (tmp_path / "quote.csv").write_text('a.png,"unterminated\n' + "x" * 200_000)
    with pytest.raises(DataError, match="quote.csv line"):
        read_objects(tmp_path / "quote.csv")
    with pytest.raises(DataError, match="does not exist"):
        read_objects(tmp_path / "nowhere")
    with pytest.raises(DataError, match="Received: list"):
        read_objects([1, 2])


def test_unknown_classes_are_left_out_with_a_warning(tmp_path):
    labels = [ImageObjects((Obj("cat", (0, 0, 1, 1), "f line 1"),
                            Obj("cow", (0, 0, 1, 1), "f line 2")), "f line 1")]
    kept, problems = drop_unknown(["a.png"], labels, ["cat", "dog"])
    assert [o.label for o in kept[0].objects] == ["cat"]
    assert [(p.path, p.kind) for p in problems] == [("a.png", "unknown_class")]
    assert problems[0].reason.startswith("f line 2: class 'cow'")


def _objects(*boxes, label="a"):
    return ImageObjects(tuple(Obj(label, b, f"line {i}") for i, b in enumerate(boxes)))


def test_pad_objects_rows_padding_and_largest_kept():
    small, big, mid = (0, 0, 0.1, 0.1), (0, 0, 0.9, 0.9), (0.5, 0.5, 0.8, 0.8)
    labels = [_objects(small, big, mid), _objects(), _objects(mid, label="b")]
    rows = pad_objects(labels, ["a", "b"])
    assert rows.shape == (3, 3, 5) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[0, :, 1:], [small, big, mid])
    assert rows[0, :, 0].tolist() == [0, 0, 0]
    assert rows[1, :, 0].tolist() == [-1, -1, -1] and not rows[1, :, 1:].any()
    assert rows[2, :, 0].tolist() == [1, -1, -1]
    # Over max_boxes: the largest objects stay, in their listed order.
    two = pad_objects(labels, ["a", "b"], max_boxes=2)
    np.testing.assert_allclose(two[0, :, 1:], [big, mid])
    with pytest.raises(DataError, match="class 'b' is not one of"):
        pad_objects(labels, ["a"])
    with pytest.raises(DataError, match="max_boxes=0"):
        pad_objects(labels, ["a", "b"], max_boxes=0)


def test_max_boxes_is_the_datas_maximum_capped_with_a_warning():
    many = _objects(*[(0, 0, 0.1, 0.1)] * (MAX_BOXES + 5))
    assert choose_max_boxes([_objects(), _objects((0, 0, 1, 1))]) == (1, [])
    assert choose_max_boxes([_objects()]) == (1, [])  # all background: one padded row
    size, problems = choose_max_boxes([many, _objects()], paths=["crowd.png", "x.png"])
    assert size == MAX_BOXES
    assert [(p.path, p.kind) for p in problems] == [("crowd.png", "too_many_boxes")]
    assert f"{MAX_BOXES + 5} objects" in problems[0].reason


def _objects_from_pixels(path):
    """Sorted (class, normalised box) of every object in an image, found from its
    pixels alone: each class has one exact colour, objects never touch."""
    with Image.open(path) as img:
        pixels = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    height, width = pixels.shape[:2]
    found = []
    for name, colour in zip(DETECTION_CLASSES, DETECTION_COLOURS):
        parts, _ = ndimage.label((pixels == colour).all(axis=-1), np.ones((3, 3)))
        for rows, cols in ndimage.find_objects(parts):
            found.append((name, (cols.start / width, rows.start / height,
                                 cols.stop / width, rows.stop / height)))
    return sorted(found)


def test_all_four_formats_read_to_the_objects_in_the_pixels(tmp_path):
    read = {}
    for fmt in DETECTION_FORMATS:
        source = make_detection_folder(tmp_path / fmt, count=10, size=40, seed=3, fmt=fmt)
        paths, labels, problems, names = read_objects(source)
        assert problems == [], (fmt, problems)
        assert names == {"coco": DETECTION_CLASSES, "yolo": DETECTION_CLASSES}.get(fmt)
        read[fmt] = {os.path.basename(p): (p, sorted((o.label, o.box) for o in l.objects))
                     for p, l in zip(paths, labels)}
    truth = {name: _objects_from_pixels(path) for name, (path, _) in read["csv"].items()}
    assert len(truth) == 10 and truth["000.png"] == []  # one background image
    assert sum(len(v) for v in truth.values()) >= 15
    for fmt, found in read.items():
        assert sorted(found) == sorted(truth), fmt
        for name, (_, objects) in found.items():
            assert [o[0] for o in objects] == [t[0] for t in truth[name]], (fmt, name)
            np.testing.assert_allclose(np.reshape([o[1] for o in objects], (-1, 4)),
                                       np.reshape([t[1] for t in truth[name]], (-1, 4)),
                                       atol=1e-9, err_msg=f"{fmt} {name}")


def test_check_rows_accepts_padded_rows_and_names_bad_ones():
    labels = [_objects((0.1, 0.1, 0.5, 0.5), label="b"), _objects()]
    rows = pad_objects(labels, ["a", "b"])
    np.testing.assert_array_equal(check_rows(rows, 2), rows)
    assert labels[0].classes == ("b",) and labels[1].classes == ()
    bad = rows.copy()
    bad[0, 0, 0] = 2
    with pytest.raises(DataError, match=r"image 0 row 0 has a bad class id .* 0..1"):
        check_rows(bad, 2)
    bad = rows.copy()
    bad[0, 0, 3] = 0.05  # xmax < xmin
    with pytest.raises(DataError, match="image 0 row 0 has a bad box"):
        check_rows(bad)
    with pytest.raises(DataError, match=r"Received shape \(2, 5\)"):
        check_rows(rows[:, 0])
    with pytest.raises(DataError, match="not finite"):
        check_rows(np.full((1, 1, 5), np.nan))
