"""Property tests of the annotation readers: whatever a file holds, reading it gives a
clean listing (boxes normalised, inside the image, non-empty) or a DataError, never
another exception."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from transferkit.core.errors import DataError
from transferkit.data.annotations import ImageObjects, read_objects
from transferkit.data.scan import Problem

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# Values a field may hold: numbers of every kind, numeric-looking and odd text.
NUMBERS = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.sampled_from([0, 1, 20, 40, 0.5, -1, 1e308, 10**30]))
WORDS = st.sampled_from(["", "a.png", "b.png", "cat", "nan", "inf", "-0", "1e999",
                         "0x10", "1_0", " 3 ", "../a.png", "/dev/zero", "\x00", "é"])
CELL = st.one_of(NUMBERS.map(str), WORDS, st.text(max_size=8))
# Mostly plausible coordinates (pixels of the 40x20 test image, or normalised), so
# the box checks run, not only the parsers' refusals.
PIXEL = st.one_of(st.integers(-10, 50), st.floats(-10, 50), NUMBERS)
UNIT = st.one_of(st.floats(-0.5, 1.5), st.integers(-1, 2), NUMBERS)


def _often(valid, other):
    """`valid` about three times in four, else `other` (one_of would favour the
    simpler branch while shrinking and generating)."""
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda pick: valid if pick else other)


# (left, top, width, height): mostly a real box on the 40x20 image, at times anything.
XYWH = _often(st.tuples(st.integers(-5, 40), st.integers(-5, 20), st.integers(1, 30),
                        st.integers(1, 20)), st.tuples(*[PIXEL] * 4))
XYXY = XYWH.map(lambda v: (v[0], v[1], v[0] + v[2], v[1] + v[3]))


def _check(source):
    """read_objects(source) is a clean listing or a DataError."""
    try:
        paths, labels, problems, names = read_objects(source)
    except DataError:
        event("DataError")
        return
    event("objects" if any(item.objects for item in labels) else
          "problems" if problems else "listing")
    assert len(paths) == len(labels) == len(set(paths))
    assert all(isinstance(p, str) for p in paths)
    assert all(isinstance(p, Problem) for p in problems)
    assert names is None or all(isinstance(n, str) and n for n in names)
    for item in labels:
        assert isinstance(item, ImageObjects)
        for obj in item.objects:
            x0, y0, x1, y1 = obj.box
            assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0, obj
            assert isinstance(obj.label, str) and obj.label


def _folder():
    folder = tempfile.TemporaryDirectory()
    root = Path(folder.name)
    for sub in ("", "images", "JPEGImages"):
        os.makedirs(root / sub, exist_ok=True)
        Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(root / sub / "a.png")
    return folder, root


PLAUSIBLE_ROW = st.tuples(st.sampled_from(["a.png", "images/a.png", "b.png", ""]),
                          st.sampled_from(["cat", "dog", ""]),
                          XYXY.map(lambda v: [str(x) for x in v])).map(
    lambda row: [row[0], row[1], *row[2]])


@FUZZ
@given(st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(PLAUSIBLE_ROW, st.lists(CELL, max_size=8)), max_size=8).map(
        lambda rows: "\n".join(",".join(r) for r in rows))))
def test_any_csv_text_reads_cleanly_or_is_a_data_error(text):
    folder, root = _folder()
    with folder:
        (root / "boxes.csv").write_bytes(text.encode("utf-8", "replace"))
        _check(root / "boxes.csv")


@FUZZ
@given(st.binary(max_size=200))
def test_any_csv_bytes_read_cleanly_or_are_a_data_error(data):
    folder, root = _folder()
    with folder:
        (root / "boxes.csv").write_bytes(data)
        _check(root / "boxes.csv")


JSON = st.recursive(st.none() | st.booleans() | NUMBERS | WORDS,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["id", "name", "bbox"]), inner,
                                      max_size=3), max_leaves=12)


CATEGORIES = [{"id": 0, "name": "cat"}, {"id": 2, "name": "dog"}]
ANNOTATION = st.fixed_dictionaries({
    "id": st.integers(0, 5), "image_id": _often(st.just(1), st.integers(0, 3) | JSON),
    "category_id": _often(st.sampled_from([0, 2]), st.integers(0, 3) | JSON),
    "bbox": _often(XYWH.map(list), JSON)},
    optional={"iscrowd": _often(st.just(0), st.integers(0, 2) | JSON)})
# A plausible file (one image, its annotations) or one with any field anything.
COCO = _often(
    st.lists(ANNOTATION, max_size=5).map(lambda anns: {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 20}],
        "annotations": anns, "categories": CATEGORIES}),
    st.fixed_dictionaries({
        "images": _often(st.lists(st.fixed_dictionaries(
            {"id": _often(st.integers(0, 3), JSON),
             "file_name": _often(st.just("a.png"), WORDS | JSON)},
            optional={"width": NUMBERS, "height": NUMBERS}), max_size=3), JSON),
        "annotations": _often(st.lists(ANNOTATION | JSON, max_size=4), JSON),
        "categories": _often(st.just(CATEGORIES), st.lists(
            st.fixed_dictionaries({}, optional={"id": st.integers(0, 3) | JSON,
                                                "name": WORDS}) | JSON, max_size=3))}))


@FUZZ
@given(_often(COCO.map(json.dumps), JSON.map(json.dumps) | st.text(max_size=200)))
def test_any_coco_json_reads_cleanly_or_is_a_data_error(text):
    folder, root = _folder()
    with folder:
        (root / "c.json").write_bytes(text.encode("utf-8", "replace"))
        _check(root / "c.json")


XML_TEXT = st.one_of(NUMBERS.map(str), WORDS, st.text(alphabet="<>&;!x0 ", max_size=6))
XML_BOX = _often(XYXY.map(lambda v: [str(x + 1 if i < 2 else x) for i, x in enumerate(v)]),
                 st.tuples(*[XML_TEXT] * 4))


def _element(tag, inner):
    return inner.map(lambda body: f"<{tag}>{body}</{tag}>")


BNDBOX = _often(XML_BOX.map(lambda v: list(zip(
    ("xmin", "ymin", "xmax", "ymax"), v))), st.lists(st.tuples(st.sampled_from(
        ["xmin", "ymin", "xmax", "ymax", "x"]), XML_TEXT), max_size=5)).map(
    lambda kv: "<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in kv) + "</bndbox>")
OBJECT = _often(st.tuples(_element("name", st.sampled_from(["cat", "dog"])), BNDBOX),
                st.lists(st.one_of(_element("name", XML_TEXT), BNDBOX), max_size=3)).map(
    lambda parts: "<object>" + "".join(parts) + "</object>")
VOC = st.tuples(_often(_element("filename", st.just("a.png")), st.just("")),
                st.lists(_often(OBJECT, _element("size", XML_TEXT)), min_size=1,
                         max_size=4)).map(
    lambda parts: "<annotation>" + parts[0] + "".join(parts[1]) + "</annotation>")


@FUZZ
@given(_often(VOC, st.text(max_size=200) | st.binary(max_size=100)))
def test_any_voc_xml_reads_cleanly_or_is_a_data_error(content):
    folder, root = _folder()
    with folder:
        os.makedirs(root / "Annotations")
        data = content if isinstance(content, bytes) else content.encode("utf-8",
                                                                         "replace")
        (root / "Annotations" / "a.xml").write_bytes(data)
        _check(root)


LABEL_ROW = _often(
    st.tuples(st.integers(0, 2), _often(st.tuples(st.floats(0, 1), st.floats(0, 1),
                                                  st.floats(0.01, 1), st.floats(0.01, 1)),
                                        st.tuples(*[UNIT] * 4))).map(
        lambda v: " ".join(map(str, (v[0], *v[1])))),
    st.lists(st.one_of(NUMBERS.map(str), WORDS.filter(lambda w: w.strip())),
             max_size=9).map(" ".join))
YAML = _often(
    st.fixed_dictionaries({"train": _often(st.just("images"),
                                           st.sampled_from(["nowhere", "../images"])),
                           "names": _often(st.just(["cat", "dog"]),
                                           JSON | st.lists(WORDS, max_size=3))},
                          optional={"nc": _often(st.just(2), JSON),
                                    "path": _often(st.just("."), WORDS | JSON),
                                    "val": JSON}).map(json.dumps),  # JSON is YAML
    st.text(max_size=120))


@FUZZ
@given(YAML, _often(st.lists(LABEL_ROW, min_size=1, max_size=5).map("\n".join),
                   st.text(max_size=80)))
def test_any_yolo_yaml_and_labels_read_cleanly_or_are_a_data_error(yaml_text, label):
    folder, root = _folder()
    with folder:
        os.makedirs(root / "labels")
        (root / "labels" / "a.txt").write_bytes(label.encode("utf-8", "replace"))
        (root / "data.yaml").write_bytes(yaml_text.encode("utf-8", "replace"))
        _check(root / "data.yaml")
