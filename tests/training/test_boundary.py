"""Phase 2 on cached boundary activations: the cut, the step, the cache, resume, the cap."""

import dataclasses
import os

import keras
import numpy as np
import pytest

from transferkit.core.rundir import RunDir
from transferkit.core.task_registry import get_task
from transferkit.models import build_model
from transferkit.models.heads import HeadConfig
from transferkit.training import cache
from transferkit.training.boundary import boundary_extractor, find_cut, top_model
from transferkit.training.checkpoint import CheckpointConfig, CheckpointManager, Checkpointer
from transferkit.training.freezing import freeze
from transferkit.training.orchestrator import fine_tune
from transferkit.training.recipe import recipe_from_dict
from transferkit.app.train import train
from transferkit.training.schedule import PhaseConfig, ScheduleConfig, compile_phase

SCHEDULE = ScheduleConfig(
    head=PhaseConfig(epochs=1, learning_rate=0.05, early_stopping_patience=None),
    finetune=PhaseConfig(epochs=3, learning_rate=1e-2, freeze="last_blocks:1",
                         early_stopping_patience=None),
    batch_size=8)


def _model(seed=0, dropout=0.2):
    keras.utils.set_random_seed(seed)
    return build_model("tiny_test", 2, weights=None, input_shape=32,
                       head=HeadConfig(dropout=dropout))


def test_cut_is_below_the_first_trainable_layer_and_below_residual_blocks():
    model = _model()
    freeze(model, "last_blocks:1")
    cut, _ = find_cut(model)
    assert (cut.layer, cut.first_trainable, cut.shape) == ("block2_relu", "block3_conv",
                                                           (16, 16, 16))
    freeze(model, "all")
    assert find_cut(model)[0] is None and "whole backbone is frozen" in find_cut(model)[1]
    freeze(model, "none")
    assert find_cut(model)[0] is None and "nothing is frozen below" in find_cut(model)[1]
    # MobileNetV2's block_15 adds its input to its output: a cut just below block_16's
    # first layer would let the skip connection cross it, so the cut is the add itself.
    mobile = build_model("mobilenet_v2", 2, weights=None, input_shape=32,
                         backbone_kwargs={"alpha": 0.35})
    freeze(mobile, "from_layer:block_15_project")
    cut, _ = find_cut(mobile)
    assert (cut.layer, cut.first_trainable) == ("block_14_add", "block_15_project")


def test_top_on_boundary_activations_computes_the_model_and_shares_its_variables():
    model = _model()
    freeze(model, "last_blocks:1")
    cut, _ = find_cut(model)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    features, activations = boundary_extractor(model, cut).predict_on_batch(images)
    top = top_model(model, cut)
    np.testing.assert_allclose(top.predict_on_batch(activations),
                               model.predict_on_batch(images), atol=1e-6)
    np.testing.assert_allclose(
        features, keras.Model(model.inputs, model.get_layer("pool").output)
        .predict_on_batch(images), atol=1e-6)
    assert [id(v) for v in top.trainable_variables] == \
        [id(v) for v in model.trainable_variables]


def test_boundary_key_changes_with_the_bottom_and_the_cut_not_with_the_top():
    model = _model()
    freeze(model, "last_blocks:1")
    cut, _ = find_cut(model)
    key = cache.boundary_fingerprint(model, cut)
    backbone = model.get_layer("backbone")
    top = backbone.get_layer("block3_conv").kernel
    top.assign(top * 2)  # above the cut: the activations are the same
    assert cache.boundary_fingerprint(model, cut) == key
    freeze(model, "last_blocks:2")
    assert cache.boundary_fingerprint(model, find_cut(model)[0]) != key
    bottom = backbone.get_layer("block1_conv").kernel
    bottom.assign(bottom * 2)
    freeze(model, "last_blocks:1")
    assert cache.boundary_fingerprint(model, cut) != key


def test_a_step_on_boundary_activations_equals_a_live_step():
    phase = SCHEDULE.finetune
    task = get_task("multiclass")
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(8) % 2, 2)
    live, cached = _model(dropout=0.0), _model(dropout=0.0)
    moving = [w.copy() for w in live.get_weights()]
    for model in (live, cached):
        compile_phase(model, phase, SCHEDULE, task, steps_per_epoch=1)
    live.train_on_batch(images, labels)
    cut, _ = find_cut(cached)
    activations = boundary_extractor(cached, cut).predict_on_batch(images)[1]
    top = top_model(cached, cut)
    top.compile(optimizer=cached.optimizer, loss=task.loss(0.0))
    top.train_on_batch(activations, labels)
    changed = 0
    for before, a, b in zip(moving, live.get_weights(), cached.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        changed += not np.array_equal(before, a)
    # The trainable block and the head moved; frozen BN statistics did not.
    assert changed == len(live.trainable_weights)
    assert int(cached.optimizer.iterations.numpy()) == 1


def test_phase_1_pass_fills_the_boundary_cache_and_phase_2_trains_on_it(
        splits, tmp_path, calls, capsys):
    store = cache.FeatureStore(tmp_path / "cache")
    model = _model()
    result = fine_tune(model, splits, config=SCHEDULE, verbose=1,
                       cache=cache.FeatureCache(boundary=True, store=store))
    out = capsys.readouterr().out
    assert "phase 2 on cached activations of 'block2_relu'" in out
    assert calls["n"] == 2  # one pass per split, in phase 1: none in phase 2
    assert store.hits == 2  # phase 2 found both splits' activations
    mapped = sorted(f for f in os.listdir(tmp_path / "cache") if ".boundary." in f)
    assert len(mapped) == 6  # x, y and the commit mark of each split
    x = np.load(tmp_path / "cache" / next(f for f in mapped if f.endswith(".x.npy")),
                mmap_mode="r")
    assert x.dtype == np.float16 and x.shape[2:] == (16, 16, 16)
    assert [r["phase"] for r in result.history] == ["head"] + ["finetune"] * 3
    assert result.audits["finetune"].trainable_params == sum(
        int(np.prod(v.shape)) for v in model.trainable_weights)
    # The model left behind is the full model, trained, and compiled for evaluate().
    assert model.evaluate(splits.val, verbose=0, return_dict=True)["accuracy"] == 1.0
    # A second run finds everything on disk: no backbone pass at all.
    fine_tune(_model(), splits, config=SCHEDULE, verbose=0,
              cache=cache.FeatureCache(boundary=True, store=cache.FeatureStore(
                  tmp_path / "cache")))
    assert calls["n"] == 2


def test_over_the_cap_or_without_a_cut_phase_2_runs_live_and_says_why(splits, capsys):
    short = dataclasses.replace(
        SCHEDULE, head=dataclasses.replace(SCHEDULE.head, epochs=0),
        finetune=dataclasses.replace(SCHEDULE.finetune, epochs=1))
    tiny = cache.FeatureCache(boundary=True, boundary_max_gb=1e-9)
    fine_tune(_model(), splits, config=short, verbose=1, cache=tiny)
    assert "phase 2 runs live, not on the boundary cache: the activations need" in \
        capsys.readouterr().out
    everything = dataclasses.replace(
        short, finetune=dataclasses.replace(short.finetune, freeze="none"))
    fine_tune(_model(), splits, config=everything, verbose=1,
              cache=cache.FeatureCache(boundary=True))
    assert "phase 2 runs live, not on the boundary cache: nothing is frozen below" in \
        capsys.readouterr().out


@pytest.mark.slow
def test_checkpoints_in_a_boundary_phase_resume_live_to_the_same_weights(splits, tmp_path):
    class Kill(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += self.model.name.startswith("top_of_")
            if self.steps == 3 + 2:  # one phase-2 epoch on activations, two more steps
                raise KeyboardInterrupt

    options = cache.FeatureCache(boundary=True)
    whole = _model(dropout=0.0)
    fine_tune(whole, splits, config=SCHEDULE, cache=options, verbose=0)

    killed = _model(dropout=0.0)
    manager = CheckpointManager(tmp_path / "ckpt", keep=2)
    saver = Checkpointer(manager, killed, CheckpointConfig(every_steps=1, keep=2))
    with pytest.raises(KeyboardInterrupt):
        fine_tune(killed, splits, config=SCHEDULE, cache=options,
                  callbacks=[saver, Kill()], verbose=0)
    state = manager.latest()
    assert (state["phase"], state["epoch"], state["step"]) == ("finetune", 2, 2)
    assert state["optimizer_iterations"] == 5

    resumed = _model(dropout=0.0)
    saver = Checkpointer(manager, resumed, CheckpointConfig(every_steps=1, keep=2),
                         history=state["history"], global_step=state["global_step"],
                         resume=state)
    fine_tune(resumed, splits, config=SCHEDULE, cache=options, callbacks=[saver],
              start=manager.position(state), verbose=0)
    assert [r["epoch"] for r in saver.history] == [1, 2, 3, 4]
    assert int(resumed.optimizer.iterations.numpy()) == 9
    # The resumed epochs ran live on images (the uninterrupted run on float16
    # activations, in another batch order): close, not bit-equal.
    for a, b in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, atol=0.05)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:weights=none")  # a random tiny backbone, on purpose
def test_train_uses_the_boundary_cache_unless_turned_off(folder_recipe, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    recipe = folder_recipe(finetune_epochs=2, unfreeze="last_blocks:1", augment="light",
                           feature_views=2)
    train(recipe, tmp_path / "run", verbose=1)
    assert "phase 2 on cached activations" in capsys.readouterr().out
    assert [r["phase"] for r in RunDir(tmp_path / "run").read_history()] == ["head", "finetune",
                                                                    "finetune"]
    files = os.listdir(tmp_path / "cache" / "features")
    # train views, val, and val's mirror (stored for the flip-TTA decision)
    assert sum(f.endswith(".boundary.json") for f in files) == 3
    assert os.path.exists(tmp_path / "run" / "model.keras")
    off = recipe_from_dict({"boundary_cache": False}, recipe)
    train(off, tmp_path / "run2", verbose=1)
    assert "phase 2 on cached activations" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:weights=none")
def test_train_resume_after_a_kill_in_a_boundary_phase(folder_recipe, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    recipe = folder_recipe(finetune_epochs=3, unfreeze="last_blocks:1",
                           early_stopping_patience=0)

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:  # the second epoch of phase 2, on boundary activations
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "run", callbacks=[Kill()], verbose=1)
    assert "phase 2 on cached activations" in capsys.readouterr().out
    # A phase on cached tensors saves at its end, not per epoch (an epoch costs less
    # than a save): the newest checkpoint is phase 1's end, and the resume redoes
    # phase 2 from its start, on the boundary cache again.
    state = CheckpointManager(tmp_path / "run" / "checkpoints").latest()
    assert (state["phase"], state["epoch"], state["phase_complete"]) == ("head", 1, True)
    result = train(recipe, tmp_path / "run", resume=True, verbose=1)
    assert "phase 2 on cached activations" in capsys.readouterr().out
    assert [(r["epoch"], r["phase"]) for r in RunDir(tmp_path / "run").read_history()] == [
        (1, "head"), (2, "finetune"), (3, "finetune"), (4, "finetune")]
    assert "val" in result.metrics and os.path.exists(tmp_path / "run" / "model.keras")
