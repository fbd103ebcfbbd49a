"""`evaluation.gradcam`: the heat map falls on the region that decides the class.

The images are noise with one coloured square (red: class 0, green: class 1) of 5-10
px at a random place: only the square tells the classes apart, so a model that is right
on new images has learnt it, and its Grad-CAM must point there.
"""

import keras
import numpy as np
import pytest

from transferkit.evaluation.gradcam import grad_cam, overlay
from transferkit.models.builder import build_model
from transferkit.training.freezing import FreezePolicy
from transferkit.training.orchestrator import fine_tune
from transferkit.training.schedule import PhaseConfig, ScheduleConfig

SIZE = 40
COLOURS = np.array([[255, 0, 0], [0, 255, 0]], "float32")
MARGIN = 1  # px around the square: the 4-px cells of the maps, resized, blur its edge


def _patch_images(n, seed):
    """(images [n, SIZE, SIZE, 3], labels [n], squares [(row, col, side)])."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
    labels = np.arange(n) % 2
    squares = []
    for image, label in zip(images, labels):
        side = int(rng.integers(5, 11))
        row, col = rng.integers(0, SIZE - side + 1, 2)
        image[row:row + side, col:col + side] = COLOURS[label]
        squares.append((int(row), int(col), side))
    return images, labels, squares


def _region(square):
    """The square (with MARGIN) as a boolean [SIZE, SIZE] mask."""
    row, col, side = square
    mask = np.zeros((SIZE, SIZE), bool)
    mask[max(row - MARGIN, 0):row + side + MARGIN, max(col - MARGIN, 0):col + side + MARGIN] = 1
    return mask


def _peak_inside(heatmap, square):
    return bool(heatmap.max() > 0 and _region(square).flat[np.argmax(heatmap)])


def _mass_ratio(heatmap, square):
    """The heat map's share of mass on the square over the square's share of the image:
    1 for a uniform map, 0 for one that misses it (and for an all-zero map)."""
    region = _region(square)
    total = float(heatmap.sum())
    return 0.0 if total <= 0 else float(heatmap[region].sum()) / total / region.mean()


@pytest.fixture(scope="module")
def patch_model():
    """tiny_test, trained from random weights on 160 square images until it is right on
    40 new ones; returns (model, new images, their labels, their squares)."""
    keras.utils.set_random_seed(0)
    model = build_model("tiny_test", 2, weights=None, image_size=SIZE)
    x, y, _ = _patch_images(160, seed=0)
    config = ScheduleConfig(
        head=PhaseConfig(epochs=0),
        finetune=PhaseConfig(epochs=8, learning_rate=1e-2, decay="constant",
                             freeze=FreezePolicy("none", train_batchnorm=True),
                             early_stopping_patience=None), batch_size=32)
    fine_tune(model, (x, y), config=config, verbose=0)
    images, labels, squares = _patch_images(40, seed=1)
    accuracy = np.mean(model.predict(images, verbose=0).argmax(axis=1) == labels)
    assert accuracy == 1.0, f"the model did not learn the squares: accuracy {accuracy}"
    return model, images, labels, squares


def test_the_criterion_fails_a_map_of_zeros_or_a_uniform_map():
    square = (10, 20, 6)
    for heatmap in (np.zeros((SIZE, SIZE)), np.ones((SIZE, SIZE))):
        assert _mass_ratio(heatmap, square) <= 1.0 + 1e-9
    assert not _peak_inside(np.zeros((SIZE, SIZE)), square)
    spot = np.zeros((SIZE, SIZE))
    spot[12, 22] = 1  # all the mass on the square
    assert _peak_inside(spot, square) and _mass_ratio(spot, square) > 10


def test_grad_cam_highlights_the_square_that_decides_the_class(patch_model):
    model, images, labels, squares = patch_model
    peaks, ratios = [], []
    for image, label, square in zip(images, labels, squares):
        heatmap = grad_cam(model, image, class_index=int(label))
        assert heatmap.shape == (SIZE, SIZE) and heatmap.max() == pytest.approx(1.0)
        peaks.append(_peak_inside(heatmap, square))
        ratios.append(_mass_ratio(heatmap, square))
    # The peak on the square (with its 1-px margin) in nearly every image, and on each
    # image at least 3x the square's share of the image's mass on it (uniform: 1x).
    assert np.mean(peaks) >= 0.9, peaks
    assert min(ratios) >= 3.0, sorted(ratios)[:5]


def test_the_default_class_is_the_predicted_one(patch_model):
    model, images, labels, _ = patch_model
    for image, label in zip(images[:4], labels[:4]):
        np.testing.assert_allclose(grad_cam(model, image),
                                   grad_cam(model, image, class_index=int(label)))


def test_the_overlay_blends_the_jet_colours_into_the_image():
    image = np.full((4, 4, 3), 100, np.uint8)
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 1.0
    blended = overlay(image, heatmap, alpha=0.5)
    assert blended.shape == (4, 4, 3) and blended.dtype == np.uint8
    # jet(1.0) is dark red, jet(0.0) dark blue: the hot pixel turns red, the others blue.
    assert blended[0, 0, 0] > 100 > blended[0, 0, 2]
    assert blended[1, 1, 2] > 100 > blended[1, 1, 0]


def test_a_model_without_feature_maps_is_refused_with_its_shape():
    # A dense detection head packs the pyramid's maps into one vector: no class map to
    # weigh, so Grad-CAM refuses instead of drawing a meaningless heat map.
    from transferkit.core.errors import ConfigError
    from transferkit.models.detection import build_detector

    detector = build_detector("tiny_test", 2, weights=None, input_shape=32, width=8)
    image = np.zeros((32, 32, 3), "float32")
    refusal = r"outputs shape \(None, \d+\), so Grad-CAM does not apply"
    with pytest.raises(ConfigError, match=refusal):
        grad_cam(detector, image)
