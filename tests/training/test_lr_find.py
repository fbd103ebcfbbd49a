"""The learning-rate range test: on cached features, on the boundary cache, the CLI."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from transferkit.cli.main import main
from transferkit.core.errors import ConfigError
from transferkit.data.load import load_data
from transferkit.models import build_model
from transferkit.training.cache import FeatureCache
from transferkit.training.lr_find import AutoLR, find_lr, suggest_rate
from transferkit.training.orchestrator import fine_tune
from transferkit.training.recipe import load_recipe
from transferkit.training.schedule import PhaseConfig, ScheduleConfig

SCHEDULE = ScheduleConfig(finetune=PhaseConfig(freeze="last_blocks:1"), batch_size=8)


@pytest.fixture
def splits(image_folder):
    return load_data(image_folder, image_size=32, batch_size=8, seed=0, verbose=False)


def _model():
    keras.utils.set_random_seed(0)
    return build_model("tiny_test", 2, weights=None, input_shape=32)


def test_suggestion_is_a_tenth_of_the_rate_at_the_smoothed_minimum():
    rates = np.geomspace(1e-6, 1.0, 61)
    # Flat, then falling fastest around 1e-3, lowest at 1e-1, then diverging.
    losses = 1.0 - 0.8 / (1 + np.exp(-3 * (np.log10(rates) + 3))) \
        + np.where(rates > 0.1, 10 * (rates - 0.1), 0.0)
    rate, reason = suggest_rate(list(rates), list(losses))
    best = rates[int(np.argmin(losses))]
    assert rate == pytest.approx(best / 10)
    assert f"{rate:.2g}" in reason and "falls fastest at 0.001" in reason


def test_range_test_on_cached_features_and_on_the_boundary_cache(splits, tmp_path):
    model = _model()
    before = model.get_weights()
    head = find_lr(model, splits, phase="head", config=SCHEDULE, cache=FeatureCache(),
                   steps=30, verbose=0)
    assert head.mode == "features" and len(head.rates) == len(head.losses) >= 3
    np.testing.assert_allclose(np.diff(np.log(head.rates)),
                               np.log(1e7) / 29, rtol=1e-6)  # min_lr to max_lr in 30 steps
    best = head.rates[int(np.argmin(head.smoothed))]
    assert head.suggestion == pytest.approx(best / 10)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)  # the test leaves the model as it found it
    path = head.save_plot(tmp_path / "lr.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    finetune = find_lr(model, splits, phase="finetune", config=SCHEDULE,
                       cache=FeatureCache(boundary=True), steps=20, verbose=0)
    assert finetune.mode == "boundary" and finetune.phase == "finetune"
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_auto_lr_tests_a_phase_as_it_starts_and_trains_it_at_the_suggestion(splits,
                                                                           tmp_path):
    schedule = dataclasses.replace(
        SCHEDULE, head=PhaseConfig(epochs=1, lr_auto=True, early_stopping_patience=0),
        finetune=dataclasses.replace(SCHEDULE.finetune, epochs=1, early_stopping_patience=0))
    recorded = []
    auto = AutoLR(tmp_path, on_found=recorded.append, steps=20, verbose=0)
    result = fine_tune(_model(), splits, config=schedule, cache=FeatureCache(),
                       callbacks=[auto], verbose=0)
    head = json.loads((tmp_path / "lr_find_head.json").read_text())
    assert head["mode"] == "features" and os.path.getsize(tmp_path / "lr_find_head.png")
    assert recorded == [{"head": head["suggestion"]}] == [auto.found]
    assert result.metric("learning_rate", "head") == pytest.approx([head["suggestion"]])
    # Phase 2 has no lr_auto: its own rate, no test.
    assert result.metric("learning_rate", "finetune") == pytest.approx(
        [schedule.finetune.learning_rate])
    assert not (tmp_path / "lr_find_finetune.json").exists()


@pytest.mark.slow
def test_cli_lr_find_writes_the_finding_and_the_plot(image_folder, tmp_path, capsys):
    common = ["lr-find", "--data", image_folder, "--backbone", "tiny_test", "--weights",
              "none", "--image-size", "32", "--batch-size", "8", "--no-report"]
    code = main(common + ["--phase", "head", "--steps", "15", "--out", str(tmp_path)])
    assert code == 0
    assert "suggested learning rate" in capsys.readouterr().out
    finding = json.loads((tmp_path / "lr_find.json").read_text())
    assert finding["phase"] == "head" and finding["mode"] == "features"
    assert os.path.getsize(tmp_path / "lr_find.png") > 0
    assert main(common + ["--min-lr", "2", "--max-lr", "1", "--out", str(tmp_path)]) == 2
    assert "min_lr=2.0" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:weights=none")  # a random tiny backbone, on purpose
def test_train_with_auto_rates_uses_and_records_the_suggestions(folder_recipe, tmp_path,
                                                                monkeypatch):
    from transferkit.training.recipe import load_recipe
    from transferkit.app.train import train
    from transferkit.core.rundir import RunDir

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    recipe = folder_recipe(head_epochs=2, finetune_epochs=2, unfreeze="last_blocks:1",
                           decay="constant", early_stopping_patience=0, head_lr_auto=True,
                           finetune_lr_auto=True)
    train(recipe, tmp_path / "run", verbose=0)
    found = {phase: json.loads((tmp_path / "run" / f"lr_find_{phase}.json").read_text())
             for phase in ("head", "finetune")}
    assert found["head"]["mode"] == "features" and found["finetune"]["mode"] == "boundary"
    saved = load_recipe(tmp_path / "run" / "config.json")
    saved = saved.flat()
    assert not (saved["head_lr_auto"] or saved["finetune_lr_auto"])  # a resume keeps them
    assert saved["head_lr"] == found["head"]["suggestion"]
    assert saved["finetune_lr"] == found["finetune"]["suggestion"]
    history = RunDir(tmp_path / "run").read_history()
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    for record in history:
        assert record["learning_rate"] == pytest.approx(
            found[record["phase"]]["suggestion"], rel=1e-6)


def test_tuner_centres_the_auto_rates_on_one_range_test(tmp_path, monkeypatch):
    from transferkit.training.recipe import RecipeConfig
    from transferkit.tuning import tuner
    from transferkit.tuning.space import Range, SearchSpace

    tested = []

    def fake_range_test(recipe, out_dir, *, phase, name, **_):
        # Phase 2's test must start from phase 1 at its suggested rate, auto off.
        flat = recipe.flat()
        tested.append((phase, flat["head_lr"], flat["head_lr_auto"],
                       flat["finetune_lr_auto"]))
        finding = {"head": 2e-3, "finetune": 4e-5}[phase]
        (tmp_path / f"{name}.json").write_text(json.dumps({"suggestion": finding}))
        return type("Finding", (), {"suggestion": finding})()

    monkeypatch.setattr(tuner, "find_lr_for_recipe", fake_range_test)
    base = RecipeConfig.from_keys(data="data", head_lr_auto=True, finetune_lr_auto=True)
    centred, space = tuner.centre_rates(base, SearchSpace(finetune_lr=None), tmp_path,
                                        verbose=0)
    assert tested == [("head", base.schedule.head.learning_rate, False, False),
                      ("finetune", 2e-3, False, False)]
    assert space.head_lr == Range(2e-3 / 10, 2e-3 * 10, log=True)  # a decade each way
    assert space.finetune_lr == Range(4e-5 / 10, 4e-5 * 10, log=True)
    flat = centred.flat()
    assert (flat["head_lr"], flat["finetune_lr"]) == (2e-3, 4e-5)
    assert not (flat["head_lr_auto"] or flat["finetune_lr_auto"])  # trials don't retest
    # A resumed search reuses the recorded suggestions instead of testing again.
    assert tuner.centre_rates(base, SearchSpace(), tmp_path, resume=True,
                              verbose=0) == (centred, space)
    assert len(tested) == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:weights=none")  # a random tiny backbone, on purpose
def test_cli_tune_with_auto_rates_searches_around_the_suggestion(image_folder, tmp_path,
                                                                  capsys):
    out = tmp_path / "sweep"
    code = main(["tune", "--data", image_folder, "--backbone", "tiny_test", "--weights",
                 "none", "--image-size", "32", "--batch-size", "8", "--head-epochs", "1",
                 "--finetune-epochs", "1", "--augment", "none", "--no-scan",
                 "--unfreeze", "last_blocks:1", "--in-process", "--max-trials", "2",
                 "--head-lr-auto", "--finetune-lr-auto", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    space = json.loads((out / "space.json").read_text())
    base = load_recipe(str(out / "base_recipe.json")).flat()
    assert not (base["head_lr_auto"] or base["finetune_lr_auto"])
    for phase in ("head", "finetune"):
        suggestion = json.loads((out / f"lr_find_{phase}.json").read_text())["suggestion"]
        assert os.path.getsize(out / f"lr_find_{phase}.png") > 0
        assert f"{phase}_lr: the range test suggests {suggestion:.2g}" in printed
        assert space[f"{phase}_lr"]["min"] == pytest.approx(suggestion / 10)
        assert space[f"{phase}_lr"]["max"] == pytest.approx(suggestion * 10)
        assert base[f"{phase}_lr"] == suggestion
        for trial in (out / "search").glob("trial_*/trial.json"):
            rate = json.loads(trial.read_text())["hyperparameters"]["values"][f"{phase}_lr"]
            assert suggestion / 10 <= rate <= suggestion * 10


def test_lr_auto_without_the_hook_is_refused_not_ignored():
    rng = np.random.default_rng(0)
    data = (rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"), np.arange(8) % 2)
    model = build_model("tiny_test", 2, weights=None, input_shape=32)
    config = ScheduleConfig(head=PhaseConfig(epochs=1, lr_auto=True),
                            finetune=PhaseConfig(epochs=0), batch_size=4)
    with pytest.raises(ConfigError, match=r"'head' has lr_auto=True.*AutoLR"):
        fine_tune(model, data, config=config, verbose=0)
