"""The dense box head's four pieces on hand-made tensors: grid, head (decoding), target
encoder, loss and post-processing; and the head on registered backbones."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit.core.errors import ConfigError
from transferkit.models import get_spec, list_backbones
from transferkit.models.detection import (DetectionLoss, Grid, assign, build_detector,
                                          detect_one, encode, feature_grid, paired_iou,
                                          postprocess)
from transferkit.models.detection.head import GridBoxes
from transferkit.models.detection.targets import object_levels

GRID = Grid((64, 64), ((8, 8, 8), (4, 4, 16)))  # 64 + 16 locations


def _rows(*objects, count=5):
    """Object rows (class, xmin, ymin, xmax, ymax) padded with class -1."""
    out = np.zeros((count, 5), np.float32)
    out[:, 0] = -1
    for i, obj in enumerate(objects):
        out[i] = obj
    return out


# --- grid -------------------------------------------------------------------------------

def test_grid_follows_the_specs_strides_and_numbers_locations_level_by_level():
    grid = feature_grid("efficientnet_lite0", (224, 200))
    assert grid.levels == ((14, 13, 16), (7, 7, 32)) and grid.size == 14 * 13 + 49
    centres = GRID.centres()
    np.testing.assert_allclose(centres[0], [4 / 64, 4 / 64])  # (0, 0) of stride 8
    np.testing.assert_allclose(centres[1], [12 / 64, 4 / 64])  # row-major: x first
    np.testing.assert_allclose(centres[64], [8 / 64, 8 / 64])  # first of stride 16
    assert (GRID.level_ids()[:64] == 0).all() and (GRID.level_ids()[64:] == 1).all()
    assert Grid.from_json(GRID.to_json()) == GRID
    with pytest.raises(ConfigError, match="no feature maps"):
        feature_grid("lenet", (32, 32))


# --- head -------------------------------------------------------------------------------

def test_dense_tasks_default_to_a_larger_input_and_every_entry_point_agrees():
    from transferkit.models.config import ModelConfig
    from transferkit.models.detection import INPUT_SCALE
    from transferkit.models.registry import default_size, resolve_input
    from transferkit.training.recipe import recipe_from_dict

    # The rule on its own: side x scale to a multiple of 32; one-size backbones keep it.
    expected = {"efficientnet_lite0": 320, "efficientnet_lite2": 384, "mobilenet_v2": 320,
                "tiny_test": 32}
    for name, side in expected.items():
        assert default_size(get_spec(name), INPUT_SCALE) == side, name
        assert default_size(get_spec(name)) == get_spec(name).default_size
    fixed = get_spec("tiny_test").__class__(**{**get_spec("tiny_test").__dict__,
                                               "name": "fixed_test", "min_size": 48,
                                               "default_size": 48})
    assert default_size(fixed, INPUT_SCALE) == 48
    # The recipe, the task's grid, the built model and build_detector's own default.
    for task, side in (("detection", 320), ("localization", 320), ("multiclass", 224),
                       ("segmentation", 224)):
        recipe = recipe_from_dict({"task": task, "backbone": "efficientnet_lite0"})
        assert recipe.input_spec().shape == (side, side, 3), task
        bound = recipe.task_config()
        if getattr(bound, "grid", None) is not None:
            assert bound.grid.image == (side, side)
    recipe = recipe_from_dict({"task": "detection", "backbone": "mobilenet_v2",
                               "weights": "none"})
    model = recipe.task_config().build_model(recipe.model, 3 + 4)
    assert tuple(model.input_shape[1:]) == (320, 320, 3)
    assert tuple(build_detector("mobilenet_v2", 3, weights=None).input_shape[1:]) == (
        320, 320, 3)
    # An explicit size is taken as it is.
    assert recipe_from_dict({"task": "detection", "image_size": 224}).input_spec().shape \
        == (224, 224, 3)
    assert resolve_input("efficientnet_lite0", 96, INPUT_SCALE).shape == (96, 96, 3)
    assert ModelConfig().input_spec().shape == (224, 224, 3)


def test_grid_boxes_decodes_distances_around_each_location():
    layer = GridBoxes((2, 2, 16), (32, 32))
    raw = np.zeros((1, 2, 2, 4), np.float32)  # exp(0) = one cell on every side
    raw[0, 1, 0] = [math.log(2), 0, 0, math.log(0.5)]
    boxes = keras.ops.convert_to_numpy(layer(raw))[0]
    np.testing.assert_allclose(boxes[0, 0], [-0.25, -0.25, 0.75, 0.75], atol=1e-6)
    # location (row 1, col 0): centre (8, 24) px; left 2 cells, bottom half a cell
    np.testing.assert_allclose(boxes[1, 0] * 32, [8 - 32, 24 - 16, 8 + 16, 24 + 8],
                               atol=1e-4)


@pytest.mark.parametrize("backbone,size,classes", [
    ("tiny_test", 32, 1), ("tiny_test", (40, 56), 3), ("compact_cnn", 64, 2)])
def test_detector_outputs_one_row_per_grid_location(backbone, size, classes):
    model = build_detector(backbone, classes, weights=None, input_shape=size)
    sides = (size, size) if isinstance(size, int) else size
    grid = feature_grid(backbone, sides)
    assert model.output_shape == (None, grid.size, classes + 4)
    x = np.random.default_rng(0).uniform(0, 255, (2, *sides, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    assert ((out[..., :classes] > 0) & (out[..., :classes] < 1)).all()
    # Untrained, every box sits about one cell around its own location.
    centres = grid.centres()
    middle = (out[..., classes:classes + 2] + out[..., classes + 2:]) / 2
    np.testing.assert_allclose(middle[0], centres, atol=0.3 * max(grid.strides) / min(sides))
    # The packed pyramid is what phase 1 caches: both levels of every image.
    packed = model.get_layer("backbone").output_shape[-1]
    spec = get_spec(backbone)
    assert len(spec.pyramid) == len(grid.levels) and packed > 0


def test_every_family_with_maps_names_a_pyramid_and_vectors_refuse():
    with_maps = [n for n in list_backbones() if get_spec(n).pyramid]
    assert "efficientnet_lite0" in with_maps and "tiny_test" in with_maps
    assert not get_spec("lenet").pyramid
    with pytest.raises(ConfigError, match="no feature maps"):
        build_detector("lenet", 2, weights=None, input_shape=32)


# --- target encoder ---------------------------------------------------------------------

def test_assign_centre_samples_each_object_on_its_level():
    small = (0, 0.40, 0.40, 0.52, 0.52)  # 7.7 px: stride 8's cells
    large = (2, 0.05, 0.05, 0.95, 0.70)  # ~48 px: stride 16's
    targets = assign(_rows(small, large), GRID, 3).numpy()
    assert targets.shape == (GRID.size, 7)
    pos = targets[:, :3].max(axis=1) > 0
    small_at = np.flatnonzero(pos[:64])
    large_at = np.flatnonzero(pos[64:]) + 64
    assert len(small_at) >= 1 and len(large_at) >= 4
    assert (targets[small_at, 0] == 1).all() and (targets[large_at, 2] == 1).all()
    np.testing.assert_allclose(targets[small_at, 3:], np.tile(small[1:], (len(small_at), 1)))
    centres = GRID.centres()
    # Positives lie within 1.5 cells of the object's centre (and the home cell is one).
    cx, cy = 0.46, 0.46
    assert (np.abs(centres[small_at] - [cx, cy]) <= 1.5 * 8 / 64 + 1e-6).all()
    home = int(np.argmin(np.abs(centres[:64] - [cx, cy]).sum(axis=1)))
    assert home in small_at
    assert not pos[~np.isin(np.arange(GRID.size), np.r_[small_at, large_at])].any()
    assert list(object_levels(tf.constant(_rows(small, large)[:2]), GRID).numpy()) == [0, 1]


def test_assign_gives_a_shared_location_to_the_smaller_object_and_skips_padding():
    a = (0, 0.30, 0.30, 0.60, 0.60)
    b = (1, 0.32, 0.32, 0.58, 0.58)  # smaller, same centre, same level
    alone_a = assign(_rows(a), GRID, 2).numpy()[:, :2].max(axis=1) > 0
    alone_b = assign(_rows(b), GRID, 2).numpy()[:, :2].max(axis=1) > 0
    targets = assign(_rows(a, b), GRID, 2).numpy()
    shared = alone_a & alone_b
    assert shared.any() and (alone_a & ~alone_b).any()
    assert (targets[shared, 1] == 1).all()  # claimed by the smaller b
    assert (targets[alone_a & ~alone_b, 0] == 1).all()  # a keeps the rest
    np.testing.assert_allclose(targets[shared, 2:], np.tile(b[1:], (shared.sum(), 1)))
    empty = assign(_rows(), GRID, 2).numpy()
    assert not empty.any()  # padding rows (class -1) assign nothing
    inverted = assign(_rows((0, 0.6, 0.6, 0.4, 0.4)), GRID, 2).numpy()
    assert not inverted.any()


def test_encode_puts_object_rows_first_then_the_dense_targets():
    rows = _rows((1, 0.1, 0.2, 0.5, 0.6), count=4)
    both = encode(rows, GRID, 3).numpy()
    assert both.shape == (4 + GRID.size, 7)
    np.testing.assert_array_equal(both[:4, :5], rows)
    assert not both[:4, 5:].any()
    np.testing.assert_array_equal(both[4:], assign(rows, GRID, 3).numpy())
    assert encode(rows, None, 3).shape == (4, 7)  # unbound: the object rows alone


# --- loss -------------------------------------------------------------------------------

def _labels(rows, grid=GRID, classes=3):
    return encode(rows, grid, classes).numpy()[None]


def test_loss_is_small_for_the_targets_and_grows_with_wrong_scores_and_boxes():
    rows = _rows((1, 0.2, 0.2, 0.5, 0.6))
    y = _labels(rows)
    dense = y[:, 5:]
    perfect = np.concatenate([np.clip(dense[..., :3], 0.001, 0.999), dense[..., 3:]], -1)
    pos = dense[0, :, :3].max(axis=1) > 0
    perfect[0, ~pos, 3:] = [0.0, 0.0, 0.1, 0.1]  # negatives' boxes are not scored
    loss = DetectionLoss(box_weight=1.0)
    base = float(loss(y, perfect))
    assert base < 0.01
    wrong_class = perfect.copy()
    wrong_class[0, pos, :3] = perfect[0, pos][:, [1, 0, 2]]
    moved = perfect.copy()
    moved[0, pos, 3:] += 0.1
    assert float(loss(y, wrong_class)) > base + 1.0
    assert float(loss(y, moved)) > base + 0.1
    classes_only = float(DetectionLoss(box_weight=0.0)(y, perfect))
    assert float(DetectionLoss(box_weight=0.0)(y, moved)) == pytest.approx(classes_only,
                                                                           abs=1e-7)
    # The box term alone (weight 1): mean (1 - CIoU) over the positive locations plus
    # the corners' mean absolute error relative to the object's width and height.
    true_box = dense[0, pos, 3:]
    ciou = keras.ops.convert_to_numpy(keras.utils.bounding_boxes.compute_ciou(
        true_box, moved[0, pos, 3:], "xyxy"))
    side = np.concatenate([true_box[:, 2:] - true_box[:, :2]] * 2, axis=1)
    relative = np.mean(np.abs(moved[0, pos, 3:] - true_box) / side, axis=1)
    assert float(loss(y, moved)) - float(DetectionLoss(box_weight=0.0)(y, moved)) == \
        pytest.approx(float(np.mean(1 - ciou + relative)), rel=1e-4)
    with pytest.raises(ConfigError, match="without the model's grid"):
        loss(encode(rows, None, 3).numpy()[None], perfect)


def test_paired_iou_against_a_hand_computed_one():
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4]], np.float32)
    b = np.array([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 0.6, 0.6]], np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(paired_iou(a, b)),
                               [0.0625 / (0.25 + 0.25 - 0.0625), 0.0], atol=1e-6)


# --- post-processing --------------------------------------------------------------------

def _outputs(rows):
    """Dense outputs [L, C + 4] from (scores..., box) rows."""
    return np.asarray(rows, np.float32)


def test_postprocess_keeps_the_best_of_overlapping_boxes_per_class():
    out = _outputs([
        [0.9, 0.1, 0.10, 0.10, 0.40, 0.40],   # class 0, best
        [0.8, 0.0, 0.12, 0.11, 0.41, 0.40],   # class 0, overlaps the best: dropped
        [0.0, 0.7, 0.11, 0.10, 0.40, 0.41],   # class 1, same place: kept (per class)
        [0.3, 0.0, 0.60, 0.60, 0.90, 0.90],   # class 0 elsewhere, above threshold
        [0.2, 0.1, 0.70, 0.10, 0.90, 0.30],   # under the threshold
        [0.0, 0.95, -0.1, 0.50, 0.30, 1.20]])  # clipped to the image
    found = {k: v.numpy() for k, v in detect_one(
        out, score_threshold=0.25, max_detections=6, iou_threshold=0.5).items()}
    assert found["count"] == 4
    np.testing.assert_allclose(found["scores"], [0.95, 0.9, 0.7, 0.3, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(found["classes"], [1, 0, 1, 0, -1, -1])
    np.testing.assert_allclose(found["boxes"][0], [0.0, 0.5, 0.3, 1.0], atol=1e-6)
    assert not found["boxes"][4:].any()
    batch = postprocess(np.stack([out, out[::-1]]), score_threshold=0.25,
                        max_detections=2, iou_threshold=0.5)
    assert batch["boxes"].shape == (2, 2, 4) and list(batch["count"].numpy()) == [2, 2]
    np.testing.assert_allclose(batch["scores"].numpy(), [[0.95, 0.9]] * 2, atol=1e-6)


def test_postprocess_converts_to_tflite_builtin_ops_only():
    """NMS in the graph converts without Flex ops (NON_MAX_SUPPRESSION_V5)."""
    fn = tf.function(lambda x: detect_one(x[0], score_threshold=0.25, max_detections=5),
                     input_signature=[tf.TensorSpec([1, 20, 6], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()  # raises if any op needed Flex
    from transferkit.deploy.predictors import tflite_interpreter
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nms.tflite")
        with open(path, "wb") as f:
            f.write(content)
        interpreter = tflite_interpreter(path)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "NON_MAX_SUPPRESSION_V5" in ops
