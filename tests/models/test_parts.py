"""Bring your own model: a functional model built by hand, with its parts named,
fine-tunes in two phases like one from `build_model`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit.core.errors import ConfigError
from transferkit.evaluation.gradcam import grad_cam
from transferkit.models import ModelParts, build_model, resolve_parts
from transferkit.training.cache import FeatureCache
from transferkit.training.freezing import FreezePolicy
from transferkit.training.orchestrator import Position, fine_tune
from transferkit.training.schedule import PhaseConfig, ScheduleConfig

SIZE = 32


def _user_model():
    """What a Keras user writes: preprocessing, a nested Keras Applications backbone,
    pooling and a classifier, with their own names."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale")(inputs)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                          input_shape=(SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(x, training=False))
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="my_classifier"), base


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = rng.uniform(0, 60, (n, SIZE, SIZE, 3)).astype("float32")
    x[np.arange(n), :, :, labels] += 180
    return x, labels


def _snapshot(layers):
    return {w.path: keras.ops.convert_to_numpy(w).copy() for layer in layers
            for w in layer.weights}


def test_a_hand_built_model_fine_tunes_in_two_phases_with_the_right_layers_frozen():
    model, base = _user_model()
    parts = ModelParts(backbone=base.name, features="gap", spec="mobilenet_v2")
    x, y = _data()
    config = ScheduleConfig(
        head=PhaseConfig(epochs=2, learning_rate=1e-2, early_stopping_patience=None),
        finetune=PhaseConfig(epochs=1, learning_rate=1e-3, freeze="last_blocks:1",
                             early_stopping_patience=None), batch_size=8)
    start_backbone, start_head = _snapshot([base]), _snapshot([model.get_layer("predictions")])
    result = fine_tune(model, (x, y), config=config, parts=parts, cache=FeatureCache(),
                       stop_epoch=config.head.epochs, verbose=0)
    after = _snapshot([base])
    for path, value in start_backbone.items():  # phase 1: not one backbone weight moved
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    head_now = _snapshot([model.get_layer("predictions")])
    assert all(not np.array_equal(head_now[p], v) for p, v in start_head.items())
    assert result.audits["head"].trainable_params == 3 * base.output_shape[-1] + 3

    result = fine_tune(model, (x, y), config=config, parts=parts,
                       start=Position("finetune", 2, 2), verbose=0)
    final = _snapshot([base])
    trainable = {w.path for w in base.trainable_weights}
    assert trainable == {"block_16_expand/kernel", "block_16_depthwise/kernel",
                         "block_16_project/kernel", "Conv_1/kernel"}  # last block + top
    for path, value in after.items():
        if path in trainable:
            assert not np.array_equal(final[path], value), f"{path} should have trained"
        else:  # every frozen layer, and every BatchNorm statistic
            np.testing.assert_array_equal(final[path], value, err_msg=path)
    assert [r["phase"] for r in result.history] == ["finetune"]


def test_parts_are_named_not_guessed():
    model, base = _user_model()
    with pytest.raises(ConfigError, match=r"no layer named 'backbone'.*ModelParts"):
        fine_tune(model, _data(), verbose=0)
    with pytest.raises(ConfigError, match="no layer named 'gapp'.*Did you mean 'gap'"):
        resolve_parts(model, ModelParts(backbone=base.name, features="gapp"))
    with pytest.raises(ConfigError, match="should name a nested model"):
        resolve_parts(model, ModelParts(backbone="gap"))
    resolved = resolve_parts(model, ModelParts(backbone=base.name, features="gap"))
    head_paths = {v.path for v in resolved.head_variables()}
    assert head_paths == {"predictions/kernel", "predictions/bias"}
    assert resolved.spec is None  # not guessed from the model's name either


def test_discriminative_rates_and_grad_cam_follow_the_named_parts():
    model, base = _user_model()
    parts = ModelParts(backbone=base.name, features="gap", spec="mobilenet_v2")
    x, y = _data(8)
    start = model.get_weights()
    moved = {}
    for multiplier in (1.0, 0.1):
        model.set_weights(start)
        keras.utils.set_random_seed(0)
        config = ScheduleConfig(
            head=PhaseConfig(epochs=0),
            # BatchNorm trains here: a random MobileNetV2 with frozen BN pools to ~0,
            # and a zero feature would move no kernel at all.
            finetune=PhaseConfig(epochs=1, learning_rate=1e-2, optimizer="sgd",
                                 freeze=FreezePolicy("none", train_batchnorm=True),
                                 early_stopping_patience=None,
                                 backbone_lr_multiplier=multiplier), batch_size=8)
        fine_tune(model, (x, y), config=config, parts=parts, verbose=0)
        moved[multiplier] = {w.path: np.abs(np.asarray(w) - s).sum()
                             for w, s in zip(model.weights, start)}
    head = moved[0.1]["predictions/kernel"] / moved[1.0]["predictions/kernel"]
    conv = moved[0.1]["Conv1/kernel"] / moved[1.0]["Conv1/kernel"]
    assert head == pytest.approx(1.0, rel=0.02) and conv == pytest.approx(0.1, rel=0.02)
    heatmap = grad_cam(model, x[0], parts=parts)
    # Independently: Grad-CAM on the maps of the backbone the parts name, by hand.
    maps = base(model.get_layer("scale")(x[:1]), training=False)
    with tf.GradientTape() as tape:
        tape.watch(maps)
        probs = model.get_layer("predictions")(model.get_layer("gap")(maps))
        score = probs[0, int(np.argmax(probs[0]))]
    grads = tape.gradient(score, maps)[0].numpy()
    cam = np.maximum(np.sum(maps[0].numpy() * grads.mean(axis=(0, 1)), axis=-1), 0)
    expected = tf.image.resize(cam[..., None], (SIZE, SIZE))[..., 0].numpy()
    assert expected.max() > 0  # something to find: an all-zero map would not match
    np.testing.assert_allclose(heatmap, expected / expected.max(), atol=1e-4)
    # The same functions on a build_model model need no parts at all.
    assert grad_cam(build_model("tiny_test", 2, weights=None, input_shape=SIZE),
                    x[0]).shape == (SIZE, SIZE)
