"""Temperature calibration's minimum is checked before any scoring pass (issue 30)."""

import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.core.inputs import InputSpec
from transferkit.core.rundir import RunDir
from transferkit.evaluation import calibrate as cal
from transferkit.evaluation import evaluate as ev
from transferkit.models.builder import build_model
from transferkit.models.bundle import bundle_metadata, save_bundle
from transferkit.training.recipe import RecipeConfig


def test_check_calibration_size_names_the_minimum():
    cal.check_calibration_size(cal.MIN_EXAMPLES)
    with pytest.raises(ConfigError, match=f"at least {cal.MIN_EXAMPLES} images.*has 1"):
        cal.check_calibration_size(1)


def test_evaluate_calibrate_on_a_tiny_val_split_is_exit_2_before_scoring(
        tmp_path, capsys, monkeypatch):
    folder = make_image_folder(tmp_path / "d", per_class=4, size=16)
    for i in (1, 2):  # red 4, blue 2: val_split 0.2 holds out one image
        (tmp_path / "d" / "blue" / f"{i}.png").unlink()
    run = RunDir(tmp_path / "run")
    save_bundle(build_model("tiny_test", 2, weights=None, image_size=16), run.model_file,
                bundle_metadata(("blue", "red"), "multiclass", InputSpec(16, 16)))
    run.write_config(RecipeConfig.from_keys(backbone="tiny_test", val_split=0.2,
                                            seed=0).to_dict())
    assert len(ev.eval_data(ev.load_run(run.path), folder, split="val").files) == 1

    def no_scoring(*args, **kwargs):
        raise AssertionError("a model was run before the minimum was checked")

    monkeypatch.setattr(ev, "ensemble_outputs", no_scoring)
    code = cli.main(["evaluate", run.path, "--data", folder, "--split", "all",
                     "--calibrate"])
    err = capsys.readouterr().err
    assert code == 2 and f"at least {cal.MIN_EXAMPLES} images" in err
