"""Preprocessing inside the model equals Keras's own `preprocess_input`, applied once.

Reference: `keras.applications.<family>.preprocess_input` on raw 0-255 pixels, then the
*same* backbone (weights=None, so the test is offline), then global average pooling.
"""

import importlib

import keras
import numpy as np
import pytest

from transferkit.models.registry import get_spec, list_backbones
from transferkit.models.layers import Preprocess
from transferkit.models import build_model, resolve_parts
from transferkit.core.errors import ConfigError

# backbone, keras.applications module, image size, backbone kwargs
CASES = [
    ("mobilenet_v2", "mobilenet_v2", 32, {"alpha": 0.35}),
    ("resnet50", "resnet", 32, {}),
    ("efficientnet_b0", "efficientnet", 32, {}),
    ("inception_v3", "inception_v3", 75, {}),
    ("vgg16", "vgg16", 32, {}),
]


def _raw_images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _reference(model, module, images):
    keras_prep = importlib.import_module(f"keras.applications.{module}").preprocess_input
    maps = model.get_layer("backbone")(keras_prep(images.copy()), training=False)
    return keras.ops.convert_to_numpy(keras.ops.mean(maps, axis=(1, 2)))


def _close(actual, expected):
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * max(scale, 1e-6))


@pytest.mark.parametrize("backbone, module, size, kwargs", CASES,
                         ids=[c[0] for c in CASES])
def test_features_equal_keras_preprocess_input_then_backbone(backbone, module, size,
                                                             kwargs):
    model = build_model(backbone, 3, weights=None, input_shape=size, backbone_kwargs=kwargs)
    images = _raw_images(2, size)
    features = resolve_parts(model).feature_extractor().predict(images, verbose=0)
    assert features.shape == (2, get_spec(backbone).feature_size)
    _close(features, _reference(model, module, images))


def test_every_keras_spec_matches_its_modules_preprocess_input():
    # No model needed: each spec's mode against the preprocess_input of the module that
    # defines its constructor (keras.src.applications.<family>), for the whole registry.
    images = _raw_images(2, 8, seed=3)
    names = list_backbones(tag="keras")
    assert len(names) >= 40  # 20 rows + EfficientNetB0-B7, V2 (7), ConvNeXt (5)
    for name in names:
        spec = get_spec(name)
        module = importlib.import_module(spec.constructor.__module__)
        expected = module.preprocess_input(images.copy())
        actual = keras.ops.convert_to_numpy(Preprocess(spec.preprocessing)(images))
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4, err_msg=name)


def test_internally_normalising_backbones_get_no_second_normalisation():
    # EfficientNet, ConvNeXt and MobileNetV3 rescale inside the network; their Keras
    # preprocess_input is the identity, so the model must pass raw pixels through.
    for name in ("efficientnet_b0", "efficientnet_v2_b0", "convnext_tiny",
                 "mobilenet_v3_small"):
        assert get_spec(name).preprocessing == "none", name
    images = _raw_images(2, 8)
    for module in ("efficientnet", "efficientnet_v2", "convnext", "mobilenet_v3"):
        prep = importlib.import_module(f"keras.applications.{module}").preprocess_input
        np.testing.assert_array_equal(prep(images.copy()), images)
    np.testing.assert_array_equal(Preprocess("none")(images), images)


def test_preprocess_layer_matches_imagenet_utils():
    images = _raw_images(2, 8, seed=1)
    for mode in ("caffe", "tf", "torch"):
        expected = keras.applications.imagenet_utils.preprocess_input(images.copy(),
                                                                      mode=mode)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocess(mode)(images)),
                                   expected, rtol=1e-5, atol=1e-4, err_msg=mode)
        assert not np.allclose(expected, images)


def test_preprocess_layer_unit_mode_and_bad_mode():
    images = _raw_images(1, 4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocess("unit")(images)),
                               images / 255.0, rtol=1e-6)
    with pytest.raises(ConfigError, match="mode"):
        Preprocess("imagenet")


def test_resize_accepts_other_input_sizes():
    model = build_model("tiny_test", 2, weights=None, input_shape=16, resize=True)
    assert model.input_shape == (None, None, None, 3)
    extract = resolve_parts(model).feature_extractor()
    big = _raw_images(2, 40)
    expected = keras.ops.image.resize(big, (16, 16))  # Resizing's default: bilinear
    # tiny_test uses "tf" preprocessing, which is what mobilenet_v2's preprocess_input does.
    _close(extract.predict(big, verbose=0),
           _reference(model, "mobilenet_v2", keras.ops.convert_to_numpy(expected)))
    wide = np.random.default_rng(1).uniform(0, 255, (3, 20, 30, 3)).astype("float32")
    assert model.predict(wide, verbose=0).shape == (3, 2)


def test_saved_model_keeps_its_preprocessing(tmp_path):
    from transferkit.models.saving import load_model, save_model

    model = build_model("tiny_test", 2, weights=None, input_shape=16)
    path = save_model(model, str(tmp_path / "m.keras"))
    loaded = load_model(path)  # safe mode: Preprocess is a registered class, no Lambda
    images = _raw_images(2, 16)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    assert loaded.get_layer("preprocess").mode == "tf"
