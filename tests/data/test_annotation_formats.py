"""Annotation formats: Pascal VOC, COCO JSON and YOLO, each malformed input a DataError
or a problem naming file and line (or annotation id)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from transferkit.core.errors import DataError
from transferkit.data.annotations import YoloSplit, read_objects, sniff, split_sources


def _image(path, width=40, height=20):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)
    return str(path)


def _by_name(problems):
    return {(os.path.basename(p.path), p.kind): p for p in problems}


# --- Pascal VOC -------------------------------------------------------------------------

def _voc(root, name, body, image="a.png", size=(40, 20)):
    os.makedirs(root / "Annotations", exist_ok=True)
    xml = (f"<annotation><filename>{image}</filename><size><width>{size[0]}</width>"
           f"<height>{size[1]}</height></size>{body}</annotation>")
    (root / "Annotations" / name).write_text(xml)


def _obj(label, x0, y0, x1, y1):
    return (f"<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def test_voc_objects_corners_and_background(tmp_path):
    _image(tmp_path / "JPEGImages" / "a.png")
    _image(tmp_path / "JPEGImages" / "b.png", 20, 20)
    _voc(tmp_path, "a.xml", _obj("cat", 1, 1, 20, 10) + _obj("dog", 21, 11, 40, 20))
    _voc(tmp_path, "b.xml", "", image="b.png", size=(20, 20))
    paths, labels, problems, names = read_objects(tmp_path)
    assert problems == [] and names is None
    assert [os.path.basename(p) for p in paths] == ["a.png", "b.png"]
    # 1-based inclusive corners: pixels 1..20 of 40 are the left half.
    assert [(o.label, o.box) for o in labels[0].objects] == [
        ("cat", (0.0, 0.0, 0.5, 0.5)), ("dog", (0.5, 0.5, 1.0, 1.0))]
    assert labels[0].objects[1].where == f"{tmp_path / 'Annotations' / 'a.xml'} object 2"
    assert labels[1].objects == ()


def test_voc_problems_name_the_xml_and_object(tmp_path):
    for name in ("a", "b", "c", "d"):
        _image(tmp_path / "JPEGImages" / f"{name}.png")
    _voc(tmp_path, "a.xml", _obj("cat", 1, 1, 20, 10) + "<object><name>x</name></object>")
    _voc(tmp_path, "b.xml", _obj("cat", 1, 1, "ten", 10), image="b.png")
    _voc(tmp_path, "c.xml", _obj("cat", 1, 1, 20, 10), image="c.png", size=(20, 40))
    _voc(tmp_path, "d.xml", _obj("cat", 1, 1, 20, 10), image="gone.png")
    (tmp_path / "Annotations" / "e.xml").write_text("<other/>")
    (tmp_path / "Annotations" / "f.xml").write_text("<annotation><filename>")
    paths, labels, problems, _ = read_objects(tmp_path)
    assert [os.path.basename(p) for p in paths] == ["c.png"]
    found = _by_name(problems)
    xml = tmp_path / "Annotations"
    assert found[("a.png", "bad_annotation")].reason == f"{xml / 'a.xml'} object 2: the " \
        "object has no <bndbox>"
    assert "numeric" in found[("b.png", "bad_annotation")].reason
    assert "'ten'" in found[("b.png", "bad_annotation")].reason
    assert found[("c.png", "size_mismatch")].action == "warning"
    assert "'gone.png' is not an image" in found[("d.xml", "missing_image")].reason
    assert "root element <other>" in found[("e.xml", "bad_annotation")].reason
    assert "not a usable XML" in found[("f.xml", "bad_annotation")].reason


@pytest.mark.parametrize("xml", [
    # billion laughs (entity expansion)
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
    "<annotation><filename>a.png</filename><object><name>&y;</name></object></annotation>",
    # external entity
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    "<annotation><filename>&e;</filename></annotation>",
])
def test_voc_refuses_xml_entities(tmp_path, xml):
    _image(tmp_path / "JPEGImages" / "a.png")
    os.makedirs(tmp_path / "Annotations")
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    paths, _, problems, _ = read_objects(tmp_path)
    assert paths == []
    assert [p.kind for p in problems] == ["bad_annotation"]
    assert "Forbidden" in problems[0].reason


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_voc_fifo_annotation_is_reported(tmp_path):
    _image(tmp_path / "JPEGImages" / "a.png")
    _voc(tmp_path, "a.xml", _obj("cat", 1, 1, 20, 10))
    os.mkfifo(tmp_path / "Annotations" / "pipe.xml")
    paths, _, problems, _ = read_objects(tmp_path)
    assert len(paths) == 1 and [p.kind for p in problems] == ["not_regular"]


# --- COCO -------------------------------------------------------------------------------

def _coco(tmp_path, images=None, annotations=None, categories=None, **extra):
    data = {"images": images if images is not None else
            [{"id": 1, "file_name": "a.png", "width": 40, "height": 20}],
            "annotations": annotations if annotations is not None else [],
            "categories": categories if categories is not None else
            [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}], **extra}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _ann(id, bbox, category=5, image=1, **extra):
    return {"id": id, "image_id": image, "category_id": category, "bbox": bbox, **extra}


def test_coco_boxes_names_in_id_order_crowds_and_folders(tmp_path):
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "b.png")
    _image(tmp_path / "images" / "c.png")
    images = [{"id": i, "file_name": f"{n}.png"} for i, n in enumerate("abc", 1)]
    path = _coco(tmp_path, images=images, annotations=[
        _ann(1, [0, 0, 20, 10]), _ann(2, [20, 10, 20, 10], category=2),
        _ann(3, [0, 0, 40, 20], iscrowd=1),                 # left out of a.png
        _ann(4, [0, 0, 40, 20], image=2, iscrowd=1)])       # b.png: crowd only
    paths, labels, problems, names = read_objects(path)
    assert names == ("dog", "cat")  # category ids 2, 5
    assert [os.path.basename(p) for p in paths] == ["a.png", "c.png"]
    assert [(o.label, o.box) for o in labels[0].objects] == [
        ("cat", (0.0, 0.0, 0.5, 0.5)), ("dog", (0.5, 0.5, 1.0, 1.0))]
    assert labels[0].objects[0].where == f"{path} annotation id 1"
    assert labels[1].objects == ()  # no annotations: an image without objects
    assert [(os.path.basename(p.path), p.kind) for p in problems] == [
        ("b.png", "bad_annotation")]
    assert "only crowd annotations" in problems[0].reason
    # The COCO layout annotations/instances_x.json + x/ reads from the folder too.
    os.makedirs(tmp_path / "coco" / "annotations")
    os.makedirs(tmp_path / "coco" / "val")
    _image(tmp_path / "coco" / "val" / "a.png")
    (tmp_path / "coco" / "annotations" / "instances_val.json").write_text(
        path.read_text())
    assert sniff(tmp_path / "coco")[0] == "coco"
    assert read_objects(tmp_path / "coco")[0] == [str(tmp_path / "coco" / "val" / "a.png")]


def test_coco_entry_problems_name_the_annotation_id(tmp_path):
    for n in "abc":
        _image(tmp_path / f"{n}.png")
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"},
              {"id": 3, "file_name": "c.png"}, {"id": 4, "file_name": "gone.png"},
              {"file_name": "x.png"}, {"id": 1, "file_name": "c.png"}]
    path = _coco(tmp_path, images=images, annotations=[
        _ann(1, [0, 0, 20, 10], category=99),          # unknown category: left out
        _ann(2, [0, 0, "wide", 10], image=2),          # bad bbox: b.png left out
        _ann(3, [0, 0, 20, 10], image=42),             # no such image
        _ann(4, [0, 0, 20, 10], image=3, iscrowd=7),   # bad iscrowd
        "not an object"])
    paths, labels, problems, _ = read_objects(path)
    assert [os.path.basename(p) for p in paths] == ["a.png"]
    assert labels[0].objects == ()
    reasons = [p.reason for p in problems]
    expected = [f"{path} image id 4: file_name 'gone.png' not found",
                f"{path} images[4]: an image needs an 'id' and a 'file_name'",
                f"{path} image id 1: the id is repeated",
                f"{path} annotation id 1: category_id 99 is not among the categories [2, 5]",
                f"{path} annotation id 2: bbox should be [x, y, width, height]",
                f"{path} annotation id 3: image_id 42 is not among the images",
                f"{path} annotation id 4: iscrowd should be 0 or 1",
                f"{path} annotations[4]: not an object"]
    for text in expected:
        assert sum(r.startswith(text) for r in reasons) == 1, (text, reasons)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ("[1, 2]", "received a list"),
    ('{"images": [], "annotations": []}', "needs a list 'categories'"),
    ('{"images": [], "annotations": [], "categories": [{"id": "1", "name": "a"}]}',
     r"categories\[0\] should be an object with an integer 'id'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, '
     '{"id": 1, "name": "b"}]}', "repeats category id 1"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, '
     '{"id": 2, "name": "a"}]}', "several categories are named 'a'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}], "x": '
     + "1" * 5000 + "}", "not valid JSON"),
])
def test_coco_structure_errors_are_data_errors(tmp_path, text, match):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(DataError, match=match):
        read_objects(tmp_path / "c.json")


# --- YOLO -------------------------------------------------------------------------------

def _yolo_image(root, split, name, rows, size=(40, 20)):
    _image(root / "images" / split / f"{name}.png", *size)
    if rows is not None:
        os.makedirs(root / "labels" / split, exist_ok=True)
        (root / "labels" / split / f"{name}.txt").write_text(rows)


def test_yolo_splits_names_polygons_and_missing_labels(tmp_path):
    _yolo_image(tmp_path, "train", "a", "0 0.25 0.25 0.5 0.5\n\n1 0.75 0.75 0.5 0.5\n")
    _yolo_image(tmp_path, "train", "b", "1 0.5 0.0 1.0 0.0 1.0 1.0 0.5 1.0\n")  # polygon
    _yolo_image(tmp_path, "train", "c", None)                                    # no label
    _yolo_image(tmp_path, "train", "d", "")                                      # empty
    _yolo_image(tmp_path, "val", "e", "0 0.5 0.5 1 1\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                        "nc: 2\nnames: {0: cat, 1: dog}\n")
    paths, labels, problems, names = read_objects(tmp_path)
    assert names == ("cat", "dog")
    assert [os.path.basename(p) for p in paths] == ["a.png", "b.png", "c.png", "d.png"]
    assert [(o.label, o.box) for o in labels[0].objects] == [
        ("cat", (0.0, 0.0, 0.5, 0.5)), ("dog", (0.5, 0.5, 1.0, 1.0))]
    assert labels[0].objects[1].where == f"{tmp_path / 'labels' / 'train' / 'a.txt'} line 3"
    assert labels[1].objects[0].box == (0.5, 0.0, 1.0, 1.0)
    assert labels[2].objects == () and labels[3].objects == ()
    assert [(os.path.basename(p.path), p.kind) for p in problems] == [
        ("c.png", "no_label_file")]
    splits = split_sources(tmp_path / "data.yaml")
    assert splits == {"train": YoloSplit(str(tmp_path / "data.yaml"), "train"),
                      "val": YoloSplit(str(tmp_path / "data.yaml"), "val")}
    val = read_objects(splits["val"])
    assert [os.path.basename(p) for p in val[0]] == ["e.png"]
    assert split_sources(splits["val"]) is None
    (tmp_path / "boxes.csv").write_text("images/train/a.png\n")
    assert split_sources(tmp_path / "boxes.csv") is None


def test_yolo_roboflow_layout_and_folder_without_yaml(tmp_path):
    # Roboflow: train/images, train/labels and `train: ../train/images` in data.yaml.
    _image(tmp_path / "rf" / "train" / "images" / "a.png")
    os.makedirs(tmp_path / "rf" / "train" / "labels")
    (tmp_path / "rf" / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "rf" / "data.yaml").write_text("train: ../train/images\nnames: [cat]\n")
    assert read_objects(tmp_path / "rf" / "data.yaml")[1][0].objects[0].label == "cat"
    # images/ + labels/ alone: classes named by index, up to the largest found.
    _yolo_image(tmp_path / "plain", "", "a", "2 0.5 0.5 0.5 0.5\n")
    paths, labels, problems, names = read_objects(tmp_path / "plain")
    assert names == ("0", "1", "2") and labels[0].objects[0].label == "2"
    (tmp_path / "plain" / "classes.txt").write_text("cat\ndog\n")
    _, labels, problems, names = read_objects(tmp_path / "plain")
    assert names == ("cat", "dog") and labels[0].objects == ()
    assert [p.kind for p in problems] == ["unknown_class"]
    assert "class index 2 is not among the 2 names" in problems[0].reason


def test_yolo_label_problems_name_file_and_line(tmp_path):
    _yolo_image(tmp_path, "", "a", "0 0.5 0.5 0.5\n")
    _yolo_image(tmp_path, "", "b", "0 0.5 0.5 0.5 0.5\n1.5 0.5 0.5 0.5 0.5\n")
    _yolo_image(tmp_path, "", "c", "0 0.5 0.5 nan 0.5\n")
    _yolo_image(tmp_path, "", "d", "0 0.5 0.5 -0.2 0.5\n0 1.2 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [cat]\n")
    paths, labels, problems, _ = read_objects(tmp_path)
    assert [os.path.basename(p) for p in paths] == ["d.png"]
    label = tmp_path / "labels"
    found = _by_name(problems)
    assert found[("a.png", "bad_annotation")].reason.startswith(
        f"{label / 'a.txt'} line 1: a row should be `class cx cy w h`")
    assert found[("b.png", "bad_annotation")].reason.startswith(
        f"{label / 'b.txt'} line 2: the class should be an index")
    assert "not a finite number" in found[("c.png", "bad_annotation")].reason
    assert labels[0].objects == ()
    d = [p.reason for p in problems if p.path.endswith("d.png")]
    assert len(d) == 2 and "inverted box" in d[0] and "lies outside the image" in d[1]


@pytest.mark.parametrize("text, match", [
    ("train: [unclosed", "not valid YAML"),
    ("- a\n- b\n", "received a list"),
    ("train: images\nnames: {0: a, 2: b}\n", "keys 0..1"),
    ("train: images\nnames: [a, b]\nnc: 3\n", "nc=3 but 'names' lists 2"),
    ("train: images\nnames: [a, a]\n", "repeats a name"),
    ("train: images\nnames: [[a]]\n", "class names should be text"),
    ("val: images\nnames: [a]\n", "names no 'train' images"),
    ("train: nowhere\nnames: [a]\n", "'train' images .* do not exist"),
    ("train: [3]\nnames: [a]\n", "should be a path or a list of paths"),
    ("a: &a [1, 1]\nb: &b [*a, *a]\nc: &c [*b, *b]\ntrain: images\nnames: *c\n",
     "class names should be text"),
])
def test_yolo_yaml_errors_are_data_errors(tmp_path, text, match):
    os.makedirs(tmp_path / "images")
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(DataError, match=match):
        read_objects(tmp_path / "data.yaml")


def test_sniffing_names_the_accepted_sources(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DataError, match="unknown suffix.*COCO JSON.*YOLO.*VOC"):
        read_objects(tmp_path / "notes.md")
    with pytest.raises(DataError, match="holds no annotations"):
        read_objects(tmp_path)
    os.makedirs(tmp_path / "annotations")
    (tmp_path / "annotations" / "a.json").write_text("{}")
    (tmp_path / "annotations" / "b.json").write_text("{}")
    with pytest.raises(DataError, match="several JSON files"):
        read_objects(tmp_path)
