"""A trained model is never lost (issue 30): model.keras is written before the optional
end steps (validation outputs, the flip-TTA decision, metrics, the novelty score, the
report); a step that fails is a warning printed and recorded in run.json, and the run
ends (exit 0) with a loadable model. What a step needs is checked before training."""

import json
import os

import numpy as np
import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.app import train as train_module
from transferkit.app.train import finish, prepare
from transferkit.evaluation.evaluate import load_run, predict
from transferkit.models.builder import build_model
from transferkit.models.tta import tta_of
from transferkit.training.recipe import RecipeConfig

STEPS = {"validation_outputs": "validation outputs", "decide_tta": "flip TTA decision",
         "run_metrics": "metrics", "fit_run_novelty": "novelty score",
         "write_run_report": "report"}


def _recipe(folder, **keys):
    keys = {"val_split": 0.5, **keys}
    return RecipeConfig.from_keys(data=folder, backbone="tiny_test", weights="none",
                                  image_size=16, batch_size=4, **keys)


def test_every_optional_end_step_may_fail_and_the_model_stands(tmp_path, monkeypatch,
                                                               capsys):
    folder = make_image_folder(tmp_path / "data", per_class=6, size=16)
    job = prepare(_recipe(folder), str(tmp_path / "run"))
    model = build_model("tiny_test", 2, weights=None, image_size=16)
    seen = []

    def failing(name):
        def step(*args, **kwargs):
            # The model is on disk, loadable, before the first optional step runs.
            seen.append(load_run(job.run.path).class_names)
            raise RuntimeError(f"{name} failed (simulated)")
        return step

    for name in STEPS:
        monkeypatch.setattr(train_module, name, failing(name))
    result = finish(job, model, [{"phase": "head", "epoch": 0, "loss": 1.0}])
    assert seen and all(names == ("blue", "red") for names in seen)
    assert [w["step"] for w in result.warnings] == list(STEPS.values())
    assert all("(simulated)" in w["error"] for w in result.warnings)
    info = json.load(open(os.path.join(result.out_dir, "run.json")))
    assert info["warnings"] == list(result.warnings)
    assert info["tta"] == {"tta": None, "reason": "the decision failed"}
    printed = capsys.readouterr().out
    assert "warning: the novelty score step failed; model.keras is saved" in printed
    loaded = load_run(result.out_dir)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.model.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)
    assert loaded.novelty is None and tta_of(loaded.model) is None
    assert json.load(open(os.path.join(result.out_dir, "history.json")))[0]["loss"] == 1.0


def test_the_model_is_saved_again_with_what_the_end_steps_chose(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "data", per_class=6, size=16)
    job = prepare(_recipe(folder, report=False), str(tmp_path / "run"))
    model = build_model("tiny_test", 2, weights=None, image_size=16)
    saved = []
    real = train_module.save_bundle
    monkeypatch.setattr(train_module, "save_bundle", lambda *a, **k: saved.append(
        (k.get("novelty"), a[2].get("tta"))) or real(*a, **k))
    result = finish(job, model, [])
    # First the trained model alone, then the final bundle with the decision and score.
    assert saved[0] == (None, None)
    assert saved[1][0] is not None and saved[1][1] == result.tta
    assert load_run(result.out_dir).novelty.detector == saved[1][0].detector
    assert result.warnings == ()


def test_a_failed_optional_step_ends_the_command_with_exit_0(tmp_path, monkeypatch,
                                                            capsys):
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)

    def broken(*args, **kwargs):
        raise ValueError("novelty exploded (simulated)")

    monkeypatch.setattr(train_module, "fit_run_novelty", broken)
    out = tmp_path / "run"
    code = cli.main(["train", "--data", folder, "--backbone", "tiny_test", "--weights",
                     "none", "--image-size", "16", "--head-epochs", "0",
                     "--finetune-epochs", "1", "--unfreeze", "none", "--batch-size", "4",
                     "--augment", "none", "--no-report", "--no-cache-features",
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "novelty exploded (simulated)" in captured.out
    rows = predict(str(out), [os.path.join(folder, "red", "0.png")])
    assert rows[0]["label"] in ("blue", "red")
    assert json.load(open(out / "run.json"))["warnings"][0]["step"] == "novelty score"


def test_the_novelty_minimum_is_said_before_training(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "data", per_class=3, size=16)
    prepare(_recipe(folder, val_split=0.1), str(tmp_path / "run"))  # no val image
    printed = capsys.readouterr().out
    assert "the novelty score needs at least 2 validation images; the validation " \
        "split has 0" in printed
    assert "--no-novelty" in printed
    prepare(_recipe(folder, val_split=0.1, novelty=False), str(tmp_path / "run2"))
    assert "novelty score needs" not in capsys.readouterr().out


@pytest.mark.parametrize("keys", [{"val_split": 0.5}, {"val_split": 0.5, "novelty": False}])
def test_no_warning_when_every_step_can_run(tmp_path, keys, capsys):
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    result = finish(prepare(_recipe(folder, report=False, **keys), str(tmp_path / "run")),
                    build_model("tiny_test", 2, weights=None, image_size=16), [])
    assert result.warnings == () and "warning" not in capsys.readouterr().out
    assert "warnings" not in json.load(open(os.path.join(result.out_dir, "run.json")))
