"""tf.distribute strategies, the Keras multi-worker fix, mixed precision, tf.data service.

Strategies that need their own TensorFlow runtime (2 logical CPUs, 2 workers) run in
subprocesses on 127.0.0.1 with bounded timeouts.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_image_folder
from transferkit.core.errors import ConfigError
from transferkit.core.task_registry import get_task
from transferkit.models.builder import build_model
from transferkit.models.saving import load_model
from transferkit.training import distribute
from transferkit.training.distribute import (STRATEGIES, make_strategy, per_replica_batch,
                                             precision, prepare_dataset)
from transferkit.training.schedule import PhaseConfig, ScheduleConfig, compile_phase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_FLAGS = ["--backbone", "tiny_test", "--weights", "none", "--image-size", "32",
               "--batch-size", "4", "--augment", "none", "--no-cache-features",
               "--head-epochs", "1", "--finetune-epochs", "1", "--unfreeze", "none",
               "--early-stopping-patience", "0"]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainable(model):
    return [w.numpy() for w in model.trainable_weights]


def test_strategy_names_are_checked():
    with pytest.raises(ConfigError, match="strategy.*mirored.*Did you mean 'mirrored'"):
        make_strategy("mirored")
    assert set(STRATEGIES) == {"auto", "one", "mirrored", "multiworker", "tpu"}
    strategy = make_strategy("auto")  # one CPU, no TF_CONFIG: the default strategy
    assert strategy.num_replicas_in_sync == 1 and per_replica_batch(32, strategy) == 32


def test_multiworker_without_tf_config_is_refused(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        make_strategy("multiworker")


def test_the_multiworker_fix_applies_only_where_keras_still_fails(monkeypatch):
    # Decided at run time from the installed Keras, not from a version list: a Keras
    # that fixed #20585 is used as it is (the two-worker test checks the behaviour).
    from keras.src.backend.tensorflow import trainer

    needed = distribute.multiworker_fixes_needed()
    assert set(needed) == set(distribute.FAILING_CODE)
    assert all(isinstance(v, bool) for v in needed.values()), needed
    build = trainer.TensorFlowTrainer._maybe_symbolic_build
    reduce = trainer.reduce_per_replica
    monkeypatch.setattr(distribute, "FAILING_CODE",
                        {k: "code no Keras has" for k in distribute.FAILING_CODE})
    assert distribute.patch_keras_for_multiworker() == ()
    assert trainer.TensorFlowTrainer._maybe_symbolic_build is build
    assert trainer.reduce_per_replica is reduce


def test_mirrored_on_two_logical_cpus_trains_all_epochs(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=8, size=32)
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import json, sys, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from transferkit.cli.main import main
        from transferkit.training.distribute import make_strategy
        print("REPLICAS", make_strategy("mirrored").num_replicas_in_sync)
        sys.exit(main(["train", "--data", {str(data)!r}, "--out", {str(out)!r},
                       "--strategy", "mirrored", *{TRAIN_FLAGS!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REPLICAS 2" in proc.stdout
    with open(out / "history.json") as f:
        assert [r["phase"] for r in json.load(f)] == ["head", "finetune"]
    model = load_model(out / "model.keras")
    assert model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape == (2, 2)


def test_multiworker_two_workers_end_with_identical_weights(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=8, size=32)
    out = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "transferkit", "train", "--data", data,
             "--out", str(out), "--strategy", "multiworker", *TRAIN_FLAGS],
            cwd=REPO, env=_env(TF_CONFIG=config), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(l[-2000:] for l in logs)
    chief, other = load_model(out / "model.keras"), load_model(out / "worker-1" / "model.keras")
    for a, b in zip(_trainable(chief), _trainable(other), strict=True):
        np.testing.assert_array_equal(a, b)
    # Only the chief writes the run directory; worker 1 writes its own.
    assert (out / "checkpoints").is_dir() and (out / "worker-1" / "checkpoints").is_dir()


def test_mixed_precision_builds_with_a_float32_output():
    with precision(True):
        model = build_model("tiny_test", 3, weights=None, input_shape=32)
    assert keras.config.dtype_policy().name == "float32"  # restored after the block
    assert model.get_layer("backbone").dtype_policy.compute_dtype in ("float16", "bfloat16")
    assert model.output.dtype == "float32"
    out = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_tf_data_service_feeds_fit():
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    # "localhost" alone (no :%port%) makes the worker unreachable and fit hangs.
    worker = service.WorkerServer(service.WorkerConfig(
        dispatcher_address=dispatcher.target.split("://")[1],
        worker_address="localhost:%port%"))
    x = np.random.default_rng(0).uniform(0, 255, (12, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(12) % 2, 2)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    fed = prepare_dataset(dataset, service=dispatcher.target, job_name="test")
    assert int(fed.cardinality()) == 3  # the length survives the service
    model = build_model("tiny_test", 2, weights=None, input_shape=32)
    schedule = ScheduleConfig(head=PhaseConfig(epochs=2, decay="cosine"))
    compile_phase(model, schedule.head, schedule, get_task("multiclass"),
                  steps_per_epoch=int(fed.cardinality()))
    history = model.fit(fed, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and int(model.optimizer.iterations) == 6
    worker.stop()
    dispatcher.stop()
