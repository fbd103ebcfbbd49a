"""Checkpoints, resume, NaN stop, SIGTERM, and the kill harness in its fast setting."""

import dataclasses
import glob
import os
import signal
import sys

import keras
import numpy as np
import pytest

from transferkit.training.checkpoint import (CheckpointConfig, CheckpointManager, Checkpointer,
                                    resume, save_on_sigterm)
from transferkit.core.errors import TransferkitError
from transferkit.models.builder import build_model
from transferkit.training.schedule import PhaseConfig, ScheduleConfig, compile_for_phase, fine_tune

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEDULE = ScheduleConfig(
    head=PhaseConfig(epochs=2, learning_rate=1e-2, early_stopping_patience=None),
    finetune=PhaseConfig(epochs=2, learning_rate=1e-3, freeze="none", decay="cosine",
                         early_stopping_patience=None),
    batch_size=4)
SHORT = ScheduleConfig(head=dataclasses.replace(SCHEDULE.head, epochs=1),
                       finetune=dataclasses.replace(SCHEDULE.finetune, epochs=1), batch_size=4)


def _model():
    return build_model("tiny_test", 2, weights=None, image_size=32)


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
              phases=("head",))
    state = next(s for s in manager2.states() if s["global_step"] == 6)  # epoch 2, step 2
    assert (state["phase"], state["epoch"], state["step"]) == ("head", 1, 2)
    fresh = _model()
    saver2 = Checkpointer(manager2, fresh, CheckpointConfig(every_steps=3, keep=10),
                          history=state["history"], global_step=state["global_step"])
    resume(fresh, _data(), None, SCHEDULE, saver2, state, verbose=0)
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
    compile_for_phase(model, SCHEDULE.head, SCHEDULE)  # phase-1 flags: fewer variables
    with pytest.raises(TransferkitError, match="did not restore the optimizer"):
        manager.restore(model, state)


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
    compile_for_phase(fresh, SHORT.finetune, SHORT, train=_data())
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
    compile_for_phase(fresh, SCHEDULE.head, SCHEDULE)
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


def test_kill_harness_fast_setting(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from kill_harness import harness

    lines = []
    problems = harness(str(tmp_path), ("phase1", "boundary", "phase2"), head_epochs=2,
                       finetune_epochs=2, every=3, timeout=240, log=lines.append)
    assert len(lines) == 3 and problems == [], "\n".join(lines + problems)
