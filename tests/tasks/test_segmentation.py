"""Segmentation: the task, the U-Net decoder, image/mask data and the commands."""

import contextlib
import dataclasses
import importlib.util
import io
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from transferkit import cli
from transferkit.core.errors import ConfigError, DataError
from transferkit.core.task_registry import get_task
from transferkit.models.losses import SegmentationLoss
from transferkit.data import mask_tensors
from transferkit.data import masks as mask_data
from transferkit.data.augment import AugmentConfig, augment_image, augment_pair, mix_batch
from transferkit.data.load import load_data
from transferkit.models.parts import resolve
from transferkit.models.backbones import create_backbone
from transferkit.models.registry import get_spec, list_backbones, spec_from_model
from transferkit.models.segmentation import build_segmenter, skip_layers
from transferkit.training.freezing import FreezePolicy, freeze
from transferkit.training.recipe import RecipeConfig

from conftest import SEG_COLOURS as COLOURS
from conftest import backbone_params, make_seg_folder, tiny_recipe, truncate

SEG = get_task("segmentation")
ROOT = Path(__file__).resolve().parents[2]
# Pure colours per class: a pixel's class can be read back from its colour.
# --- the task ------------------------------------------------------------------------

def test_iou_pixel_accuracy_and_confusion_on_known_masks():
    truth = SEG.encode(np.array([[[0, 0], [1, 1]]]), ("bg", "fg"))
    pred = SEG.encode(np.array([[[0, 1], [1, 1]]]), ("bg", "fg"))
    report = SEG.score(pred, truth, ("bg", "fg"))
    # bg: 1 hit, union 2 -> 1/2; fg: 2 hits, union 3 -> 2/3.
    assert report["per_class"]["bg"]["iou"] == pytest.approx(1 / 2)
    assert report["per_class"]["fg"]["iou"] == pytest.approx(2 / 3)
    assert report["miou"] == pytest.approx(7 / 12)
    assert report["pixel_accuracy"] == pytest.approx(3 / 4)
    assert report["confusion_matrix"] == [[1, 1], [0, 2]]
    # Keras's own metric agrees (what training logs as "miou").
    metric = keras.metrics.OneHotMeanIoU(num_classes=2)
    metric.update_state(truth, pred)
    assert float(metric.result()) == pytest.approx(report["miou"])


def test_miou_ignores_classes_absent_from_truth_and_prediction():
    truth = SEG.encode(np.array([[[0, 2], [2, 2]]]), ("a", "b", "c"))
    report = SEG.score(truth, truth, ("a", "b", "c"))
    assert report["miou"] == 1.0 and report["per_class"]["b"]["support"] == 0


def test_one_class_is_a_sigmoid_channel():
    assert SEG.output_units(1) == 1 and SEG.output_activation(1) == "sigmoid"
    truth = SEG.encode(np.array([[[0, 1], [1, 1]]]), ("fg",))
    assert truth.shape == (1, 2, 2, 1)
    report = SEG.score(np.array([[[[0.1], [0.9]], [[0.8], [0.2]]]]), truth, ("fg",))
    # predicted [[0, 1], [1, 0]]: bg IoU 1/2, fg IoU 2/3
    assert report["miou"] == pytest.approx(7 / 12)


def test_mask_values_outside_the_class_range_are_refused():
    with pytest.raises(DataError, match="outside the class range 0..2"):
        SEG.encode(np.array([[[0, 3]]]), ("a", "b", "c"))


def test_losses_match_their_definitions():
    y = SEG.encode(np.array([[[0, 1], [2, 1]]]), ("a", "b", "c"))
    p = np.clip(y * 0.8 + 0.1, 0, 1).astype("float32")
    ce = keras.losses.CategoricalCrossentropy()(y, p)
    assert float(SegmentationLoss("crossentropy")(y, p)) == pytest.approx(float(ce), 1e-5)
    assert float(SegmentationLoss("dice")(y, y)) == pytest.approx(0.0, abs=1e-6)
    both = SegmentationLoss("both")(y, p)
    assert float(both) == pytest.approx(float(ce) + float(SegmentationLoss("dice")(y, p)),
                                        1e-5)
    with pytest.raises(ConfigError, match="loss"):
        SEG.with_loss("focal")


def test_calibration_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="classification"):
        SEG.fit_temperature(np.ones((1, 2, 2, 2)) / 2, np.ones((1, 2, 2, 2)))


def test_class_weights_come_from_pixel_counts_and_weigh_the_loss(tmp_path):
    x = np.zeros((4, 8, 8, 3), np.uint8)
    m = np.zeros((4, 8, 8), np.uint8)
    m[:, :2, :2] = 1  # class 1: 16 of 256 pixels; class 2 absent
    splits = load_data((x, m), image_size=8, task="segmentation", val_split=0.0,
                       class_names=("bg", "rare", "none"), class_weights=True)
    # "balanced": 256 / (2 present classes x count); an absent class gets 1.0
    assert splits.class_weight == pytest.approx({0: 256 / 480, 1: 8.0, 2: 1.0})
    task, keras_weights = SEG.apply_class_weight(splits.class_weight)
    assert keras_weights is None  # Keras's per-example class_weight is not used
    y = SEG.encode(m[:1], ("bg", "rare", "none"))
    p = np.full(y.shape, 1 / 3, "float32")
    # Uniform predictions: each pixel's CE is log 3, scaled by its class's weight.
    expected = np.log(3) * np.where(m[0] == 1, 8.0, 256 / 480).mean()
    assert float(task.loss()(y, p)) == pytest.approx(expected, rel=1e-5)
    folder = load_data(make_seg_folder(tmp_path / "d", count=4), image_size=32,
                       task="segmentation", val_split=0.0, class_weights=True,
                       verbose=False)
    assert set(folder.class_weight) == {0, 1, 2}


# --- the decoder ---------------------------------------------------------------------

@pytest.mark.parametrize("backbone,size,kwargs", [
    ("tiny_test", 32, {}), ("tiny_test", (32, 48), {}), ("compact_cnn", 64, {}),
    pytest.param("mobilenet_v2", 64, {"alpha": 0.35}, marks=pytest.mark.slow)])
def test_decoder_output_has_the_input_resolution(backbone, size, kwargs):
    model = build_segmenter(backbone, 3, weights=None, input_shape=size,
                            backbone_kwargs=kwargs)
    h, w = (size, size) if isinstance(size, int) else size
    assert model.output_shape == (None, h, w, 3)
    out = model.predict(np.zeros((2, h, w, 3), "float32"), verbose=0)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)  # softmax per pixel


# Each entry builds its backbone twice and a decoder, so only the lightest (up to 30
# operations, BackboneSpec.operations) are in the default run, and the slow set adds
# the lightest of each family's heavier members (one Keras builder a family: the same
# graph shapes); tests/models/test_backbones.py builds every registered backbone.
SEGMENTER_BUDGET = 30


@pytest.mark.parametrize("name", backbone_params(list_backbones(), SEGMENTER_BUDGET,
                                                 slow_per_family=True))
def test_every_registered_backbone_gets_a_segmenter_or_a_reason(name):
    spec = get_spec(name)
    size = max(64, -(-spec.min_size // 32) * 32)
    probe = create_backbone(spec, weights=None, input_shape=(size, size, 3))
    if len(probe.output.shape) != 4:  # e.g. LeNet's dense features: no map to decode
        with pytest.raises(ConfigError, match=f"Backbone {name!r} outputs"):
            build_segmenter(name, 3, weights=None, input_shape=size)
        return
    model = build_segmenter(name, 3, weights=None, input_shape=size, decoder_width=4)
    assert model.output_shape == (None, size, size, 3)
    skips = model.get_layer("backbone").outputs[1:]
    assert skips, name  # every convolutional backbone joins at least one skip
    sides = [t.shape[1] for t in skips]  # deepest first, each at least twice as wide
    assert all(b * b >= 2 * a * a for a, b in zip([probe.output.shape[1]] + sides, sides))


@pytest.mark.parametrize("name", backbone_params(
    [n for n in list_backbones() if get_spec(n).skips], SEGMENTER_BUDGET))
def test_skips_read_off_the_graph_match_the_hand_picked_ones(name):
    spec = get_spec(name)
    base = create_backbone(spec, weights=None, input_shape=(64, 64, 3))
    assert skip_layers(dataclasses.replace(spec, skips=()), base) == spec.skips


def test_derived_skips_stay_on_the_main_path_of_a_custom_backbone():
    inputs = keras.Input((32, 32, 3))
    stem = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    inner = keras.layers.Conv2D(8, 3, padding="same", name="inner")(stem)
    joined = keras.layers.Add(name="joined")([stem, inner])  # a residual block at 16 px
    pad = keras.layers.ZeroPadding2D(1, name="pad")(joined)  # 18 px: not a resolution
    deep = keras.layers.Conv2D(8, 3, strides=2, name="deep")(pad)  # 8 px
    out = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="out")(deep)
    spec = spec_from_model(keras.Model(inputs, out, name="custom_res"))
    base = spec.constructor(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert skip_layers(spec, base) == ("joined", "deep")


def test_parts_freezing_and_bn_follow_the_classification_contract():
    model = build_segmenter("compact_cnn", 3, weights=None, input_shape=32)
    parts = resolve(model)
    assert parts.backbone.name == "backbone" and parts.spec.name == "compact_cnn"
    backbone_ids = {id(v) for v in parts.backbone.weights}
    head = parts.head_variables()
    assert head and not any(id(v) in backbone_ids for v in head)
    assert any("decoder" in v.path for v in head)
    audit = freeze(model, FreezePolicy.parse("last_blocks:1"))
    assert 0 < audit.trainable_params < audit.total_params
    bns = [la for la in parts.backbone.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert bns and not any(la.trainable for la in bns)  # BN stays frozen


def test_maps_not_an_integer_factor_apart_are_bridged_by_resizing():
    # 40 px on compact_cnn: maps of 20, 10, 5 and 2 px; 2 -> 5 is no integer factor.
    model = build_segmenter("compact_cnn", 2, weights=None, input_shape=40)
    assert model.output_shape == (None, 40, 40, 2)
    assert model.get_layer("decoder2_up_resize")  # the 2 -> 5 step


# --- data ----------------------------------------------------------------------------

GEOMETRY = AugmentConfig(crop_scale=(0.4, 1.0), flip="horizontal_and_vertical",
                         rotation=0.1, zoom=0.2, translation=0.1)


def _pair(size=32, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    mask[4:20, 6:26], mask[18:30, 2:12] = 1, 2
    image = COLOURS[mask].astype("float32") + rng.uniform(0, 5, (size, size, 3))
    return tf.constant(image, tf.float32), tf.constant(mask[..., None])


@pytest.mark.parametrize("config", [GEOMETRY, AugmentConfig(crop_scale=(0.3, 0.6)),
                                    AugmentConfig(crop_scale=None, rotation=0.25)])
def test_masks_stay_integer_and_aligned_with_their_image(config):
    image, mask = _pair()
    for k in range(6):
        seed = tf.constant([k, 7], tf.int64)
        out_image, out_mask = augment_pair(image, mask, seed, config)
        values = out_mask.numpy()
        assert out_mask.dtype == tf.uint8 and set(np.unique(values)) <= {0, 1, 2}
        # Each pixel's colour names its class again (edges blur under bilinear).
        read_back = np.abs(out_image.numpy()[:, :, None, :] - COLOURS[None, None]).sum(-1)
        agree = (read_back.argmin(-1) == values[..., 0]).mean()
        assert agree > 0.9, (k, agree)
        # The image gets exactly what classification augmentation gives it.
        np.testing.assert_allclose(out_image, augment_image(image, seed, config), atol=1e-4)


def test_colour_jitter_changes_the_image_never_the_mask():
    image, mask = _pair()
    config = AugmentConfig(crop_scale=None, flip=None, brightness=0.3, contrast=0.3,
                           saturation=0.3, hue=0.1)
    out_image, out_mask = augment_pair(image, mask, tf.constant([1, 2], tf.int64), config)
    np.testing.assert_array_equal(out_mask, mask)
    assert np.abs(out_image.numpy() - image.numpy()).max() > 1


def test_folder_source_pairs_reads_palette_masks_and_splits(tmp_path):
    root = make_seg_folder(tmp_path / "d", count=10)
    # One mask as a palette PNG: its indices, not its colours, are the classes.
    array = mask_data.read_mask(os.path.join(root, "masks", "01.png"))
    palette = Image.fromarray(array).convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(os.path.join(root, "masks", "01.png"))
    np.testing.assert_array_equal(mask_data.read_mask(os.path.join(root, "masks",
                                                                   "01.png")), array)
    splits = load_data(root, image_size=32, task="segmentation", val_split=0.2,
                       batch_size=4, augment=GEOMETRY, verbose=False)
    assert splits.class_names == ("background", "red", "green")
    assert splits.counts == {"train": 8, "val": 2}
    for data in (splits.train, splits.val):
        x, y = next(iter(data))
        assert x.shape[1:] == (32, 32, 3) and y.shape[1:] == (32, 32, 3)
        np.testing.assert_array_equal(tf.reduce_sum(y, -1), 1.0)  # exact one-hot


def test_the_scan_reports_missing_extra_resized_and_out_of_range_masks(tmp_path):
    root = Path(make_seg_folder(tmp_path / "d", count=8))
    os.remove(root / "masks" / "00.png")  # missing
    Image.new("L", (32, 32)).save(root / "masks" / "orphan.png")  # extra
    Image.new("L", (16, 16)).save(root / "masks" / "01.png")  # size mismatch
    Image.new("L", (32, 32), 7).save(root / "masks" / "02.png")  # class 7 of 3
    splits = load_data(str(root), image_size=32, task="segmentation", val_split=0.0,
                       verbose=False)
    kinds = {p.kind: p for p in splits.scan_report.problems}
    assert kinds["missing_mask"].path.endswith("00.png")
    assert kinds["extra_mask"].path.endswith("orphan.png")
    assert "16x16" in kinds["mask_size"].reason
    assert "[7]" in kinds["mask_values"].reason
    assert splits.counts == {"train": 5}  # the four bad pairs left out


def test_csv_and_array_sources(tmp_path):
    root = Path(make_seg_folder(tmp_path / "d", count=6, classes=False))
    rows = ["image,mask"] + [f"d/images/{i:02d}.png,d/masks/{i:02d}.png" for i in range(6)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    splits = load_data(str(tmp_path / "pairs.csv"), image_size=32, task="segmentation",
                       val_split=0.0, verbose=False)
    assert splits.class_names == ("0", "1", "2") and splits.counts == {"train": 6}
    x = np.stack([np.asarray(Image.open(root / "images" / f"{i:02d}.png"))
                  for i in range(6)])
    m = np.stack([mask_data.read_mask(root / "masks" / f"{i:02d}.png") for i in range(6)])
    arrays = load_data((x, m), image_size=32, task="segmentation", val_split=0.0)
    _, y = next(iter(arrays.train.unbatch().batch(6)))
    assert sorted(np.unique(np.argmax(y, -1))) == [0, 1, 2]
    with pytest.raises(DataError, match="mask"):
        load_data((x, m[:, :16]), image_size=32, task="segmentation")


def _arrays(n=8, size=32):
    pairs = [_pair(size, seed) for seed in range(n)]
    x = np.stack([np.clip(p[0].numpy(), 0, 255).astype(np.uint8) for p in pairs])
    return x, np.stack([p[1].numpy()[..., 0] for p in pairs])


def _aligned(dataset):
    """Pairs seen, after checking each pixel's colour names its mask's class."""
    n = 0
    for x, y in dataset:
        read_back = np.abs(x.numpy()[..., None, :] - COLOURS).sum(-1).argmin(-1)
        assert (read_back == np.argmax(y, -1)).mean() > 0.95
        np.testing.assert_array_equal(tf.reduce_sum(y, -1), 1.0)  # exact one-hot
        n += len(x)
    return n


def test_tf_data_source_of_image_mask_pairs(tmp_path):
    x, m = _arrays(8)
    ds = tf.data.Dataset.from_tensor_slices((x, m))
    splits = load_data(ds, image_size=32, task="segmentation", val_split=0.25,
                       batch_size=4, class_weights=True)
    assert splits.class_names == ("0", "1", "2") and set(splits.class_weight) == {0, 1, 2}
    assert sum(splits.counts.values()) == 8 and set(splits.counts) == {"train", "val"}
    assert _aligned(splits.train) + _aligned(splits.val) == 8


def test_tensor_sources_check_mask_size_and_class_range():
    x, m = _arrays(4)
    small = tf.data.Dataset.from_tensor_slices((x, m[:, :16, :16]))
    with pytest.raises(DataError, match="pair 0: the mask is 16x16 but the image is 32x32"):
        load_data(small, image_size=32, task="segmentation")
    with pytest.raises(DataError, match="class index 2 but class_names has 2 entries"):
        load_data(tf.data.Dataset.from_tensor_slices((x, m)), image_size=32,
                  task="segmentation", class_names=("bg", "red"))
    with pytest.raises(DataError, match="pairs"):
        load_data(tf.data.Dataset.from_tensor_slices(x), image_size=32, task="segmentation")


def test_cutmix_pastes_the_same_box_into_the_mask_and_mixup_is_refused():
    x, m = _arrays(8)
    config = AugmentConfig(crop_scale=None, flip=None, cutmix_alpha=1.0)
    mixed = load_data((x, m), image_size=32, task="segmentation", val_split=0.0,
                      batch_size=8, augment=config, seed=3)
    assert _aligned(mixed.train) == 8  # every pasted pixel keeps its own class
    # Two plain images, classes 1 and 2: wherever a box is pasted, image and mask agree.
    masks = np.stack([np.full((16, 16), 1), np.full((16, 16), 2)])
    images, labels = COLOURS[masks].astype("float32"), SEG.encode(masks, ("a", "b", "c"))
    pasted = 0
    for k in range(6):
        out, y = mix_batch(tf.constant(images), tf.constant(labels),
                           tf.constant([k, 1], tf.int64), config)
        read_back = np.abs(out.numpy()[..., None, :] - COLOURS).sum(-1).argmin(-1)
        np.testing.assert_array_equal(read_back, np.argmax(y, -1))
        np.testing.assert_array_equal(tf.reduce_sum(y, -1), 1.0)
        pasted += sum(len(np.unique(r)) == 2 for r in read_back)
    assert pasted  # some seeds pasted a box part-way into an image
    with pytest.raises(DataError, match="mixup_alpha=0.2: mixup blends"):
        load_data((x, m), image_size=32, task="segmentation",
                  augment=AugmentConfig(mixup_alpha=0.2))


class TinySegShapes(tfds.core.GeneratorBasedBuilder):
    """Images with a `segmentation_mask` feature (as oxford_iiit_pet has), written to a
    temp data_dir: TFDS's real loader, offline."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
            "label": tfds.features.ClassLabel(names=["one", "two"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(8), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        x, m = _arrays(n)
        for i in range(n):
            yield i, {"image": x[i], "segmentation_mask": m[i][..., None], "label": i % 2}


def test_tfds_source_finds_or_takes_the_image_and_mask_features(tmp_path):
    TinySegShapes(data_dir=tmp_path).download_and_prepare()
    splits = load_data("tfds:tiny_seg_shapes", image_size=32, batch_size=4,
                       task="segmentation", val_split=0.25, test_split=0.1,
                       data_dir=tmp_path)
    assert splits.class_names == ("0", "1", "2")
    assert splits.counts == {"train": 6, "val": 2, "test": 4}  # val carved, own test
    assert sum(_aligned(getattr(splits, k)) for k in ("train", "val", "test")) == 12
    named = load_data("tfds:tiny_seg_shapes:test:image,segmentation_mask", image_size=32,
                      task="segmentation", val_split=0.0, data_dir=tmp_path)
    assert named.counts == {"train": 4}
    with pytest.raises(DataError, match="no feature 'mask'.*segmentation_mask"):
        load_data("tfds:tiny_seg_shapes::image,mask", image_size=32, task="segmentation",
                  data_dir=tmp_path)
    with pytest.raises(DataError, match="supervised_keys"):  # classification: no keys
        load_data("tfds:tiny_seg_shapes::image,label", image_size=32, data_dir=tmp_path)


def test_tfds_features_that_do_not_say_which_is_the_mask_are_listed():
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "trimap": tfds.features.Image(shape=(None, None, 1)),
        "parts": tfds.features.Image(shape=(None, None, 1))})
    with pytest.raises(DataError, match="trimap.*parts.*'tfds:NAME:SPLIT:IMAGE,MASK'"):
        mask_tensors.feature_keys(features, "", "tfds:x")
    assert mask_tensors.feature_keys(features, "image,parts", "tfds:x") == ("image",
                                                                            "parts")


# --- one pipeline: what classification sources have, masks have --------------------

def test_a_mask_broken_after_the_scan_is_skipped_and_counted(tmp_path):
    root = make_seg_folder(tmp_path / "d", count=8)
    splits = load_data(root, image_size=32, task="segmentation", val_split=0.0,
                       batch_size=4, verbose=False)
    broken = splits.train_labels[2]
    truncate(broken)  # after the scan accepted it: training must not die on it
    for _ in range(3):  # every epoch keeps its length: the file is skipped, not fatal
        assert [int(x.shape[0]) for x, _ in splits.train] == [4, 3]
    # Counted once per pass that ran to its end (the read-ahead reaches it).
    assert splits.skipped.missing() >= 1
    # The run names it (run.json "skipped_files"): its mask is among the files checked.
    from transferkit.data.files import undecodable
    assert list(undecodable(splits.example_files())) == [broken]


@pytest.mark.slow
def test_train_names_a_broken_mask_in_run_json(tmp_path, monkeypatch, capsys):
    from transferkit.app import train as run_module
    from transferkit.data import load as load_module

    root = make_seg_folder(tmp_path / "d", count=12)
    real, broken = load_module.load_data, []

    def load_then_break_one(*args, **kwargs):  # after the scan, before training
        data = real(*args, **kwargs)
        broken.append(data.train_labels[1])
        truncate(broken[0])
        return data

    # load_run_data imports load_data from data.load when it runs, so it gets this one
    monkeypatch.setattr(load_module, "load_data", load_then_break_one)
    out = tmp_path / "run"
    result = run_module.train(tiny_recipe(
        root, task="segmentation", batch_size=4, decoder_width=8,
        early_stopping_patience=0), str(out), verbose=0)
    assert list(result.skipped_files) == broken
    assert broken[0] in capsys.readouterr().out
    assert list(json.loads((out / "run.json").read_text())["skipped_files"]) == broken


@pytest.mark.parametrize("scan", [True, False])
def test_mask_folder_links_leaving_it_are_used_only_when_asked(tmp_path, capsys, scan):
    root = Path(make_seg_folder(tmp_path / "d", count=6))
    elsewhere = Path(make_seg_folder(tmp_path / "elsewhere", count=1, seed=3))
    os.symlink(elsewhere / "images" / "00.png", root / "images" / "linked.png")
    os.symlink(elsewhere / "masks" / "00.png", root / "masks" / "linked.png")
    splits = load_data(str(root), image_size=32, task="segmentation", val_split=0.0,
                       scan=scan)
    assert splits.counts == {"train": 6}
    assert "linked.png" in capsys.readouterr().out  # reported, not silently dropped
    if scan:
        assert {p.kind for p in splits.scan_report.problems} >= {"outside_link"}
    followed = load_data(str(root), image_size=32, task="segmentation", val_split=0.0,
                         scan=scan, follow_links=True, verbose=False)
    assert followed.counts == {"train": 7}


def test_masks_cache_in_memory_and_give_the_same_examples(tmp_path):
    root = make_seg_folder(tmp_path / "d", count=6)
    plain, cached = (load_data(root, image_size=32, task="segmentation", val_split=0.5,
                               batch_size=3, cache=cache, verbose=False)
                     for cache in (None, "memory"))

    def examples(ds):  # per example: its class pixel counts and its pixel sum
        rows = [(*y.sum(axis=(0, 1)).tolist(), float(x.sum()))
                for xb, yb in ds for x, y in zip(xb.numpy(), yb.numpy())]
        return np.array(sorted(rows))

    for _ in range(2):  # the second pass reads the cache
        np.testing.assert_array_equal(examples(plain.val), examples(cached.val))
        got, want = examples(cached.train), examples(plain.train)  # shuffled: sorted
        np.testing.assert_array_equal(got[:, :3], want[:, :3])  # the masks exactly
        # Images go through the cache as uint8: within rounding of the plain ones.
        assert np.abs(got[:, 3] - want[:, 3]).max() <= 0.5 * 32 * 32 * 3


# --- commands ------------------------------------------------------------------------

def _cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data = make_seg_folder(root / "data", count=12)
    code, printed = _cli("train", "--data", data, "--task", "segmentation",
                         "--backbone", "tiny_test", "--weights", "none", "--image-size", 32,
                         "--batch-size", 4, "--head-epochs", 1, "--finetune-epochs", 1,
                         "--segmentation-loss", "both", "--decoder-width", 8,
                         "--class-weights", "--no-report", "--out", root / "run")
    return code, printed, root, data


def test_train_writes_a_segmentation_run(tiny_run):
    code, _, root, _ = tiny_run
    assert code == 0
    history = json.loads((root / "run" / "history.json").read_text())
    assert [r["phase"] for r in history] == ["head", "finetune"]
    assert {"miou", "pixel_accuracy", "val_miou"} <= set(history[-1])
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert 0 <= metrics["val"]["miou"] <= 1 and len(metrics["val"]["confusion_matrix"]) == 3


def test_evaluate_predict_and_export_check_on_the_run(tiny_run):
    _, _, root, data = tiny_run
    run = root / "run"
    code, printed = _cli("evaluate", run, "--data", data, "--out", root / "eval")
    report = json.loads((root / "eval" / "evaluation.json").read_text())
    assert code == 0 and f"miou={report['miou']:.4f}" in printed
    assert (root / "eval" / "report.html").is_file()
    image = os.path.join(data, "images", "03.png")
    code, _ = _cli("predict", run, image, "--out", root / "pred")
    assert code == 0
    written = np.asarray(Image.open(root / "pred" / "000_03_mask.png"))
    model = keras.saving.load_model(run / "model.keras")
    x = np.asarray(Image.open(image), "float32")[None]
    np.testing.assert_array_equal(written, model.predict(x, verbose=0)[0].argmax(-1))
    assert (root / "pred" / "000_03_overlay.png").is_file()
    code, printed = _cli("export", run, "--format", "keras", "--out", root / "exp",
                         "--check", "--data", data)
    assert code == 0 and "miou" in printed and "ok" in printed


def test_flip_tta_on_the_run_and_crops_refused(tiny_run, capsys):
    _, _, root, data = tiny_run
    image = os.path.join(data, "images", "00.png")
    assert cli.main(["predict", str(root / "run"), image, "--tta", "ten_crop"]) == 2
    assert "--tta flip" in capsys.readouterr().err
    code, _ = _cli("predict", root / "run", image, "--tta", "--out", root / "pred_tta")
    assert code == 0 and (root / "pred_tta" / "000_00_mask.png").is_file()


def test_flip_tta_mirrors_the_mirrored_prediction_back():
    from transferkit.models.tta import with_tta

    model = build_segmenter("tiny_test", 3, weights=None, input_shape=32, decoder_width=4)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    mirrored = model.predict(x[:, :, ::-1], verbose=0)[:, :, ::-1]
    expected = (model.predict(x, verbose=0) + mirrored) / 2
    tta = with_tta(model, "flip")
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=1e-5)
    # A mirrored image gets exactly the mirrored prediction: the mean is symmetric.
    np.testing.assert_allclose(tta.predict(x[:, :, ::-1], verbose=0)[:, :, ::-1],
                               tta.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ConfigError, match="tta='flip'"):
        with_tta(model, "five_crop")


def test_phase_one_runs_live_for_segmentation():
    recipe = RecipeConfig.from_keys(task="segmentation", backbone="tiny_test")
    assert recipe.feature_cache() is None  # the decoder reads the skips too
    assert RecipeConfig.from_keys(backbone="tiny_test").feature_cache() is not None
    assert recipe.task_config().loss_name == "crossentropy"
    dice = RecipeConfig.from_keys(task="segmentation", backbone="tiny_test",
                                  segmentation_loss="dice")
    assert dice.task_config().loss_name == "dice"


# --- shipped recipe, sample and demo -------------------------------------------------

def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}",
                                                  ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unet_recipe_resolves_and_builds_tiny(tmp_path):
    from transferkit.cli.recipes import resolve_recipe
    from transferkit.training.recipe import build_run_model

    recipe, _ = resolve_recipe("unet_mobilenet_v2", [
        "--data", str(tmp_path), "--weights", "none", "--image-size", "64",
        "--decoder-width", "8", "--backbone-kwargs", "alpha=0.35"])
    assert (recipe.task, recipe.model.backbone, recipe.schedule.batch_size) == (
        "segmentation", "mobilenet_v2", 64)
    model = build_run_model(recipe, 3)
    assert model.output_shape == (None, 64, 64, 3)
    audit = freeze(model, recipe.schedule.finetune.freeze)
    assert 0 < audit.trainable_params < audit.total_params


def test_shipped_sample_regenerates_byte_for_byte(tmp_path):
    shipped = ROOT / "data" / "segmentation"
    _load_script("make_segmentation_sample").write_sample(tmp_path / "again")
    files = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert len(files) == 121  # 60 images, 60 masks, classes.txt
    for rel in files:
        assert (tmp_path / "again" / rel).read_bytes() == (shipped / rel).read_bytes(), rel
    splits = load_data(str(shipped), image_size=64, task="segmentation", verbose=False)
    assert splits.class_names == ("background", "arrow", "cross", "ring")
    assert not splits.scan_report.problems


def test_demo_recipes_differ_only_in_their_start():
    from transferkit.cli import demo

    transfer, scratch = demo.demo_recipes(ROOT / "data", task="segmentation")
    assert transfer.task == scratch.task == "segmentation"
    assert transfer.data.train.endswith("segmentation") and transfer.data == scratch.data
    assert (transfer.schedule.head.epochs + transfer.schedule.finetune.epochs
            == scratch.schedule.head.epochs + scratch.schedule.finetune.epochs)
    assert transfer.model.weights.endswith(demo.CHECKPOINT)
    assert scratch.model.weights == "none"


@pytest.mark.slow
def test_demo_segmentation_transfer_beats_scratch_on_miou(tmp_path):
    code, printed = _cli("demo", "--task", "segmentation", "--fast", "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == 0 and f"{summary['transfer_val_miou']:.3f}" in printed
    # Measured at seed 0: 0.33 vs 0.19 (fast), 0.47 vs 0.24 (full); 0.05 leaves room
    # for CPU nondeterminism.
    assert summary["transfer_val_miou"] >= summary["scratch_val_miou"] + 0.05


@pytest.mark.slow  # two trials: ~20 s on a loaded machine
def test_tuner_searches_decoder_width_on_val_miou(tmp_path):
    from transferkit.tuning.space import SearchSpace
    from transferkit.tuning.tuner import make_objective, tune

    objective = make_objective(None, "segmentation")
    assert (objective.name, objective.direction) == ("val_miou", "max")
    data = make_seg_folder(tmp_path / "d", count=8)
    base = tiny_recipe(data, task="segmentation", batch_size=4, scan=False)
    space = SearchSpace(head_width=None, head_depth=None, dropout=None, head_lr=None,
                        finetune_lr=None, unfreeze_blocks=None, label_smoothing=None,
                        decoder_width=(4, 8))
    result = tune(base, str(tmp_path / "sweep"), space=space, max_trials=2, verbose=0,
                  process_per_trial=False)
    assert result.best_recipe.model.decoder_width in (4, 8)
    rows = (tmp_path / "sweep" / "results.csv").read_text().splitlines()
    assert "decoder_width" in rows[0] and len(rows) == 3


def test_scan_command_checks_masks(tmp_path):
    root = Path(make_seg_folder(tmp_path / "d", count=4))
    os.remove(root / "masks" / "01.png")
    code, printed = _cli("scan", root, "--task", "segmentation", "--json", tmp_path / "s.json")
    assert code == 0 and "missing_mask" in printed
    kinds = [p["kind"] for p in json.loads((tmp_path / "s.json").read_text())["problems"]]
    assert kinds == ["missing_mask"]


@pytest.mark.slow
def test_a_from_scratch_unet_validates_at_the_miou_it_trains_at(tmp_path):
    """Issue "Accuracy by default": a from-scratch U-Net whose BatchNorm layers train
    (Keras's moving averages, momentum 0.99, lag ~100 steps behind the weights) must
    score on validation what its training-mode forward pass scores. Without the
    recompute of the BN statistics the same run shows the lag."""
    from transferkit.app.train import train
    from transferkit.training.recipe import load_run_data
    from transferkit.evaluation.evaluate import load_run

    data = make_seg_folder(tmp_path / "data", count=40)
    base = dict(data=data, task="segmentation", backbone="compact_cnn", weights="none",
                image_size=32, batch_size=8, val_split=0.25, augment="none",
                head_epochs=0, finetune_epochs=15, finetune_lr=1e-3, unfreeze="none",
                train_batchnorm=True, early_stopping_patience=0, report=False, seed=0)
    scores = {}
    for batches in (0, RecipeConfig().schedule.batchnorm_stats_batches):
        out = tmp_path / f"run{batches}"
        recipe = RecipeConfig.from_keys(**base, batchnorm_stats_batches=batches)
        result = train(recipe, out, verbose=0)
        loaded = load_run(out)
        images, masks = map(np.concatenate, zip(*[
            (np.asarray(x), np.asarray(y)) for x, y in load_run_data(recipe, False).val]))
        # Training behaviour, one batch of the validation images (BN by batch statistics).
        trained = SEG.score(np.asarray(loaded.model(images, training=True)), masks)["miou"]
        scores[batches] = (trained, result.metrics["val"]["miou"])
    trained, validated = scores[RecipeConfig().schedule.batchnorm_stats_batches]
    assert trained > 0.8 and validated >= trained - 0.05
    lag_trained, lag_validated = scores[0]
    assert lag_validated < lag_trained - 0.2  # the lag this guards against is real here
