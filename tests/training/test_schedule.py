"""The two-phase schedule: what moves in each phase, the recompile guard, discriminative
learning rates, warmup + cosine, the merged history and early stopping."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit.core.errors import ConfigError, TrainableChangedError
from transferkit.training.freezing import FreezePolicy, RecompileGuard
from transferkit.models.heads import HeadConfig
from transferkit.models.builder import build_model
from transferkit.core.task_registry import get_task
from transferkit.data.pipeline import as_batches
from transferkit.training.orchestrator import PhaseCallback, Position, fine_tune
from transferkit.training.schedule import (PhaseConfig, ScheduleConfig, compile_phase,
                                           learning_rate_schedule)

MULTICLASS = get_task("multiclass")


def _colour_data(n=32, size=16, classes=2, seed=0):
    """Raw 0-255 images whose class is the bright channel; one-hot labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    x = rng.uniform(0, 60, (n, size, size, 3)).astype("float32")
    x[np.arange(n), :, :, labels] += 180
    return x, np.eye(classes, dtype="float32")[labels]


def _snapshot(layer):
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in layer.weights}


def _model(backbone="tiny_test", size=16, **kwargs):
    return build_model(backbone, 2, weights=None, input_shape=size,
                       head=HeadConfig(dropout=0.0), **kwargs)


def _config(head_epochs=1, finetune_epochs=1, unfreeze="last_blocks:1", lr=1e-2, **kw):
    return ScheduleConfig(
        head=PhaseConfig(epochs=head_epochs, learning_rate=1e-2, early_stopping_patience=None),
        finetune=PhaseConfig(epochs=finetune_epochs, learning_rate=lr, freeze=unfreeze,
                             early_stopping_patience=None, **kw),
        batch_size=8)


def test_phase1_freezes_backbone_phase2_moves_only_unfrozen_layers():
    model = _model()
    base = model.get_layer("backbone")
    x, y = _colour_data(16)
    start, head_start = _snapshot(base), _snapshot(model.get_layer("head"))
    config = _config(unfreeze="last_blocks:1")

    fine_tune(model, (x, y), (x, y), config=config, stop_epoch=config.head.epochs,
              verbose=0)
    after_head = _snapshot(base)
    for path, value in start.items():  # every backbone weight, BN statistics included
        np.testing.assert_array_equal(after_head[path], value, err_msg=path)
    head_now = _snapshot(model.get_layer("head"))
    assert any(not np.array_equal(head_now[p], v) for p, v in head_start.items())

    _check_finetune_moves_only_unfrozen_layers(model, (x, y), config)
    assert [w.path for w in base.trainable_weights] == ["block3_conv/kernel"]


def test_phase2_keeps_mobilenet_v2_bn_statistics():
    # Phase 1 was proven above on the same code path; a real Keras backbone with 50 BN
    # layers only needs the (costlier) phase 2.
    model = _model("mobilenet_v2", 32, backbone_kwargs={"alpha": 0.35})
    _check_finetune_moves_only_unfrozen_layers(model, _colour_data(8, 32),
                                               _config(unfreeze="last_blocks:2"))
    trainable = [w.path for w in model.get_layer("backbone").trainable_weights]
    assert trainable[0].startswith("block_15_") and "Conv_1/kernel" in trainable


def _check_finetune_moves_only_unfrozen_layers(model, data, config):
    base = model.get_layer("backbone")
    before = _snapshot(base)
    fine_tune(model, data, config=config, start=Position("finetune"), verbose=0)
    after = _snapshot(base)
    trainable = {w.path for w in base.trainable_weights}  # as the policy left them
    assert trainable and not any(("moving_" in p or "_bn/" in p) for p in trainable)
    for path, value in before.items():
        if path in trainable:
            assert not np.array_equal(after[path], value), f"{path} should have trained"
        else:  # frozen layers, and every BN gamma, beta, moving mean and variance
            np.testing.assert_array_equal(after[path], value, err_msg=path)
    assert sum("moving_mean" in p for p in after) >= 3


def test_recompile_guard_fires_when_trainable_changes_after_compile():
    model = _model()
    x, y = _colour_data(8)
    data = as_batches((x, y), MULTICLASS, 2, batch_size=8)
    phase = PhaseConfig(epochs=1, freeze="all", early_stopping_patience=None)
    compile_phase(model, phase, ScheduleConfig(), MULTICLASS)
    model.get_layer("backbone").get_layer("block3_conv").trainable = True
    with pytest.raises(TrainableChangedError, match="block3_conv") as info:
        model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[RecompileGuard()])
    assert "compile()" in str(info.value)
    compile_phase(model, phase, ScheduleConfig(), MULTICLASS)  # re-freezing clears it
    model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[RecompileGuard()])
    assert not model.get_layer("backbone").get_layer("block3_conv").trainable


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_discriminative_lr_moves_the_backbone_less(optimizer):
    # Same model, same batch, one step with backbone_lr_multiplier 1.0 then 0.1. With
    # Adam, scaling gradients would not do this (Adam normalises by gradient scale).
    model = _model()
    x, y = _colour_data(8)
    data = as_batches((x, y), MULTICLASS, 2, batch_size=8)
    start = model.get_weights()
    moved = {}
    for multiplier in (1.0, 0.1):
        model.set_weights(start)
        phase = PhaseConfig(epochs=1, learning_rate=1e-2, optimizer=optimizer,
                            freeze=FreezePolicy("none"), early_stopping_patience=None,
                            backbone_lr_multiplier=multiplier)
        compile_phase(model, phase, ScheduleConfig(), MULTICLASS, steps_per_epoch=1)
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        moved[multiplier] = [np.abs(a - b).sum() for a, b in zip(model.get_weights(), start)]
    paths = [w.path for w in model.weights]
    checked = 0
    for path, full, low in zip(paths, moved[1.0], moved[0.1]):
        if full == 0:
            assert low == 0, path  # frozen BN
            continue
        expected = 1.0 if path.startswith("head_") else 0.1
        assert low / full == pytest.approx(expected, rel=0.02), path
        checked += 1
    assert checked >= 5  # three conv kernels and the head's kernel and bias


def test_warmup_then_cosine_goes_up_then_down():
    phase = PhaseConfig(epochs=4, learning_rate=1e-2, decay="cosine", warmup_epochs=1)
    schedule = learning_rate_schedule(phase, steps_per_epoch=5)
    lrs = [float(schedule(step)) for step in range(21)]
    peak = int(np.argmax(lrs))
    assert peak == 5 and lrs[5] == pytest.approx(1e-2)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[0] == 0.0 and lrs[-1] == pytest.approx(0.0, abs=1e-9)

    flat = learning_rate_schedule(
        PhaseConfig(epochs=3, learning_rate=1e-2, warmup_epochs=1), steps_per_epoch=4)
    assert [float(flat(s)) for s in (8, 12)] == pytest.approx([1e-2, 1e-2])
    assert learning_rate_schedule(PhaseConfig(learning_rate=3e-4)) == 3e-4
    with pytest.raises(ConfigError, match="warmup_epochs=1"):
        learning_rate_schedule(phase, steps_per_epoch=None)


def test_merged_history_has_phases_continuous_epochs_and_the_lr():
    model = _model()
    x, y = _colour_data(16)
    config = _config(head_epochs=2, finetune_epochs=3, lr=1e-3, decay="cosine",
                     warmup_epochs=1)
    result = fine_tune(model, (x, y), (x, y), config=config, verbose=0)
    history = result.history
    assert [r["phase"] for r in history] == ["head"] * 2 + ["finetune"] * 3
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert [r["phase_epoch"] for r in history] == [1, 2, 1, 2, 3]
    for record in history:
        assert {"loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"} <= set(record)
    assert result.metric("learning_rate", "head") == pytest.approx([1e-2, 1e-2])
    finetune_lrs = result.metric("learning_rate", "finetune")
    assert finetune_lrs[0] == pytest.approx(1e-3)  # end of warmup, then cosine decay
    assert finetune_lrs[0] > finetune_lrs[1] > finetune_lrs[2]
    assert len(result.metric("val_loss")) == 5
    assert set(result.audits) == {"head", "finetune"}
    head_params = sum(int(np.prod(w.shape)) for w in model.get_layer("head").weights)
    assert result.audits["head"].trainable_params == head_params
    assert result.audits["finetune"].trainable_params > head_params


def test_early_stopping_restores_the_best_weights_then_epochs_run_on():
    # Validation labels are the opposite of the training labels, so val_loss is best
    # after epoch 1 and gets worse as training succeeds: stop at 2, restore epoch 1.
    model = _model()
    x, y = _colour_data(16)
    seen = []

    class Snapshots(PhaseCallback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(("epoch", epoch, logs["val_loss"], self.model.get_weights()))

        def on_phase_end(self, run):
            seen.append(("end", None, None, self.model.get_weights()))

    config = ScheduleConfig(
        head=PhaseConfig(epochs=6, learning_rate=3e-2, early_stopping_patience=1),
        finetune=PhaseConfig(epochs=1, learning_rate=1e-3, freeze="last_blocks:1",
                             early_stopping_patience=None),
        batch_size=8)
    result = fine_tune(model, (x, y), (x, 1 - y), config=config, callbacks=[Snapshots()],
                       verbose=0)
    assert [r["phase"] for r in result.history] == ["head", "head", "finetune"]
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    (_, _, loss1, best), (_, _, loss2, last), (_, _, _, restored) = seen[:3]
    assert loss2 > loss1
    for a, b in zip(restored, best):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(restored, last))


def test_on_cached_features_phase_1_runs_its_cached_epochs_and_patience():
    # As above, val_loss is best after epoch 1: patience 2 on the cache stops at 3.
    from transferkit.training.cache import FeatureCache

    x, y = _colour_data(16)
    config = ScheduleConfig(
        head=PhaseConfig(epochs=1, learning_rate=3e-2, early_stopping_patience=0,
                         cached_epochs=20, cached_patience=2),
        finetune=PhaseConfig(epochs=0), batch_size=8)
    live = fine_tune(_model(), (x, y), (x, 1 - y), config=config, verbose=0)
    assert [r["epoch"] for r in live.history] == [1]
    cached = fine_tune(_model(), (x, y), (x, 1 - y), config=config, cache=FeatureCache(),
                       verbose=0)
    assert [r["epoch"] for r in cached.history] == [1, 2, 3]
    # A caller's epoch budget (a tuner's) still ends the phase where it says.
    budget = fine_tune(_model(), (x, y), (x, 1 - y), config=config, cache=FeatureCache(),
                       stop_epoch=2, verbose=0)
    assert [r["epoch"] for r in budget.history] == [1, 2]


def test_before_phase_hooks_change_a_phase_only_where_it_starts_afresh():
    model = _model()
    x, y = _colour_data(16)
    calls = []

    class HalveRate(PhaseCallback):  # and phase 2 one epoch longer
        def before_phase(self, name, phase, loop):
            calls.append((name, phase.learning_rate, loop.model is model))
            return dataclasses.replace(phase, learning_rate=phase.learning_rate / 2,
                                       epochs=phase.epochs + (name == "finetune"))

    config = _config(lr=1e-3)
    result = fine_tune(model, (x, y), (x, y), config=config, callbacks=[HalveRate()],
                       verbose=0)
    assert calls == [("head", 1e-2, True), ("finetune", 1e-3, True)]
    assert [r["phase"] for r in result.history] == ["head", "finetune", "finetune"]
    assert result.metric("learning_rate") == pytest.approx([5e-3, 5e-4, 5e-4])
    # A phase resumed mid-way keeps the settings it started with: no hook is asked.
    calls.clear()
    result = fine_tune(model, (x, y), (x, y), config=config, callbacks=[HalveRate()],
                       start=Position("finetune", 1, 1, step=1), verbose=0)
    assert calls == [] and result.metric("learning_rate") == pytest.approx([1e-3])


def test_as_batches_accepts_arrays_and_datasets():
    x, y = _colour_data(10, size=8, classes=3)
    labels = y.argmax(1)
    data = as_batches((x, labels), MULTICLASS, 3, batch_size=4)  # ints -> one-hot
    xb, yb = next(iter(data))
    assert xb.shape == (4, 8, 8, 3) and yb.dtype == tf.float32
    np.testing.assert_array_equal(yb.numpy(), y[:4])
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    assert next(iter(as_batches(unbatched, MULTICLASS, 3, batch_size=5)))[0].shape[0] == 5
    with pytest.raises(ConfigError, match="different lengths"):
        as_batches((x, labels[:3]), MULTICLASS, 3)
    with pytest.raises(ConfigError, match="tf.data.Dataset"):
        as_batches(x, MULTICLASS, 3)
    with pytest.raises(ConfigError, match="`phase`"):
        fine_tune(_model(size=8), (x, y), start=Position("finetun"))
