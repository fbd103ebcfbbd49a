"""`transferkit train` end to end: bad arguments are refused before any work, links
leaving the data folder on request, and a file that breaks after the listing."""

import os

import pytest

from conftest import make_image_folder, make_linked_class_folder, tiny_recipe, truncate
from transferkit import cli
from transferkit.app.train import train
from transferkit.cli.main import build_parser
from transferkit.cli.train import recipe_from_args
from transferkit.core.errors import ConfigError
from transferkit.training.recipe import RecipeConfig, recipe_from_dict


@pytest.mark.parametrize("flags, names", [
    (["--backbone", "nope_net"], "nope_net"),
    (["--image-size", "4"], "image_size=4"),
    (["--unfreeze", "regex:["], "regex:["),
    (["--unfreeze", "blah"], "blah"),
    (["--weights", "/nonexistent/w.h5"], "/nonexistent/w.h5"),
    (["--data", "/nonexistent/photos"], "/nonexistent/photos"),
    (["--recipe", "/nonexistent/r.json"], "/nonexistent/r.json"),
])
def test_bad_train_arguments_exit_2_naming_the_value_before_any_work(tmp_path, capsys,
                                                                      flags, names):
    folder = make_image_folder(tmp_path / "images", per_class=2, size=16)
    args = ["train", "--data", folder, "--backbone", "tiny_test", "--weights", "none",
            "--out", str(tmp_path / "run"), *flags]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "run")  # refused before touching --out


def test_a_damaged_weights_file_exits_2_naming_it_before_the_scan(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", per_class=2, size=16)
    cut = tmp_path / "source.keras"
    cut.write_bytes(b"PK\x03\x04 stopped early")  # a zip header, then nothing usable
    args = ["train", "--data", folder, "--backbone", "tiny_test", "--weights", str(cut),
            "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert str(cut) in captured.err and "not a Keras .keras archive" in captured.err
    assert "Scanned" not in captured.out  # refused before the scan
    assert not os.path.exists(tmp_path / "run")


def test_train_and_recipes_take_follow_links(tmp_path):
    assert RecipeConfig().data.follow_links is False
    assert recipe_from_dict({"follow_links": True}).data.follow_links is True
    with pytest.raises(ConfigError, match="follow_link.*Valid keys"):
        recipe_from_dict({"follow_link": True})  # unknown keys are still refused
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o",
                                      "--follow-links"])
    assert recipe_from_args(args).data.follow_links is True
    folder = make_linked_class_folder(tmp_path)
    run = str(tmp_path / "run")
    result = train(tiny_recipe(folder, image_size=16, batch_size=4, val_split=0.0,
                               follow_links=True, cache_features=False,
                               early_stopping_patience=0), run, verbose=0)
    assert result.class_names == ("blue", "green", "red")


@pytest.mark.slow
def test_no_scan_names_a_truncated_file_at_training_time_and_exits_0(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "data", per_class=5, size=16)
    victim = os.path.join(folder, "red", "2.png")
    truncate(victim)  # its first bytes are a PNG's: the --no-scan listing keeps it
    code = cli.main(["train", "--data", folder, "--out", str(tmp_path / "run"),
                     "--no-scan", "--backbone", "tiny_test", "--weights", "none",
                     "--image-size", "16", "--batch-size", "4", "--head-epochs", "1",
                     "--finetune-epochs", "1", "--augment", "none", "--no-report"])
    captured = capsys.readouterr()
    assert code == 0
    assert victim in captured.out + captured.err and "1 file(s)" in captured.out + captured.err


def test_a_bad_unknown_data_folder_is_refused_before_training(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", per_class=4, size=32)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", data, "--unknown-data", str(tmp_path / "nowhere"),
                 "--backbone", "tiny_test", "--out", str(out)]) == 2
    assert "unknown_data" in capsys.readouterr().err
    assert not (out / "run.json").exists()
