"""KerasHub backbones (`hub:PRESET`), offline, on a tiny ViT preset the tests save."""

import importlib.util

import keras
import numpy as np
import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.models import build_model, get_spec, hub, load_model
from transferkit.training.freezing import FreezePolicy, freeze

needs_hub = pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None,
                               reason="keras-hub not installed (transferkit[hub])")


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny ViT preset folder: backbone config + weights + image converter."""
    keras_hub = pytest.importorskip("keras_hub")
    folder = str(tmp_path_factory.mktemp("hub") / "tiny_vit")
    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32)
    backbone.save_to_preset(folder)
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5,
                                       offset=-1).save_to_preset(folder)
    # Backbones registered here vanish after this module.
    from transferkit.models import registry

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        patch.setattr(hub, "_SPECS", {})
        yield folder, backbone.get_weights()


@needs_hub
def test_preset_backbone_builds_with_its_weights_and_converter(preset):
    folder, weights = preset
    spec = get_spec(f"hub:{folder}")
    assert (spec.name, spec.default_size, spec.min_size, spec.feature_size) == (
        "hub_tiny_vit", 32, 32, 16)
    assert spec.preprocessing == "tf"  # the converter's x / 127.5 - 1, found by probing
    model = build_model(f"hub:{folder}", 3)  # weights: the preset's own
    nested = model.get_layer("backbone").layers[1]
    for got, saved in zip(nested.get_weights(), weights):
        np.testing.assert_array_equal(got, saved)
    fresh = build_model(f"hub:{folder}", 3, weights=None)
    assert not all(np.array_equal(a, b) for a, b in zip(
        fresh.get_layer("backbone").layers[1].get_weights(), weights))
    # The class token is the feature vector; last_blocks:1 trains only the layer above
    # the transformer, last_blocks:2 the transformer too.
    freeze(model, FreezePolicy("last_blocks", 2))
    assert [l.name for l in model.get_layer("backbone").layers if l.trainable] == [
        nested.name, "class_token"]


@needs_hub
@pytest.mark.slow  # ~25 s on a loaded 2-core machine
def test_train_on_a_hub_preset_and_reload_the_run(preset, tmp_path):
    folder, _ = preset
    images = make_image_folder(tmp_path / "images", per_class=6, size=32)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", images, "--backbone", f"hub:{folder}",
                     "--head-epochs", "1", "--finetune-epochs", "1", "--batch-size", "4",
                     "--no-report", "--no-cache-features", "--out", str(out)]) == 0
    model = load_model(out / "model.keras")  # safe mode: KerasHub's classes, no code
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 2)


@needs_hub
def test_converter_modes_are_probed_not_assumed():
    keras_hub = pytest.importorskip("keras_hub")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    torch_like = keras_hub.layers.ResNetImageConverter(
        image_size=(8, 8), scale=list(1 / (255 * std)), offset=list(-mean / std))
    assert hub.preprocessing_mode(torch_like, 8) == "torch"
    odd = keras_hub.layers.ResNetImageConverter(image_size=(8, 8), scale=0.5)
    with pytest.raises(ConfigError, match="scale=0.5"):
        hub.preprocessing_mode(odd, 8)


def test_hub_needs_keras_hub_and_a_preset(monkeypatch):
    with pytest.raises(ConfigError, match="after `hub:`"):
        get_spec("hub:")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "keras_hub" else real(name, *a))
    with pytest.raises(ConfigError, match=r"transferkit\[hub\]"):
        get_spec("hub:not_loaded_yet_preset")


@needs_hub
def test_cnn_preset_takes_any_size_and_reloads(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    from transferkit.models import registry, save_model

    folder = str(tmp_path / "tiny_resnet")
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2],
        block_type="basic_block").save_to_preset(folder)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=list(1 / (255 * std)),
                                          offset=list(-mean / std)).save_to_preset(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        spec = get_spec(f"hub:{folder}")
        assert (spec.default_size, spec.min_size, spec.preprocessing) == (32, 32, "torch")
        model = build_model(f"hub:{folder}", 3, image_size=48)  # any size: a CNN
        backbone = model.get_layer("backbone")
        assert len(backbone.layers) > 10  # its own layers, each a block
        x = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
        save_model(model, tmp_path / "m.keras")
        np.testing.assert_allclose(load_model(tmp_path / "m.keras").predict(x, verbose=0),
                                   model.predict(x, verbose=0), atol=1e-5)
