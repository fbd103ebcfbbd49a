"""keras-tuner sweeps over the two-phase recipe: search, phases, resume, distribution."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner
import numpy as np
import pytest
from conftest import make_image_folder, tiny_recipe

from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.training.recipe import RecipeConfig, load_recipe
from transferkit.tuning.hypermodel import TransferHyperModel
from transferkit.models.builder import build_model
from transferkit.training.orchestrator import fine_tune
from transferkit.tuning.hypermodel import timeline_position
from transferkit.tuning.tuner import load_search, tune
from transferkit.tuning.space import Range, SearchSpace, declare, resolve, space_from_dict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 1 + 1 epochs of the tiny backbone on 16 images at 32 px: seconds per trial. Trials run
# in the tuner's process here, sparing a TensorFlow import per trial.
FLAGS = ["--backbone", "tiny_test", "--weights", "none", "--head-epochs", "1",
         "--finetune-epochs", "1", "--batch-size", "8", "--augment", "none", "--no-scan",
         "--in-process"]
SMALL_SPACE = SearchSpace(head_width=(0, 8), head_depth=None, label_smoothing=None,
                          unfreeze_blocks=(1, 2, 3))


def _base(data, **changes):
    return tiny_recipe(data, **{"finetune_epochs": 1, "scan": False, **changes})


@pytest.fixture
def tiny_data(tmp_path):
    return make_image_folder(tmp_path / "images", per_class=8, size=32)


def _trials(out):
    """{trial_id: trial.json dict} of a search's project folder."""
    project = os.path.join(out, "search")
    found = {}
    for name in sorted(os.listdir(project)) if os.path.isdir(project) else ():
        path = os.path.join(project, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            try:
                with open(path) as f:
                    found[name[len("trial_"):]] = json.load(f)
            except json.JSONDecodeError:  # being written right now
                pass
    return found


def _hp_sets(trials):
    return [tuple(sorted(t["hyperparameters"]["values"].items())) for t in trials.values()]


def _env():
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(key, None)
    return env


def test_space_resolves_to_recipes_and_rejects_unknown_names():
    space = space_from_dict({"backbone": ["tiny_test", "lenet"], "head_width": [0, 64],
                             "finetune_lr": {"min": 1e-6, "max": 1e-4, "log": True}})
    assert space.finetune_lr == Range(1e-6, 1e-4, log=True)
    assert space_from_dict(space.to_dict()) == space
    base = RecipeConfig.from_keys(backbone="mobilenet_v2", image_size=96,
                                   backbone_kwargs=(("alpha", 0.35),))
    recipe = resolve({"backbone": "lenet", "head_width": 64, "head_depth": 2,
                      "unfreeze_blocks": 3, "tuner/epochs": 4}, base)
    # The image size follows the backbone's spec (resolved where every size is); the base
    # backbone's kwargs stay behind.
    model = recipe.model
    assert (model.backbone, model.image_size, model.backbone_kwargs) == ("lenet", 0, ())
    assert recipe.input_spec().size == (32, 32)
    assert model.head.units == (64, 64)
    assert str(recipe.schedule.finetune.freeze) == "last_blocks:3"
    assert resolve({"head_width": 0}, base).model.head.units == ()
    assert resolve({"layer_lr_decay": 0.75}, base).schedule.finetune.layer_lr_decay == 0.75
    hp = keras_tuner.HyperParameters()
    values = declare(hp, SearchSpace(head_width=(0,)))
    assert "head_depth" not in values  # depth is meaningless for a linear probe
    with pytest.raises(ConfigError, match="head_width"):
        space_from_dict({"head_widht": [8]})
    with pytest.raises(ConfigError, match="mobilenet"):
        SearchSpace(backbone=("mobilenet_v9",))


def test_hyperband_epoch_spans_map_onto_the_two_phases(capsys):
    # A trial's timeline: phase 1 is epochs [0, 2), phase 2 [2, 5). Hyperband's
    # (initial_epoch, epochs) spans run through the one orchestrator.
    schedule = RecipeConfig.from_keys(head_epochs=2, finetune_epochs=3, unfreeze="none",
                                       early_stopping_patience=0, batch_size=4).schedule
    rng = np.random.default_rng(0)
    data = (rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32"), np.arange(8) % 2)
    model = build_model("tiny_test", 2, weights=None, input_shape=16)
    phases = {}
    for initial, epochs in ((0, 1), (1, 4), (3, 5), (0, None)):
        start = timeline_position(schedule, initial)
        result = fine_tune(model, data, config=schedule, start=start, stop_epoch=epochs,
                           verbose=0)
        phases[initial, epochs] = [(r["epoch"], r["phase"]) for r in result.history]
    assert phases[0, 1] == [(1, "head")]  # a short first Hyperband round
    assert phases[1, 4] == [(2, "head"), (3, "finetune"), (4, "finetune")]  # continued
    assert phases[3, 5] == [(4, "finetune"), (5, "finetune")]
    assert [p for _, p in phases[0, None]] == ["head"] * 2 + ["finetune"] * 3
    with pytest.raises(SystemExit) as stop:
        cli.main(["tune", "--help"])
    assert stop.value.code == 0
    assert "KERASTUNER_ORACLE_PORT" in capsys.readouterr().out


def test_backbone_weights_change_only_in_phase_2(tiny_data):
    # Phase 1 on the live backbone (no feature cache): the case where freezing matters.
    hypermodel = TransferHyperModel(_base(tiny_data, cache_features=False,
                                          head_epochs=2, finetune_lr=1e-2),
                                    SearchSpace(unfreeze_blocks=(3,)))
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    backbone, head = model.get_layer("backbone"), model.get_layer("head")
    snapshots = []

    class Probe(keras.callbacks.Callback):
        # Snapshots the full model's parts around each fit, whatever model fit trains
        # (cached phase 1 fits the head alone).
        def on_train_begin(self, logs=None):
            snapshots.append([backbone.get_weights(), head.get_weights()])

        def on_train_end(self, logs=None):
            snapshots[-1] += [backbone.get_weights(), head.get_weights()]

    result = hypermodel.fit(hp, model, callbacks=[Probe()], verbose=0)
    assert 0.0 <= result["val_accuracy"] <= 1.0
    assert len(snapshots) == 2  # one fit per phase
    (bb0, h0, bb1, h1), (bb2, _, bb3, _) = snapshots

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a, b))

    assert same(bb0, bb1), "phase 1 changed the backbone (BN statistics included)"
    assert not same(h0, h1), "phase 1 did not train the head"
    assert same(bb1, bb2)
    assert not same(bb2, bb3), "phase 2 did not fine-tune the backbone"


def test_search_writes_sorted_report_and_best_recipe_retrains(tiny_data, tmp_path):
    out = str(tmp_path / "sweep")
    result = tune(_base(tiny_data), out, space=SMALL_SPACE, max_trials=2, verbose=0,
                  process_per_trial=False)
    trials = _trials(out)
    assert sorted(trials) == ["0", "1"]
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    scores = [float(r["objective"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(rows) == 2  # val_accuracy: max
    assert {"head_width", "unfreeze_blocks", "head_lr"} <= set(rows[0])
    with open(os.path.join(out, "objective.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "results.html")) as f:
        assert 'src="objective.png"' in f.read()
    best = load_recipe(os.path.join(out, "best_recipe.json"))
    assert best == result.best_recipe
    assert str(best.schedule.finetune.freeze) == f"last_blocks:{rows[0]['unfreeze_blocks']}"
    with pytest.raises(ConfigError, match="--resume"):
        tune(_base(tiny_data), out, space=SMALL_SPACE, max_trials=2, verbose=0)

    run = str(tmp_path / "best")
    assert cli.main(["train", "--from-tuning", out, "--out", run, "--finetune-epochs",
                     "0", "--no-cache-features"]) == 0
    config = load_recipe(os.path.join(run, "config.json")).flat()
    assert config["head_lr"] == best.flat()["head_lr"] and config["finetune_epochs"] == 0


def test_killed_search_resumes_to_exactly_max_trials(tiny_data, tmp_path):
    out = str(tmp_path / "sweep")
    # The killed search runs the default, one process per trial (so the kill also
    # takes down trial 1's process); the resume trains in this process.
    command = [sys.executable, "-m", "transferkit", "tune", "--data", tiny_data,
               "--out", out, "--max-trials", "3", "--seed", "1", *FLAGS[:-1]]
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        # Kill once trial 0 is finished and trial 1 has started (its file is written
        # when keras-tuner hands it out), so the kill lands mid-trial.
        while "1" not in _trials(out) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        before = _trials(out)
        assert before["0"]["status"] == "COMPLETED"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    cut_off = [i for i, t in before.items() if t["status"] == "RUNNING"]
    assert cut_off, "no trial was cut off midway"

    # The resume runs in this process: it reads nothing but the killed search's files.
    assert cli.main(["tune", "--out", out, "--resume", "--in-process"]) == 0
    after = _trials(out)
    assert sorted(after) == ["0", "1", "2"]
    assert all(t["status"] == "COMPLETED" for t in after.values())
    assert len(set(_hp_sets(after))) == 3, "a hyperparameter set ran twice"
    assert after["0"] == before["0"], "a finished trial was redone"
    base, _, settings = load_search(out)
    assert settings["max_trials"] == 3 and base.model.backbone == "tiny_test"


@pytest.mark.slow  # three tuner processes, ~30 s; CI runs `-m slow` on every landing
def test_distributed_chief_and_two_workers_on_localhost(tiny_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "sweep")
    command = [sys.executable, "-m", "transferkit", "tune", "--data", tiny_data,
               "--out", out, "--max-trials", "2", *FLAGS]
    procs = []
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            env = dict(_env(), KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                       KERASTUNER_ORACLE_PORT=str(port))
            procs.append(subprocess.Popen(command, cwd=REPO, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        deadline = time.time() + 300
        outputs = [p.communicate(timeout=max(1, deadline - time.time())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    assert "tuner tuner0: done" in outputs[1][0] and "tuner tuner1: done" in outputs[2][0]
    trials = _trials(out)
    assert sorted(trials) == ["0", "1"]
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    assert len(set(_hp_sets(trials))) == 2
    assert os.path.exists(os.path.join(out, "best_recipe.json"))  # the chief's report
