"""Recipe scripts, the shipped source checkpoint and the shipped sample dataset."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from transferkit.models.backbones import create_backbone
from transferkit.models.registry import get_spec
from transferkit.data.load import load_data
from transferkit.core.errors import ConfigError
from transferkit.training.freezing import freeze
from transferkit.app.train import RunResult
from transferkit.training.recipe import build_run_model
from transferkit.app import train as app_train
from transferkit.cli.recipes import resolve_recipe, run_recipe
from transferkit.models.saving import load_model, read_metadata
from transferkit.training.recipe import SHORTHANDS
from transferkit.training.recipe_book import RECIPES, Recipe, get_recipe, register_recipe

from conftest import backbone_params

ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = ROOT / "recipes"
DATA = ROOT / "data"
CHECKPOINT = DATA / "source_compact_cnn.keras"
BACKBONE_RECIPES = ("mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
                    "efficientnet_b3", "efficientnet_v2_b0", "resnet50", "resnet50_v2",
                    "inception_v3", "inception_resnet_v2", "xception", "vgg16",
                    "densenet121", "convnext_tiny", "mobilenet", "nasnet_mobile",
                    "efficientnet_lite0", "efficientnet_v2_s")
HELPERS = {"pretrain_source", "make_sample", "procedural", "make_segmentation_sample",
           "make_localization_sample", "make_detection_sample", "detection_sets"}
# Tested in tests/tasks/test_segmentation.py and tests/tasks/test_localization.py.
TASK_RECIPES = ("unet_mobilenet_v2", "localization_compact_cnn")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}",
                                                  RECIPES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_listed_backbone_has_a_recipe_and_nothing_else():
    found = {p.stem for p in RECIPES_DIR.glob("*.py")} - HELPERS - set(TASK_RECIPES)
    assert found == set(BACKBONE_RECIPES)
    table = (RECIPES_DIR / "README.md").read_text()
    for name in BACKBONE_RECIPES:
        assert f"`{name}`" in table  # each recipe is in the README table


def _resolve_tiny(name, tmp_path):
    defaults = get_recipe(name).values()
    spec = get_spec(defaults["backbone"])
    size = max(spec.min_size, 32)
    recipe, args = resolve_recipe(name, [
        "--data", str(tmp_path), "--weights", "none", "--image-size", str(size),
        "--finetune-lr", "3e-5", "--out", str(tmp_path / "run")])
    return defaults, spec, size, recipe, args


@pytest.mark.parametrize("name", BACKBONE_RECIPES)
def test_recipe_parses_its_defaults_and_overrides(name, tmp_path):
    defaults, spec, size, recipe, args = _resolve_tiny(name, tmp_path)
    assert spec.name == name and defaults["weights"] == "imagenet"
    # Flags win; every other recipe default survives.
    flat = recipe.flat()
    assert (flat["image_size"], flat["weights"], flat["finetune_lr"]) == (size, "none", 3e-5)
    assert args.out == str(tmp_path / "run")
    for key, value in defaults.items():
        if key not in ("image_size", "weights", "finetune_lr"):
            for target in SHORTHANDS.get(key, (key,)):
                assert flat[target] == (list(value) if isinstance(value, tuple)
                                        else value), key


def test_every_recipe_in_the_book_has_a_script_and_sources():
    assert set(RECIPES) == set(BACKBONE_RECIPES) | set(TASK_RECIPES)
    for name, recipe in RECIPES.items():
        assert f'run_recipe("{name}")' in (RECIPES_DIR / f"{name}.py").read_text()
        # Every setting but the backbone's own name says where its value comes from.
        assert all(source for key, _, source in recipe.settings if key != "backbone"), name


# A whole model per recipe: backbones of up to 300 operations (BackboneSpec.operations)
# build in the default run, the heavier ones (5-25 s each on a loaded 2-core machine)
# with `-m slow`.
@pytest.mark.parametrize("name", backbone_params(BACKBONE_RECIPES, 300))
def test_recipe_builds_its_model_tiny(name, tmp_path):
    _, _, _, recipe, _ = _resolve_tiny(name, tmp_path)
    model = build_run_model(recipe, 3)
    assert model.output_shape == (None, 3) and model.name == name
    # The recipe's unfreeze depth resolves on the real layer layout: something trains,
    # and BatchNorm (kept frozen by every recipe) does not.
    audit = freeze(model, recipe.schedule.finetune.freeze)
    assert 0 < audit.trainable_params < audit.total_params


def test_recipe_rejects_unknown_names_and_keys_and_needs_data(capsys):
    with pytest.raises(ConfigError, match="unfreeze"):
        register_recipe(Recipe("broken", "a typo", (("unfreez", "none", "typo"),)))
    assert "broken" not in RECIPES
    with pytest.raises(ConfigError, match="Unknown recipe 'vgg61'.*'vgg16'"):
        get_recipe("vgg61")
    assert run_recipe("vgg16", []) == 2
    assert "--data" in capsys.readouterr().err


def test_recipe_hands_the_resolved_config_to_train(tmp_path, monkeypatch, capsys):
    # app.train itself is covered by the demo tests and tests/test_run*; here only the
    # wiring: the recipe's defaults plus flags reach train() with the --out folder.
    seen = {}

    def fake_train(recipe, out_dir, **_):
        seen.update(recipe=recipe, out=out_dir)
        return RunResult(out_dir, None, (), {"val": {"num_images": 4, "accuracy": 0.5}},
                         ("a", "b"))

    # The command imports train when it runs (its parser loads no TensorFlow).
    monkeypatch.setattr(app_train, "train", fake_train)
    code = run_recipe("efficientnet_b0", [
        "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--head-epochs", "1"])
    assert code == 0
    assert seen["out"] == str(tmp_path / "run")
    schedule = seen["recipe"].schedule
    assert (str(schedule.finetune.freeze), schedule.head.epochs) == ("top_layers:20", 1)
    assert "val: 4 images: accuracy=0.5000" in capsys.readouterr().out


def test_source_checkpoint_loads_as_a_backbone():
    assert CHECKPOINT.stat().st_size < 2 * 2**20
    meta = read_metadata(CHECKPOINT)
    assert meta["backbone"] == "compact_cnn" and meta["image_size"] == 64
    backbone = create_backbone("compact_cnn", weights=str(CHECKPOINT),
                               input_shape=(64, 64, 3))
    saved = load_model(CHECKPOINT, safe_mode=True).get_layer("backbone")
    for mine, theirs in zip(backbone.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    # The source task's classes are not the sample set's.
    assert not set(meta["class_names"]) & {p.name for p in (DATA / "sample").iterdir()}


def test_sample_set_loads_like_user_data_and_regenerates_exactly(tmp_path):
    splits = load_data(str(DATA / "sample"), image_size=64, batch_size=16,
                       val_split=0.25, verbose=False)
    assert splits.class_names == ("arrow", "crescent", "cross", "frame", "ring")
    assert splits.counts == {"train": 150, "val": 50}
    assert splits.scan_report.converted  # the grayscale file was normalised, not lost
    # The shipped files are exactly what recipes/make_sample.py writes.
    make_sample = _load("make_sample")
    written = make_sample.write_sample(tmp_path / "sample")
    for path in written:
        shipped = DATA / "sample" / path.relative_to(tmp_path / "sample")
        assert shipped.read_bytes() == path.read_bytes(), shipped
    assert len(written) == sum(len(files) for _, _, files in os.walk(DATA / "sample"))


@pytest.mark.slow
def test_pretrain_source_runs_tiny(tmp_path):
    out = tmp_path / "source.keras"
    assert _load("pretrain_source").main(
        ["--out", str(out), "--per-class", "4", "--epochs", "1", "--batch-size", "8",
         "--image-size", "32"]) == 0
    assert read_metadata(out)["backbone"] == "compact_cnn"
    create_backbone("compact_cnn", weights=str(out), input_shape=(32, 32, 3))
