"""recipes/make_detection_sample.py: the multi-object set tests and benchmarks train on."""

import importlib.util
from collections import Counter
from pathlib import Path

from PIL import Image

from transferkit.data.annotations import read_objects

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_detection_sample", ROOT / "recipes" / "make_detection_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_has_what_its_docstring_promises_and_regenerates(tmp_path):
    script = _script()
    csv_path = script.write_sample(tmp_path / "a", count=24, seed=5)
    paths, labels, problems, names = read_objects(csv_path)
    assert problems == [] and names is None and len(paths) == 24
    sizes = Counter(Image.open(p).size for p in paths)
    assert set(sizes) == set(script.SIZES)
    counts = [len(item.objects) for item in labels]
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) >= 3
    classes = Counter(o.label for item in labels for o in item.objects)
    assert set(classes) == set(script.CLASSES)
    for path, item in zip(paths, labels):
        width, height = Image.open(path).size
        pixels = [(o.box[0] * width, o.box[1] * height, o.box[2] * width,
                   o.box[3] * height) for o in item.objects]
        for i, (x0, y0, x1, y1) in enumerate(pixels):
            assert 8 <= max(x1 - x0, y1 - y0) <= 48, (path, i)
            for a0, b0, a1, b1 in pixels[i + 1:]:  # never touching: GAP px apart
                apart = (a0 >= x1 + 2 or x0 >= a1 + 2 or b0 >= y1 + 2 or y0 >= b1 + 2)
                assert apart, (path, i)
    again = script.write_sample(tmp_path / "b", count=24, seed=5)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) == 25
    for rel in files:
        assert (again.parent / rel).read_bytes() == (tmp_path / "a" / rel).read_bytes()
    other = script.write_sample(tmp_path / "c", count=3, seed=6)
    assert other.read_bytes() != (tmp_path / "a" / "boxes.csv").read_bytes()
