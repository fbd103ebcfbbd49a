"""Shared test setup: quiet TF logs, seed everything, tiny image folder factories, the
tiny recipe every training test starts from, and artifacts built once per session."""

import fcntl
import functools
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Feature caches and normalised image copies go to a throwaway folder, not ~/.cache.
import tempfile  # noqa: E402

os.environ["TRANSFERKIT_CACHE"] = tempfile.mkdtemp(prefix="transferkit-test-cache-")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "sample")  # the shipped sample: 5 shape classes
# The shipped source checkpoint (compact_cnn pretrained on 10 other classes): features
# that separate the sample's shapes.
SOURCE = dict(backbone="compact_cnn", weights=os.path.join(REPO, "data",
                                                           "source_compact_cnn.keras"),
              image_size=64)
KNOWN = ("arrow", "crescent", "cross", "frame")  # the sample's 5th class, ring, is unknown


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


def make_linked_class_folder(root):
    """root/data with classes red and blue, plus green: a link to root/elsewhere/green, a
    folder outside the data folder (4 images of 16 px per class); returns root/data."""
    folder = make_image_folder(os.path.join(root, "data"), per_class=4, size=16)
    outside = make_image_folder(os.path.join(root, "elsewhere"), classes=("green",),
                                per_class=4, size=16)
    os.symlink(os.path.join(outside, "green"), os.path.join(folder, "green"))
    return folder


def backbone_params(names, max_operations, one_per_family=False, slow_per_family=False):
    """pytest parameters over backbone `names`, the heavy ones marked slow.

    Heavy, from the registry: more operations than `max_operations`
    (`BackboneSpec.operations`, what building it costs; 0, unknown, counts as heavy).
    one_per_family=True keeps each family's lightest member in the default run all the
    same, so every family is tested there. slow_per_family=True keeps, of each family's
    heavy members, only the lightest (a family's members come from one Keras builder,
    so its lightest heavy one stands for the graph shapes of the rest). Each test file
    picks its budget for what one entry costs it; `-m slow` runs the rest.
    """
    from transferkit.models.registry import get_spec

    specs = [get_spec(name) for name in names]
    cost = lambda spec: spec.operations or float("inf")  # noqa: E731
    light = {spec.name for spec in specs if 0 < spec.operations <= max_operations}
    if one_per_family:
        for family in {spec.family for spec in specs}:
            light.add(min((s for s in specs if s.family == family), key=cost).name)
    heavy = {spec.name for spec in specs if spec.name not in light}
    if slow_per_family:
        heavy = {min((s for s in specs if s.family == family and s.name in heavy),
                     key=cost).name
                 for family in {get_spec(name).family for name in heavy}}
    return [name if get_spec(name).name in light else
            pytest.param(name, marks=pytest.mark.slow)
            for name in names if get_spec(name).name in light | heavy]


# The recipe of a run that trains in seconds: the registered tiny backbone from random
# weights, small images, one head epoch and no fine-tuning, no augmentation, no report.
TINY_RECIPE = dict(backbone="tiny_test", weights="none", image_size=32, batch_size=8,
                   head_epochs=1, finetune_epochs=0, augment="none", report=False)


def tiny_recipe(data=None, **keys):
    """The `RecipeConfig` of `TINY_RECIPE` on `data` (a folder, CSV or split dict), with
    `keys` (flat recipe keys, e.g. finetune_epochs=1) over it."""
    from transferkit.training.recipe import RecipeConfig

    given = {} if data is None else {"data": os.fspath(data) if isinstance(
        data, os.PathLike) else data}
    return RecipeConfig.from_keys(**{**TINY_RECIPE, **given, **keys})


def trained_listing(monkeypatch, recipe, out_dir):
    """{real path: class name} of the files `app.train.train(recipe, out_dir)` fed to its
    training split's pipeline (`make_dataset` with training=True): what the model
    learnt from, whatever the listing said before."""
    from transferkit.app.train import train
    from transferkit.data import files, pipeline

    fed = []

    def spy(paths, labels, *, training, **kwargs):
        if training:
            fed.append((list(paths), np.argmax(labels, axis=-1)))
        return pipeline.make_dataset(paths, labels, training=training, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(files, "make_dataset", spy)
        result = train(recipe, out_dir, verbose=0)
    (paths, ids), = fed
    return {os.path.realpath(p): result.class_names[i] for p, i in zip(paths, ids)}


def truncate(path):
    """Cut an image file to its first 40 bytes (a PNG's signature and part of its
    header): its name and first bytes still say PNG, but it no longer decodes."""
    with open(path, "rb") as f:
        head = f.read(40)
    with open(path, "wb") as f:
        f.write(head)


def once_per_session(tmp_path_factory, name, build):
    """The folder `name` that `build(folder)` filled, built once per test session even
    when pytest-xdist runs several workers (the first builds it, the others wait for it
    and reuse it): for an expensive artifact, such as a trained run, that tests of
    several files read. Tests must not change what is in it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


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
def folder_recipe(image_folder):
    """`tiny_recipe` on `image_folder`; call it with the keys a test changes:
    `folder_recipe(finetune_epochs=2, unfreeze="last_blocks:1")`."""
    return functools.partial(tiny_recipe, image_folder)


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


# Detection sample: each class drawn in one exact colour (PNG, no noise on objects), so
# a test can find every object's box from the pixels alone.
DETECTION_CLASSES = ("block", "disc", "wedge")
DETECTION_COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 60, 230]], np.uint8)
DETECTION_FORMATS = ("csv", "voc", "coco", "yolo")


def _detection_image(rng, width, height, n_objects):
    """(uint8 upright image, [(class index, (x0, y0, x1, y1) pixel edges)]): objects
    1 px apart at least, over a grey background with clutter in other colours."""
    from PIL import ImageDraw

    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:] = rng.integers(90, 140, 3)
    clutter = Image.fromarray(pixels)
    draw = ImageDraw.Draw(clutter)
    for _ in range(3):  # lines in colours no class uses
        x0, x1 = rng.integers(0, width, 2)
        y0, y1 = rng.integers(0, height, 2)
        draw.line((int(x0), int(y0), int(x1), int(y1)),
                  fill=tuple(int(v) for v in rng.integers(150, 200, 3)), width=1)
    pixels = np.asarray(clutter).copy()
    taken = np.zeros((height, width), bool)
    objects = []
    for _ in range(200):  # placement attempts
        if len(objects) == n_objects:
            break
        cls = int(rng.integers(len(DETECTION_CLASSES)))
        w, h = (int(v) for v in rng.integers(6, max(7, min(width, height) // 2), 2))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        if taken[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1].any():
            continue
        mask = Image.new("L", (width, height), 0)
        shape = ImageDraw.Draw(mask)
        if cls == 0:
            shape.rectangle((x, y, x + w - 1, y + h - 1), fill=255)
        elif cls == 1:
            shape.ellipse((x, y, x + w - 1, y + h - 1), fill=255)
        else:
            shape.polygon([(x, y + h - 1), (x + w - 1, y + h - 1), (x + w // 2, y)],
                          fill=255)
        inside = np.asarray(mask) > 0
        rows, cols = np.nonzero(inside)
        pixels[inside] = DETECTION_COLOURS[cls]
        taken[y:y + h, x:x + w] = True
        objects.append((cls, (int(cols.min()), int(rows.min()), int(cols.max()) + 1,
                              int(rows.max()) + 1)))
    return pixels, objects


def make_detection_folder(root, count=8, size=40, seed=0, fmt="csv"):
    """Write `count` PNGs of 1-4 objects (DETECTION_CLASSES; image 0 has none) in three
    sizes, every fifth stored turned with EXIF orientation 6, with their boxes in
    `fmt` ("csv", "voc", "coco" or "yolo"); the same seed gives the same images and
    objects in every format. Returns the source to read (a file or the folder)."""
    import csv
    import json

    root = str(root)
    rng = np.random.default_rng(seed)
    sizes = ((size, size), (size * 5 // 4, size), (size, size * 3 // 2))
    folder = {"voc": "JPEGImages"}.get(fmt, "images")
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    images = []
    for i in range(count):
        width, height = sizes[i % 3]
        pixels, objects = _detection_image(rng, width, height,
                                           0 if i == 0 else int(rng.integers(1, 5)))
        name = f"{i:03d}.png"
        img = Image.fromarray(pixels)
        if i % 5 == 4:  # stored a quarter turn back; viewers turn it upright
            exif = Image.Exif()
            exif[0x0112] = 6
            img.transpose(Image.Transpose.ROTATE_90).save(
                os.path.join(root, folder, name), exif=exif)
        else:
            img.save(os.path.join(root, folder, name))
        images.append((name, width, height, objects))
    if fmt == "csv":
        path = os.path.join(root, "boxes.csv")
        with open(path, "w", newline="") as handle:
            out = csv.writer(handle, lineterminator="\n")
            out.writerow(["path", "label", "xmin", "ymin", "xmax", "ymax"])
            for name, _, _, objects in images:
                out.writerows([[f"images/{name}", DETECTION_CLASSES[c], *box]
                               for c, box in objects] or [[f"images/{name}"]])
        return path
    if fmt == "voc":
        os.makedirs(os.path.join(root, "Annotations"))
        for name, width, height, objects in images:
            parts = [f"<annotation><folder>JPEGImages</folder><filename>{name}</filename>"
                     f"<size><width>{width}</width><height>{height}</height>"
                     "<depth>3</depth></size>"]
            for c, (x0, y0, x1, y1) in objects:  # 1-based inclusive corners
                parts.append(f"<object><name>{DETECTION_CLASSES[c]}</name><difficult>0"
                             f"</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}"
                             f"</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
            with open(os.path.join(root, "Annotations", name[:-4] + ".xml"), "w") as f:
                f.write("".join(parts) + "</annotation>\n")
        return root
    if fmt == "coco":
        ids = [1, 3, 7]  # category ids need not be 0.. or contiguous
        data = {"images": [], "annotations": [],
                "categories": [{"id": ids[c], "name": n, "supercategory": "shape"}
                               for c, n in enumerate(DETECTION_CLASSES)]}
        for i, (name, width, height, objects) in enumerate(images):
            data["images"].append({"id": 100 + i, "file_name": name, "width": width,
                                   "height": height})
            for c, (x0, y0, x1, y1) in objects:
                data["annotations"].append({
                    "id": len(data["annotations"]) + 1, "image_id": 100 + i,
                    "category_id": ids[c], "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        path = os.path.join(root, "annotations.json")
        with open(path, "w") as handle:
            json.dump(data, handle)
        return path
    if fmt == "yolo":
        os.makedirs(os.path.join(root, "labels"))
        for name, width, height, objects in images:
            with open(os.path.join(root, "labels", name[:-4] + ".txt"), "w") as f:
                for c, (x0, y0, x1, y1) in objects:
                    f.write(f"{c} {(x0 + x1) / 2 / width!r} {(y0 + y1) / 2 / height!r} "
                            f"{(x1 - x0) / width!r} {(y1 - y0) / height!r}\n")
        with open(os.path.join(root, "data.yaml"), "w") as handle:
            handle.write(f"path: .\ntrain: images\nnames: {list(DETECTION_CLASSES)}\n")
        return os.path.join(root, "data.yaml")
    raise ValueError(f"fmt should be one of {DETECTION_FORMATS}; received {fmt!r}")


@pytest.fixture(scope="session")
def open_world_run(tmp_path_factory):
    """{"run": a run of the source checkpoint on the 4 KNOWN sample classes (phase 1
    only, so with its novelty score), "known": their folder, "new": a folder of the
    unknown 5th class, ring}: trained once per session; tests only read it."""
    def build(root):
        from transferkit.app.train import train
        from transferkit.training.recipe import recipe_from_dict

        for name in KNOWN:
            shutil.copytree(os.path.join(SAMPLE, name), root / "known" / name)
        shutil.copytree(os.path.join(SAMPLE, "ring"), root / "new" / "ring")
        recipe = recipe_from_dict({"data": str(root / "known"), **SOURCE, "report": False,
                                   "finetune_epochs": 0, "seed": 0})
        train(recipe, str(root / "run4"), verbose=0)

    root = once_per_session(tmp_path_factory, "open_world", build)
    return {"run": str(root / "run4"), "known": str(root / "known"),
            "new": str(root / "new")}
