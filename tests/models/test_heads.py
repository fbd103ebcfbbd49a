"""Heads: every task learns a tiny separable dataset; config errors name the argument."""

import dataclasses

import keras
import numpy as np
import pytest

from conftest import make_image_folder
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task, task_for_model
from transferkit.models.heads import HeadConfig, build_head
from transferkit.models.builder import build_model
from transferkit.training.schedule import PhaseConfig, ScheduleConfig
from transferkit.training.orchestrator import fine_tune

SIZE = 16


def _images(levels, seed):
    """Raw 0-255 images: channel c is 30 + 180 * levels[:, c], plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 40, (len(levels), SIZE, SIZE, 3))
    return (x + 180 * levels[:, None, None, :]).astype("float32")


def _task_data(task, n, seed):
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        labels = np.arange(n) % 3
        return _images(np.eye(3)[labels], seed), np.eye(3, dtype="float32")[labels]
    if task == "binary":
        labels = np.arange(n) % 2
        return _images(np.eye(3)[labels * 2], seed), labels[:, None].astype("float32")
    if task == "multilabel":
        hot = rng.integers(0, 2, (n, 3)).astype("float32")
        return _images(hot, seed), hot
    level = rng.uniform(0, 1, n).astype("float32")  # regression: overall brightness
    return _images(np.repeat(level[:, None], 3, axis=1), seed), level[:, None]


def _head_only(epochs, lr=3e-2):
    return ScheduleConfig(head=PhaseConfig(epochs=epochs, learning_rate=lr,
                                           early_stopping_patience=None),
                          finetune=PhaseConfig(epochs=0), batch_size=16)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_each_task_learns_a_separable_dataset(task):
    # width 32: enough random features for a linear head to separate every label
    model = build_model("tiny_test", 3, weights=None, input_shape=SIZE,
                        task=task, head=HeadConfig(dropout=0.0),
                        backbone_kwargs={"width": 32})
    assert task_for_model(model).name == task
    train, test = _task_data(task, 64, seed=1), _task_data(task, 30, seed=2)
    result = fine_tune(model, train, config=_head_only(30), verbose=0)
    assert len(result.history) == 30
    scores = model.evaluate(*test, return_dict=True, verbose=0)
    if task == "regression":
        baseline = float(np.abs(test[1] - train[1].mean()).mean())
        assert scores["mae"] < min(0.1, baseline / 3), (scores, baseline)
    else:
        assert scores["accuracy"] >= 0.9, scores
        assert scores["loss"] < result.history[0]["loss"]


def test_two_phase_run_on_an_image_folder_reaches_high_accuracy(tmp_path):
    folder = make_image_folder(tmp_path / "images", classes=("red", "green", "blue"),
                               per_class=10, size=SIZE)
    data = keras.utils.image_dataset_from_directory(
        folder, label_mode="categorical", image_size=(SIZE, SIZE), batch_size=10,
        shuffle=True, seed=0, verbose=False)
    model = build_model("tiny_test", 3, weights=None, input_shape=SIZE)
    config = ScheduleConfig(
        head=PhaseConfig(epochs=25, learning_rate=3e-2, early_stopping_patience=None),
        finetune=PhaseConfig(epochs=3, learning_rate=1e-3, freeze="last_blocks:1",
                             early_stopping_patience=None))
    result = fine_tune(model, data, data, config=config, verbose=0)
    assert [r["phase"] for r in result.history] == ["head"] * 25 + ["finetune"] * 3
    assert result.history[-1]["val_accuracy"] >= 0.9
    assert model.evaluate(data, return_dict=True, verbose=0)["accuracy"] >= 0.9


def test_head_config_rejects_bad_values_naming_the_argument():
    for argument, value in [("pooling", "mean"), ("dropout", 1.0),
                            ("dropout", -0.1), ("l2", -1e-4)]:
        with pytest.raises(ConfigError) as info:
            HeadConfig(**{argument: value})
        message = str(info.value)
        assert f"`{argument}`" in message and str(value) in message, message


def test_head_config_suggests_and_is_frozen():
    with pytest.raises(ConfigError, match="'multiclass'"):
        build_model("tiny_test", 3, task="multi_class", weights=None, input_shape=SIZE)
    config = HeadConfig(units=[64, 32.0])
    assert config.units == (64, 32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dropout = 0.5
    assert dataclasses.replace(config, dropout=0.5).dropout == 0.5
    with pytest.raises(ConfigError, match="dropout"):
        dataclasses.replace(config, dropout=2.0)


def test_build_head_layers_regularisation_and_float32_output():
    config = HeadConfig(units=(8, 4), batch_norm=True, l2=1e-3, dropout=0.3,
                        activation="gelu")
    head = build_head(16, 5, config)
    names = [l.name for l in head.layers]
    assert names == ["features", "head_dense_0", "head_bn_0", "head_act_0",
                     "head_dropout_0", "head_dense_1", "head_bn_1", "head_act_1",
                     "head_dropout_1", "head_predictions"]
    assert all(n.startswith("head_") for n in names[1:])  # the optimizer relies on it
    head(np.ones((2, 16), "float32"))
    assert len(head.losses) == 3  # an L2 term per Dense kernel
    assert head.output_shape == (None, 5)
    linear = build_head(16, 2, HeadConfig(dropout=0.0))
    assert [l.name for l in linear.layers] == ["features", "head_predictions"]
    try:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        mixed = build_head(16, 3)
        assert mixed.get_layer("head_predictions").compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_pooling_sets_the_feature_size():
    for pooling, features in [("avg", 16), ("max", 16), ("flatten", 256)]:
        model = build_model("tiny_test", 2, weights=None, input_shape=SIZE,
                            head=HeadConfig(pooling=pooling))
        assert model.get_layer("pool").output.shape[-1] == features, pooling


def test_loss_metrics_and_outputs_match_the_task():
    multiclass = get_task("multiclass")
    loss = multiclass.loss(label_smoothing=0.1)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)
    assert loss.get_config()["label_smoothing"] == 0.1
    assert [m.name for m in multiclass.metrics(10)] == ["accuracy", "top5"]
    assert [m.name for m in multiclass.metrics(3)] == ["accuracy"]
    for name in ("binary", "multilabel"):
        task = get_task(name)
        assert isinstance(task.loss(0.1), keras.losses.BinaryCrossentropy)
        assert [m.name for m in task.metrics(3)] == ["accuracy", "auc"]
    regression = get_task("regression")
    assert isinstance(regression.loss(), keras.losses.MeanSquaredError)
    assert regression.metrics(1)[0].name == "mae"
    assert get_task("binary").output_units(2) == 1
    assert get_task("multilabel").output_units(4) == 4
    with pytest.raises(ConfigError, match="num_classes"):
        multiclass.output_units(None)
