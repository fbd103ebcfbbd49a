"""Sources, splits, labels and the tf.data pipeline."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from transferkit.data.splits import DataSplits, stratified_split
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.data.load import load_data
from transferkit.data.pipeline import make_dataset
from transferkit.core.errors import DataError

COLOURS = {"blue": 2, "green": 1, "red": 0}  # class -> channel that is lit


_UNIQUE = iter(range(10**6))


def _solid(channel, size=(12, 10)):
    """One lit channel; a unique corner pixel so the scan sees no duplicates."""
    image = np.zeros((*size, 3), np.uint8)
    image[..., channel] = 255
    image[0, 0, channel] = 200 + next(_UNIQUE) % 50
    image[0, 1, channel] = next(_UNIQUE) % 50
    return image


def _class_folder(root, counts):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            image = _solid(COLOURS[name])
            Image.fromarray(image).save(root / name / f"{name}{i}.png")
    return root


def _assert_colour_labels(ds, class_names):
    """Each image's lit channel names its class: the labels were not shuffled apart."""
    seen = 0
    for images, labels in ds:
        assert images.dtype == tf.float32 and images.shape[-1] == 3
        assert labels.dtype == tf.float32 and labels.shape[-1] == len(class_names)
        lit = images.numpy().mean(axis=(1, 2)).argmax(axis=1)
        for channel, row in zip(lit, labels.numpy()):
            assert COLOURS[class_names[int(row.argmax())]] == channel
        assert float(images.numpy().max()) == pytest.approx(255.0)  # raw 0-255
        seen += len(images)
    return seen


def test_folder_source_labels_and_fields(tmp_path):
    root = _class_folder(tmp_path / "d", {"red": 6, "green": 6, "blue": 3})
    splits = load_data(root, image_size=(8, 9), batch_size=4, seed=1,
                       normalized_dir=tmp_path / "n", verbose=False)
    assert isinstance(splits, DataSplits)
    assert splits.class_names == ("blue", "green", "red") and splits.num_classes == 3
    assert splits.image_size == (8, 9) and splits.task.name == "multiclass"
    assert splits.train.element_spec[0].shape.as_list() == [None, 8, 9, 3]
    n = _assert_colour_labels(splits.train, splits.class_names)
    n += _assert_colour_labels(splits.val, splits.class_names)
    assert n == 15 and splits.test is None
    assert len(splits.train_files) == len(splits.train_labels) == splits.counts["train"]


def test_splits_reproducible_stratified_disjoint(tmp_path):
    root = _class_folder(tmp_path / "d", {"red": 10, "green": 20})
    kw = dict(image_size=8, val_split=0.2, test_split=0.1, normalized_dir=tmp_path / "n",
              verbose=False)
    a, b = load_data(root, seed=3, **kw), load_data(root, seed=3, **kw)
    c = load_data(root, seed=4, **kw)
    assert (a.train_files, a.val_files, a.test_files) == (b.train_files, b.val_files,
                                                          b.test_files)
    assert a.val_files != c.val_files
    sets = [set(a.train_files), set(a.val_files), set(a.test_files)]
    assert sum(map(len, sets)) == 30 and len(set.union(*sets)) == 30
    per_class = lambda files: sorted(sum(1 for f in files if f"/{k}/" in f)  # noqa: E731
                                     for k in ("red", "green"))
    assert per_class(a.val_files) == [2, 4] and per_class(a.test_files) == [1, 2]
    train, val, test = stratified_split(["x"] * 3 + ["y"], 0.34, 0.0, seed=0)
    assert len(val) == 1 and 3 in train  # a single-item class stays in train


def test_csv_multilabel_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    rows = ["path,label"]
    for i, tags in enumerate(["red", "green", "red|green", "blue", "red|blue", "green"]):
        image = np.zeros((12, 10, 3), np.uint8)
        for t in tags.split("|"):
            image[..., COLOURS[t]] = 255
        Image.fromarray(image).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{tags}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = load_data(tmp_path / "labels.csv", image_size=8, task="multilabel",
                       val_split=0.0, normalized_dir=tmp_path / "n", verbose=False)
    assert splits.num_classes == 3 and splits.val is None
    for images, labels in splits.train:
        lit = images.numpy().mean(axis=(1, 2)) > 127
        order = [COLOURS[name] for name in splits.class_names]
        np.testing.assert_array_equal(lit[:, order], labels.numpy() > 0.5)
    with pytest.raises(DataError, match="task='multilabel'"):
        load_data(tmp_path / "labels.csv", image_size=8, normalized_dir=tmp_path / "n")


def test_separate_folders_and_binary(tmp_path):
    train = _class_folder(tmp_path / "train", {"red": 4, "green": 4})
    val = _class_folder(tmp_path / "val", {"red": 2, "green": 2})
    splits = load_data({"train": train, "val": val}, image_size=8, task="binary",
                       normalized_dir=tmp_path / "n", verbose=False)
    assert splits.counts == {"train": 8, "val": 4} and splits.num_classes == 1
    assert all(str(tmp_path / "val") in f for f in splits.val_files)
    for images, labels in splits.val:
        assert labels.shape[1:] == (1,)
        lit = images.numpy().mean(axis=(1, 2)).argmax(axis=1)
        np.testing.assert_array_equal(lit == COLOURS["red"], labels.numpy()[:, 0] == 1)
    with pytest.raises(DataError, match="Did you mean 'val'"):
        load_data({"train": train, "vall": val}, image_size=8)


def test_array_and_dataset_sources():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2] * 10)
    x = np.stack([_solid(COLOURS[n], (10, 10)) for n in
                  np.array(["red", "green", "blue"])[y]])
    names = ("red", "green", "blue")
    splits = load_data((x, y), image_size=8, class_names=names, val_split=0.3, seed=0)
    assert splits.counts == {"train": 21, "val": 9} and splits.train_files == ()
    assert _assert_colour_labels(splits.val, names) == 9
    ds = tf.data.Dataset.from_tensor_slices((x[..., :1] * 0 + x[..., :1], y))  # grey
    splits = load_data(ds, image_size=8, val_split=0.3, seed=0)
    images, labels = next(iter(splits.train))
    assert images.shape[1:] == (8, 8, 3) and labels.shape[1:] == (3,)
    total = sum(len(b[0]) for b in splits.train) + sum(len(b[0]) for b in splits.val)
    assert total == 30 and splits.class_names == ("0", "1", "2")
    regression = load_data((x, rng.random((30, 2))), image_size=8, task="regression")
    assert regression.num_classes == 2
    assert next(iter(regression.train))[1].shape[1:] == (2,)


class TinyColours(tfds.core.GeneratorBasedBuilder):
    """Two-class dataset written to a temp data_dir: TFDS's real loader, offline."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, supervised_keys=("image", "label"),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["red", "green"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(10), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": _solid(i % 2), "label": i % 2}


def test_tfds_source(tmp_path):
    TinyColours(data_dir=tmp_path).download_and_prepare()
    splits = load_data("tfds:tiny_colours", image_size=8, batch_size=4, test_split=0.1,
                       data_dir=tmp_path)
    assert splits.class_names == ("red", "green") and splits.test is not None
    counts = {k: _assert_colour_labels(getattr(splits, k), splits.class_names)
              for k in ("train", "val", "test")}
    assert counts == {"train": 8, "val": 2, "test": 4}  # val carved, own test split
    one = load_data("tfds:tiny_colours:test", image_size=8, val_split=0.5,
                    data_dir=tmp_path)
    assert _assert_colour_labels(one.val, one.class_names) == 2
    with pytest.raises(DataError, match="no split 'tset'.*Did you mean 'test'"):
        load_data("tfds:tiny_colours:tset", image_size=8, data_dir=tmp_path)


def test_make_dataset_eval_order_cache_and_weights(tmp_path):
    root = _class_folder(tmp_path / "d", {"red": 3, "green": 9})
    files = sorted(str(p) for p in root.glob("*/*.png"))
    multiclass = get_task("multiclass")
    labels = multiclass.encode([f.split("/")[-2] for f in files], ("green", "red"))
    ds = make_dataset(files, labels, image_size=8, batch_size=5,
                      cache=str(tmp_path / "cache"))
    for _ in range(2):  # second pass reads the file cache
        got = np.concatenate([y.numpy() for _, y in ds])
        np.testing.assert_array_equal(got, labels)
    assert list(tmp_path.glob("cache*"))
    weights = multiclass.class_weight(labels)
    assert weights == pytest.approx({0: 12 / 18, 1: 12 / 6})
    splits = load_data(root, image_size=8, class_weights=True, val_split=0.0,
                       normalized_dir=tmp_path / "n", verbose=False)
    assert splits.class_weight == pytest.approx({0: 12 / 18, 1: 12 / 6})


def test_argument_errors(tmp_path):
    # Arguments are checked by the same functions everywhere (one error class).
    with pytest.raises(ConfigError, match="Did you mean 'multiclass'"):
        load_data(tmp_path, image_size=8, task="multiclas")
    with pytest.raises(ConfigError, match="image_size"):
        load_data(tmp_path, image_size=(8,))
    with pytest.raises(DataError, match="val_split"):
        load_data(tmp_path, image_size=8, val_split=1.5)
    with pytest.raises(DataError, match="neither a folder"):
        load_data(tmp_path / "missing", image_size=8)


def test_regression_csv_and_no_scan(tmp_path):
    rows = []
    for i in range(10):
        Image.fromarray(_solid(i % 3)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i / 10}|{i}")
    (tmp_path / "targets.csv").write_text("\n".join(rows))
    (tmp_path / "notes.txt").write_text("ignored without a scan: not an image extension")
    splits = load_data(tmp_path / "targets.csv", image_size=8, task="regression",
                       scan=False, val_split=0.2)
    assert splits.counts == {"train": 8, "val": 2} and splits.scan_report is None
    assert splits.num_classes == 2 and splits.class_names == ()
    targets = {f.rsplit("/", 1)[1]: tuple(y) for f, y in
               zip(splits.val_files, splits.val_labels)}
    for name, (a, b) in targets.items():
        assert a == pytest.approx(int(name[:-4]) / 10) and b == int(name[:-4])
    with pytest.raises(DataError, match="no image files found"):
        load_data(tmp_path, image_size=8, scan=False)  # images, but no class folders


def test_stratified_sample_draws_every_class_however_files_are_ordered():
    # int8 calibration used to take the first 64 files: with files sorted by class,
    # that was one class. The sample goes round-robin across strata instead.
    from transferkit.data.splits import stratified_sample

    strata = ["a"] * 100 + ["b"] * 100 + [("c", 1)] * 3
    picked = stratified_sample(strata, 9, seed=0)
    assert len(picked) == 9 and len(set(picked.tolist())) == 9
    assert sorted({str(strata[i]) for i in picked}) == ["('c', 1)", "a", "b"]
    assert [strata[i] for i in picked].count(("c", 1)) == 3
    np.testing.assert_array_equal(picked, stratified_sample(strata, 9, seed=0))
    assert len(stratified_sample(strata, 500)) == len(strata)
