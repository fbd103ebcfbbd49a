"""Checkpoints (`training.checkpoint`): what a state records, resume, damaged or foreign
checkpoints, NaN stop, SIGTERM and Ctrl-C, and the kill harness in its fast setting."""

import dataclasses
import glob
import json
import os
import signal

import keras
import numpy as np
import pytest

from transferkit.core.errors import TransferkitError
from transferkit.core.task_registry import get_task
from transferkit.models.builder import build_model
from transferkit.training.checkpoint import (CheckpointConfig, CheckpointManager,
                                             Checkpointer, save_on_sigterm)
from transferkit.training.orchestrator import fine_tune
from transferkit.training.schedule import PhaseConfig, ScheduleConfig, compile_phase

SCHEDULE = ScheduleConfig(
    head=PhaseConfig(epochs=2, learning_rate=1e-2, early_stopping_patience=None),
    finetune=PhaseConfig(epochs=2, learning_rate=1e-3, freeze="none", decay="cosine",
                         early_stopping_patience=None),
    batch_size=4)
SHORT = ScheduleConfig(head=dataclasses.replace(SCHEDULE.head, epochs=1),
                       finetune=dataclasses.replace(SCHEDULE.finetune, epochs=1), batch_size=4)


def _model():
    return build_model("tiny_test", 2, weights=None, input_shape=32)


def _compile(model, phase, schedule=SCHEDULE):
    compile_phase(model, phase, schedule, get_task("multiclass"), steps_per_epoch=4)


def _data(n=16, nan_from=None):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(n) % 2, 2)
    if nan_from is not None:
        x[nan_from:] = np.nan
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def _checkpointed_run(tmp_path, every=3, schedule=SCHEDULE):
    manager = CheckpointManager(tmp_path / "ckpt", keep=2)
    model = _model()
    saver = Checkpointer(manager, model, CheckpointConfig(every_steps=every, keep=2))
    fine_tune(model, _data(), config=schedule, callbacks=[saver], verbose=0)
    return manager, model, saver


def test_checkpoints_keep_last_k_and_record_phase_and_lr_position(tmp_path):
    manager, model, saver = _checkpointed_run(tmp_path)
    states = manager.states()
    assert len(states) == 2 and len(glob.glob(str(tmp_path / "ckpt" / "*.h5"))) == 2
    last = states[-1]
    assert last["phase"] == "finetune" and last["phase_complete"]
    assert last["global_step"] == 16 and last["optimizer_iterations"] == 8
    assert [r["epoch"] for r in last["history"]] == [1, 2, 3, 4]
    assert last["trainable_params"] == sum(int(np.prod(w.shape))
                                           for w in model.trainable_weights)


def test_resume_mid_phase_one_restores_flags_optimizer_and_finishes(tmp_path):
    # Resume from a mid-phase-1 state: rebuild, re-freeze, reload, finish the schedule.
    manager2 = CheckpointManager(tmp_path / "ckpt2", keep=10)
    model = _model()
    saver = Checkpointer(manager2, model, CheckpointConfig(every_steps=3, keep=10))
    fine_tune(model, _data(), config=SCHEDULE, callbacks=[saver], verbose=0,
              stop_epoch=SCHEDULE.head.epochs)
    state = next(s for s in manager2.states() if s["global_step"] == 6)  # epoch 2, step 2
    assert (state["phase"], state["epoch"], state["step"]) == ("head", 1, 2)
    fresh = _model()
    saver2 = Checkpointer(manager2, fresh, CheckpointConfig(every_steps=3, keep=10),
                          history=state["history"], global_step=state["global_step"],
                          resume=state)
    fine_tune(fresh, _data(), config=SCHEDULE, start=manager2.position(state),
              callbacks=[saver2], verbose=0)
    head_states = [s for s in manager2.states() if s["phase"] == "head"]
    assert {s["trainable_params"] for s in head_states} == {head_states[0]["trainable_params"]}
    final = manager2.latest()
    assert final["phase"] == "finetune" and final["phase_complete"]
    assert final["global_step"] == 16 and final["optimizer_iterations"] == 8
    assert [(r["epoch"], r["phase"]) for r in saver2.history] == \
        [(1, "head"), (2, "head"), (3, "finetune"), (4, "finetune")]


def test_restore_refuses_an_optimizer_that_does_not_match(tmp_path):
    manager, _, _ = _checkpointed_run(tmp_path, schedule=SHORT)
    state = manager.latest()  # a phase-2 (all trainable) checkpoint
    model = _model()
    _compile(model, SCHEDULE.head)  # phase-1 flags: fewer variables
    with pytest.raises(TransferkitError, match="did not restore the optimizer"):
        manager.restore(model, state)


def test_resume_restores_a_layer_lr_decay_optimizer_with_the_same_rates(tmp_path):
    decayed = dataclasses.replace(SHORT, finetune=dataclasses.replace(
        SHORT.finetune, freeze="last_blocks:2", layer_lr_decay=0.5))
    manager, model, _ = _checkpointed_run(tmp_path, schedule=decayed)
    state = manager.latest()  # end of phase 2: weights and the decayed optimizer
    fresh = _model()
    _compile(fresh, decayed.finetune, decayed)  # what --resume does, from config.json
    manager.restore(fresh, state)
    old, new = model.optimizer, fresh.optimizer
    assert new.layer_lr_decay == 0.5 and new.depths == old.depths
    rates = [{v.path: m.optimizer._lr_scale[m.optimizer._var_key(v)]
              for v in m.trainable_variables} for m in (model, fresh)]
    assert rates[0] == rates[1]
    # block 2 at half the rate; block 3 and the head at the full rate
    assert {p.split("/")[0]: r for p, r in rates[1].items()} == {
        "block2_conv": 0.5, "block3_conv": 1.0, "head_predictions": 1.0}
    assert int(new.iterations.numpy()) == state["optimizer_iterations"]


def test_interrupted_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    manager, model, saver = _checkpointed_run(tmp_path, schedule=SHORT)
    before = manager.latest()

    def torn_write(path):  # half a file, then the process "dies"
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", torn_write)
    saver.global_step += 1
    with pytest.raises(KeyboardInterrupt):
        saver.save()
    assert manager.latest() == before
    # A SIGKILL would leave the temp file behind: clean() removes it on resume.
    (tmp_path / "ckpt" / ".ckpt-00000099.x.tmp.weights.h5").write_bytes(b"torn")
    manager.clean()
    assert not glob.glob(str(tmp_path / "ckpt" / ".*"))
    fresh = _model()
    _compile(fresh, SHORT.finetune, SHORT)
    manager.restore(fresh, before)
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt")
    model = _model()
    saver = Checkpointer(manager, model, CheckpointConfig(every_steps=2))
    with pytest.raises(TransferkitError, match="loss became nan"):
        fine_tune(model, _data(n=24, nan_from=12), config=SCHEDULE, callbacks=[saver],
                  verbose=0)
    last = manager.latest()
    assert last["global_step"] == 2
    fresh = _model()
    _compile(fresh, SCHEDULE.head)
    manager.restore(fresh, last)
    assert all(np.isfinite(w).all() for w in fresh.get_weights())


def test_sigterm_saves_then_exits(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt")
    model = _model()
    saver = Checkpointer(manager, model)

    class Term(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    with save_on_sigterm(saver), pytest.raises(SystemExit) as exit_info:
        fine_tune(model, _data(), config=SCHEDULE, callbacks=[saver, Term()], verbose=0)
    assert exit_info.value.code == 128 + signal.SIGTERM
    state = manager.latest()
    assert (state["phase"], state["epoch"], state["step"]) == ("head", 0, 2)


def test_a_kill_in_phase_2_then_resume_ends_with_the_best_weights_of_the_whole_phase(
        tmp_path):
    # Validation labels are the training labels inverted, so val_loss is best at the
    # first fine-tuning epoch and worse after; the kill comes two epochs later. Only if
    # the early-stopping state (best value and weights) survives the kill does the
    # resumed run end on the same weights as the uninterrupted one.
    schedule = ScheduleConfig(
        head=PhaseConfig(epochs=1, learning_rate=1e-2, early_stopping_patience=None),
        finetune=PhaseConfig(epochs=4, learning_rate=1e-2, freeze="none",
                             early_stopping_patience=10),
        batch_size=4)
    rng = np.random.default_rng(0)
    labels = np.arange(16) % 2
    images = rng.uniform(0, 60, (16, 32, 32, 3)).astype("float32")
    images[np.arange(16), :, :, labels] += 180  # the class is the bright channel
    onehot = keras.utils.to_categorical(labels, 2)
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((images, onehot)).batch(4)
    val = tf.data.Dataset.from_tensor_slices((images, 1.0 - onehot)).batch(4)

    class Kill(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 11:  # epoch 3 of 5, third batch: after the step-9 save
                raise KeyboardInterrupt

    keras.utils.set_random_seed(0)
    whole = _model()
    result = fine_tune(whole, train, val, config=schedule, verbose=0)
    losses = [r["val_loss"] for r in result.history if r["phase"] == "finetune"]
    assert int(np.argmin(losses)) == 0 and losses[-1] > losses[0]

    keras.utils.set_random_seed(0)
    killed = _model()
    manager = CheckpointManager(tmp_path / "ckpt", keep=2)
    saver = Checkpointer(manager, killed, CheckpointConfig(every_steps=3, keep=2))
    with pytest.raises(KeyboardInterrupt):
        fine_tune(killed, train, val, config=schedule, callbacks=[saver, Kill()],
                  verbose=0)
    state = manager.latest()
    assert (state["phase"], state["epoch"], state["step"]) == ("finetune", 2, 1)
    assert state["early_stopping"]["best_epoch"] == 1 and state["best_weights"]

    resumed = _model()
    saver = Checkpointer(manager, resumed, CheckpointConfig(every_steps=3, keep=2),
                         history=state["history"], global_step=state["global_step"],
                         resume=state)
    fine_tune(resumed, train, val, config=schedule, start=manager.position(state),
              callbacks=[saver], verbose=0)
    assert [r["epoch"] for r in saver.history] == [1, 2, 3, 4, 5]
    for a, b in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)



# --- ownership and damage: a run loads only its own, whole checkpoints -------------

def _save(manager, model, step, **extra):
    state = {"phase": "head", "phase_start_epoch": 0, "epoch": step, "step": 0,
             "global_step": step, "phase_complete": False, "optimizer_iterations": 0,
             "history": [], **extra}
    return manager.save(model, state)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("tiny_test", 2, weights=None, image_size=16)


def test_resume_never_loads_another_runs_checkpoint(tmp_path, tiny_model):
    folder = tmp_path / "ckpt"
    ours, theirs = CheckpointManager(folder, run_id="ours"), CheckpointManager(
        folder, run_id="theirs")
    _save(ours, tiny_model, 1)
    _save(theirs, tiny_model, 9)  # a higher step, as an old run's would be
    assert ours.latest()["global_step"] == 1 and theirs.latest()["global_step"] == 9
    assert CheckpointManager(folder, run_id="new").latest() is None


def test_a_torn_or_altered_newest_checkpoint_falls_back_to_the_previous(tmp_path,
                                                                       tiny_model):
    manager = CheckpointManager(tmp_path, keep=5, run_id="r")
    for step in (1, 2, 3):
        _save(manager, tiny_model, step)
    newest = tmp_path / "ckpt-00000003.weights.h5"
    newest.write_bytes(newest.read_bytes()[:100])  # torn
    with pytest.warns(UserWarning, match="ckpt-00000003.json is damaged"):
        assert manager.latest()["global_step"] == 2
    data = bytearray((tmp_path / "ckpt-00000002.weights.h5").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (tmp_path / "ckpt-00000002.weights.h5").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        assert manager.latest()["global_step"] == 1
    (tmp_path / "ckpt-00000001.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert manager.latest() is None


def test_checkpoint_paths_are_confined_and_only_its_own_files_are_deleted(tmp_path,
                                                                         tiny_model):
    outside = tmp_path / "precious.weights.h5"
    outside.write_text("user data")
    folder = tmp_path / "ckpt"
    manager = CheckpointManager(folder, keep=1, run_id="r")
    _save(manager, tiny_model, 1)
    # A state pointing outside the folder is refused, never loaded or deleted.
    evil = json.load(open(folder / "ckpt-00000001.json"))
    evil.update(global_step=5, weights="../precious.weights.h5")
    (folder / "ckpt-00000005.json").write_text(json.dumps(evil))
    (folder / "other.weights.h5").write_text("not the manager's")
    (folder / ".ckpt-00000007.abc.tmp.weights.h5").write_text("torn temp")
    (folder / "ckpt-00000008.weights.h5").write_text("uncommitted")
    with pytest.warns(UserWarning, match="not a checkpoint file name"):
        assert manager.latest()["global_step"] == 1
    manager.clean()
    _save(manager, tiny_model, 2)  # prunes step 1 (keep=1)
    assert outside.read_text() == "user data"
    assert sorted(os.listdir(folder)) == ["ckpt-00000002.json", "ckpt-00000002.weights.h5",
                                          "ckpt-00000005.json", "other.weights.h5"]


# --- Ctrl-C and SIGTERM ---------------------------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_then_exit(tmp_path, signum, code):
    import tensorflow as tf

    model = build_model("tiny_test", 2, weights=None, image_size=16)
    manager = CheckpointManager(tmp_path, run_id="r")
    saver = Checkpointer(manager, model)

    class Kill(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                os.kill(os.getpid(), signum)

    x = np.zeros((16, 16, 16, 3), "float32")
    y = keras.utils.to_categorical(np.arange(16) % 2, 2)
    schedule = ScheduleConfig(head=PhaseConfig(epochs=2, early_stopping_patience=None),
                              finetune=PhaseConfig(epochs=0), batch_size=4)
    before = signal.getsignal(signum)
    with save_on_sigterm(saver), pytest.raises(SystemExit) as exit_info:
        assert signal.getsignal(signum) != before  # its own handler while inside
        fine_tune(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
                  config=schedule, callbacks=[saver, Kill()], verbose=0)
    assert exit_info.value.code == code
    assert manager.latest()["global_step"] == 2  # saved at the batch end after the signal
    assert signal.getsignal(signum) == before  # the handlers were put back


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    saver = Checkpointer(CheckpointManager(tmp_path), None)
    with pytest.raises(KeyboardInterrupt), save_on_sigterm(saver):
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a save at a batch end
        assert saver.stop_requested == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
