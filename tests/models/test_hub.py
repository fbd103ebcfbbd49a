"""KerasHub backbones (`hub:PRESET`), offline, on a tiny ViT preset the tests save."""

import importlib.util

import keras
import numpy as np
import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.training.recipe import load_recipe
from transferkit.models import HeadConfig, build_model, get_spec, hub, load_model, save_model
from transferkit.models.blocks import block_layout
from transferkit.training.boundary import find_cut
from transferkit.training.freezing import freeze, layer_depths
from transferkit.training.schedule import PhaseConfig, ScheduleConfig, compile_phase

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


def _vit_model(folder):
    # No head dropout: a training step is then a deterministic function of the batch.
    return build_model(f"hub:{folder}", 3, head=HeadConfig(dropout=0.0))


def _batch(n=4):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    return x, keras.utils.to_categorical(np.arange(n) % 3, 3)


def _phase(**kwargs):
    return PhaseConfig(**{"epochs": 1, "optimizer": "sgd", "decay": "constant",
                          "early_stopping_patience": None, **kwargs})


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
    # The class token is the feature vector (see below for the transformer's blocks).
    assert model.get_layer("backbone").layers[-1].name == "class_token"


@needs_hub
@pytest.mark.slow  # ~25 s on a loaded 2-core machine
def test_train_on_a_hub_preset_and_reload_the_run(preset, tmp_path):
    folder, _ = preset
    images = make_image_folder(tmp_path / "images", per_class=6, size=32)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", images, "--backbone", f"hub:{folder}",
                     "--head-epochs", "1", "--finetune-epochs", "1", "--batch-size", "4",
                     "--no-report", "--no-cache-features", "--layer-lr-decay", "0.8",
                     "--out", str(out)]) == 0
    saved = load_recipe(str(out / "config.json"))
    assert saved.schedule.finetune.layer_lr_decay == 0.8
    model = load_model(out / "model.keras")  # safe mode: KerasHub's classes, no code
    assert model.optimizer.layer_lr_decay == 0.8
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
        model = build_model(f"hub:{folder}", 3, input_shape=48)  # any size: a CNN
        backbone = model.get_layer("backbone")
        assert len(backbone.layers) > 10  # its own layers, each a block
        x = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
        save_model(model, tmp_path / "m.keras")
        np.testing.assert_allclose(load_model(tmp_path / "m.keras").predict(x, verbose=0),
                                   model.predict(x, verbose=0), atol=1e-5)


@needs_hub
def test_transformer_blocks_are_the_blocks_last_blocks_unfreezes(preset):
    folder, _ = preset
    model = _vit_model(folder)
    layout = block_layout(model.get_layer("backbone"), get_spec(f"hub:{folder}"))
    keras_hub = pytest.importorskip("keras_hub")
    num_layers = keras_hub.models.Backbone.from_preset(folder, load_weights=False).num_layers
    # Found by structure: the embedding is the stem, then one block per encoder block.
    assert layout.nested and len(layout.labels) - 1 == num_layers == 2
    assert layout.labels == ("stem", "transformer_block_1", "transformer_block_2")
    audit = freeze(model, "last_blocks:1")
    assert [b.block for b in audit.blocks] == list(layout.labels)
    assert [b.trainable_params > 0 for b in audit.blocks] == [False, False, True]
    # Phase 2 for one SGD step: the last block, the final norm and the head move; the
    # embedding and the lower block do not.
    before = {v.path: v.numpy().copy() for v in model.weights}
    compile_phase(model, _phase(learning_rate=0.5, freeze="last_blocks:1"), ScheduleConfig(),
                  get_task("multiclass"))
    model.train_on_batch(*_batch())
    moved = {v.path for v in model.weights if not np.array_equal(v.numpy(), before[v.path])}
    top = ("vit_encoder/transformer_block_2/", "vit_encoder/ln/", "head_")
    assert moved and all(path.startswith(top) for path in moved), moved
    for path in ("vit_encoder/transformer_block_2/mha/query/kernel",
                 "vit_encoder/transformer_block_2/mlp/dense_2/kernel",
                 "vit_encoder/ln/gamma", "head_predictions/kernel"):
        assert path in moved
    assert audit.trainable_params == sum(before[p].size for p in before if p.startswith(top))
    # The boundary cache cannot cut inside the KerasHub model: phase 2 runs live, saying so.
    assert find_cut(model) == (None, "the frozen layers are inside 'vi_t_backbone', a nested "
                                     "layer the boundary cache cannot cut inside")
    with pytest.raises(ConfigError, match="No layer named 'block9'.*transformer_block_1"):
        freeze(model, "from_layer:block9")


@needs_hub
def test_layer_lr_decay_scales_one_sgd_step_by_decay_to_the_depth(preset):
    import tensorflow as tf

    folder, _ = preset
    model = _vit_model(folder)
    lr, decay = 0.1, 0.5
    compile_phase(model, _phase(learning_rate=lr, freeze="none", layer_lr_decay=decay),
                  ScheduleConfig(), get_task("multiclass"))
    x, y = _batch()
    variables = model.trainable_variables
    with tf.GradientTape() as tape:  # the gradient, computed apart from Keras's step
        loss = keras.losses.CategoricalCrossentropy()(y, model(x, training=True))
    gradients = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]
    before = [v.numpy().copy() for v in variables]
    model.train_on_batch(x, y)
    depths = layer_depths(model)
    assert sorted(set(depths.values())) == [0, 1, 2]  # block 2 + norm, block 1, embedding
    for variable, start, gradient in zip(variables, before, gradients):
        depth = depths.get(variable.path)  # None: the head, at the full rate
        rate = lr * (1.0 if depth is None else decay ** depth)
        np.testing.assert_allclose(start - variable.numpy(), rate * gradient,
                                   rtol=1e-3, atol=1e-8, err_msg=variable.path)
    assert any(path.startswith("vit_patching") for path in depths)


@needs_hub
def test_layer_lr_decay_survives_get_config_and_a_saved_model(preset, tmp_path):
    folder, _ = preset
    model = _vit_model(folder)
    compile_phase(model, _phase(learning_rate=1e-3, freeze="last_blocks:2",
                                layer_lr_decay=0.7), ScheduleConfig(), get_task("multiclass"))
    optimizer = model.optimizer
    again = type(optimizer).from_config(optimizer.get_config())
    assert (again.layer_lr_decay, again.depths) == (0.7, optimizer.depths)
    assert again.depths["vit_encoder/transformer_block_1/mlp/dense_1/kernel"] == 1
    model.train_on_batch(*_batch())
    save_model(model, tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras").optimizer
    assert (loaded.layer_lr_decay, loaded.depths) == (0.7, optimizer.depths)


@needs_hub
def test_block_layout_is_found_by_structure_not_by_names():
    import dataclasses

    keras_hub = pytest.importorskip("keras_hub")
    deit = keras_hub.models.DeiTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=3,
                                         num_heads=2, hidden_dim=16, intermediate_dim=32)
    spec = dataclasses.replace(get_spec("tiny_test"), nested_blocks=True)
    layout = block_layout(deit, spec)
    assert layout.nested and len(layout.labels) - 1 == deit.num_layers == 3
    # Every variable is in exactly one unit, so freezing by unit misses none.
    paths = [v.path for unit in layout.units for v in unit.weights]
    assert sorted(paths) == sorted(v.path for v in deit.weights)
    # Without nested_blocks the spec's pattern applies to the top-level layers, as before.
    assert not block_layout(deit, get_spec("tiny_test")).nested
