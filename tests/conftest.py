"""Shared test setup: quiet TF logs, seed everything, and a tiny image folder factory."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Feature caches and normalised image copies go to a throwaway folder, not ~/.cache.
import tempfile  # noqa: E402

os.environ["TRANSFERKIT_CACHE"] = tempfile.mkdtemp(prefix="transferkit-test-cache-")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    # Every test starts from the same random state, so failures reproduce.
    keras.utils.set_random_seed(0)
    yield
    # free_memory=False: a full gc.collect() per test costs ~1 s and buys nothing here.
    keras.backend.clear_session(free_memory=False)


def make_image_folder(root, classes=("red", "blue"), per_class=12, size=40, seed=0,
                      fmt="png"):
    """Write a separable colour-coded image folder: one subfolder per class."""
    rng = np.random.default_rng(seed)
    named = {"red": 0, "green": 1, "blue": 2}
    channel = {name: named.get(name, i % 3) for i, name in enumerate(classes)}
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)).astype("uint8")
            pixels[..., channel[name]] += 180
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.{fmt}"))
    return str(root)


def backbone_params(names, max_operations, one_per_family=False):
    """pytest parameters over backbone `names`, the heavy ones marked slow.

    Heavy, from the registry: more operations than `max_operations`
    (`BackboneSpec.operations`, what building it costs; 0, unknown, counts as heavy).
    one_per_family=True keeps each family's lightest member in the default run all the
    same, so every family is tested there. Each test file picks its budget for what
    one entry costs it; `-m slow` runs the rest.
    """
    from transferkit.models.registry import get_spec

    specs = [get_spec(name) for name in names]
    light = {spec.name for spec in specs if 0 < spec.operations <= max_operations}
    if one_per_family:
        cost = lambda spec: spec.operations or float("inf")  # noqa: E731
        for family in {spec.family for spec in specs}:
            light.add(min((s for s in specs if s.family == family), key=cost).name)
    return [name if get_spec(name).name in light else pytest.param(name, marks=pytest.mark.slow)
            for name in names]


@pytest.fixture
def image_folder(tmp_path):
    """A two-class separable folder of 40x40 PNGs (12 per class)."""
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def splits(image_folder):
    """`load_data` of `image_folder` at 32 px, batches of 8."""
    from transferkit.data.load import load_data

    return load_data(image_folder, image_size=32, batch_size=8, seed=0, verbose=False)


@pytest.fixture
def calls(monkeypatch):
    """Counts passes of a backbone over a dataset (calls of extract_features)."""
    from transferkit.training.cache import extract

    count = {"n": 0}
    real = extract.extract_features

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, "extract_features", counting)
    return count


# Segmentation masks: background, then the classes "red" and "green".
SEG_COLOURS = np.array([[20, 20, 20], [230, 40, 40], [40, 230, 40]], dtype=np.uint8)


def make_seg_folder(root, count=12, size=32, seed=0, classes=True):
    """images/ and masks/ with 1-2 axis-aligned boxes of classes 1-2 per image (PNG,
    `SEG_COLOURS` plus noise), and classes.txt unless classes=False; returns root."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        for cls in (1, 2)[:1 + i % 2]:
            y, x = rng.integers(0, size // 2, 2)
            h, w = rng.integers(size // 4, size // 2, 2)
            mask[y:y + h, x:x + w] = cls
        pixels = SEG_COLOURS[mask] + rng.integers(0, 15, (size, size, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "images", f"{i:02d}.png"))
        Image.fromarray(mask).save(os.path.join(root, "masks", f"{i:02d}.png"))
    if classes:
        with open(os.path.join(root, "classes.txt"), "w") as f:
            f.write("background\nred\ngreen\n")
    return str(root)
