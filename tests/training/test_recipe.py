"""RecipeConfig: one tree of the API's own configs, frozen, validated, and strict about
the keys of a recipe file (nested or flat)."""

import dataclasses
import inspect
import json

import numpy as np
import pytest

from transferkit.core.errors import ConfigError
from transferkit.training.freezing import FreezePolicy
from transferkit.training.recipe import (KEYS, LEAVES, SHORTHANDS, RecipeConfig, load_recipe,
                                         recipe_from_dict)


def test_unknown_keys_list_valid_keys_and_suggest_a_close_match():
    with pytest.raises(ConfigError) as info:
        recipe_from_dict({"head_epoch": 3, "batch_size": 8})
    message = str(info.value)
    assert "'head_epoch'" in message and "Did you mean 'head_epochs'" in message
    assert "Valid keys:" in message
    assert all(key in message for key in KEYS)
    assert "'batch_size'" not in message.split("Valid keys:")[0]  # only the bad key


def test_type_errors_name_the_key_and_the_type():
    for key, value, expected in [
        ("head_epochs", "5", "int"), ("head_lr", "1e-3", "float"), ("backbone", 3, "str"),
        ("scan", "yes", "true or false"), ("head_epochs", True, "int"),  # bool is no int
        ("head_lr", False, "float"),
    ]:
        with pytest.raises(ConfigError) as info:
            recipe_from_dict({key: value})
        message = str(info.value)
        assert repr(key) in message and expected in message, message
        assert f"{key}={value!r}" in message, message


def test_json_friendly_values_are_converted():
    recipe = recipe_from_dict({"head_lr": 1, "head_units": [64, 32],
                               "backbone_kwargs": {"alpha": 0.35}, "scan": False})
    lr = recipe.schedule.head.learning_rate
    assert lr == 1.0 and isinstance(lr, float)
    assert recipe.model.head.units == (64, 32)
    assert recipe.model.backbone_kwargs == (("alpha", 0.35),)
    assert recipe.data.scan is False
    hash(recipe)  # tuples all the way down: the config stays hashable


def test_config_is_frozen_and_replace_revalidates():
    recipe = RecipeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.schedule.head.epochs = 1
    changed = recipe_from_dict({"head_epochs": 1, "backbone": "resnet50"}, recipe)
    assert (changed.schedule.head.epochs, changed.model.backbone) == (1, "resnet50")
    assert recipe == RecipeConfig()  # the original is untouched
    model = dataclasses.replace(recipe.model, backbone="resnet50")  # the API's way
    assert dataclasses.replace(recipe, model=model).model.backbone == "resnet50"
    with pytest.raises(ConfigError, match="dropout"):
        recipe_from_dict({"dropout": 1.5})
    with pytest.raises(ConfigError, match="pooling"):
        dataclasses.replace(recipe.model.head, pooling="mean")
    with pytest.raises(ConfigError, match="last_blocks:x"):
        recipe_from_dict({"unfreeze": "last_blocks:x"})


def test_recipe_builds_head_and_schedule_configs():
    recipe = recipe_from_dict({"task": "binary", "head_units": [8], "head_epochs": 2,
                               "finetune_lr": 2e-5, "unfreeze": "regex:^block5",
                               "train_batchnorm": True, "backbone_lr_multiplier": 0.1,
                               "early_stopping_patience": 0, "warmup_epochs": 1,
                               "layer_lr_decay": 0.75})
    assert (recipe.task, recipe.model.head.units) == ("binary", (8,))
    schedule = recipe.schedule
    assert schedule.head.epochs == 2 and schedule.head.freeze == FreezePolicy("all")
    assert schedule.finetune.learning_rate == 2e-5
    assert schedule.finetune.freeze == FreezePolicy("regex", "^block5", train_batchnorm=True)
    assert schedule.finetune.backbone_lr_multiplier == 0.1
    assert schedule.finetune.early_stopping_patience == 0  # off
    assert schedule.head.early_stopping_patience == 0  # a shorthand for both phases
    assert schedule.finetune.warmup_epochs == 1
    assert schedule.finetune.layer_lr_decay == 0.75 and schedule.head.layer_lr_decay == 1.0
    # config.json is `to_dict`: a resumed run reads every setting back.
    assert recipe_from_dict(recipe.to_dict()) == recipe
    assert recipe_from_dict(recipe.flat()) == recipe


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5])
def test_layer_lr_decay_outside_0_1_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=rf"`layer_lr_decay`.*\(0, 1\].*"
                                          rf"layer_lr_decay={value}"):
        recipe_from_dict({"layer_lr_decay": value})


def test_load_recipe_from_json(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"backbone": "tiny_test", "image_size": 32}))
    recipe = load_recipe(str(path))
    assert (recipe.model.backbone, recipe.model.image_size) == ("tiny_test", 32)
    base = RecipeConfig.from_keys(batch_size=4)
    assert load_recipe(str(path), base=base).schedule.batch_size == 4
    path.write_text(json.dumps({"backbon": "tiny_test"}))
    with pytest.raises(ConfigError, match=r"recipe\.json.*'backbone'"):
        load_recipe(str(path))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_recipe(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_recipe(str(path))
    with pytest.raises(ConfigError, match="missing.json"):
        load_recipe(str(tmp_path / "missing.json"))


def test_trust_is_never_read_from_a_recipe():
    # Only the person running transferkit can vouch for a model file (--trusted).
    assert "trusted" not in dataclasses.asdict(RecipeConfig())
    with pytest.raises(ConfigError, match="`trusted` is not a recipe key.*--trusted"):
        recipe_from_dict({"trusted": True})


def test_api_and_recipe_share_one_set_of_defaults():
    # `tk.fine_tune(model, data)` runs ScheduleConfig(); `transferkit train` runs
    # RecipeConfig().schedule: the same object, so the same phases and rates.
    from transferkit.training.orchestrator import fine_tune
    from transferkit.training.schedule import ScheduleConfig

    default = inspect.signature(fine_tune).parameters["config"].default
    assert default == ScheduleConfig() == RecipeConfig().schedule
    assert RecipeConfig().schedule.finetune.decay == "cosine"


def test_nested_form_round_trips_and_names_unknown_keys_with_their_place():
    recipe = recipe_from_dict({"task": "binary", "head_units": [8], "unfreeze": "none",
                               "train_batchnorm": True, "head_optimizer": "sgd"})
    tree = json.loads(json.dumps(recipe.to_dict()))
    assert tree["schedule"]["finetune"]["freeze"] == "none"
    assert tree["schedule"]["finetune"]["train_batchnorm"] is True
    assert tree["model"]["head"]["units"] == [8]
    assert recipe_from_dict(tree) == recipe
    tree["model"]["head"]["unitz"] = [3]
    with pytest.raises(ConfigError, match=r"'unitz' in model\.head.*'units'.*Valid keys "
                                          r"there:.*dropout"):
        recipe_from_dict(tree)


def test_shorthands_set_their_phases_and_specific_keys_win():
    recipe = recipe_from_dict({"head_optimizer": "adam", "optimizer": "sgd",
                               "weight_decay": 0.01})
    assert (recipe.schedule.head.optimizer, recipe.schedule.finetune.optimizer) == (
        "adam", "sgd")
    assert recipe.schedule.head.weight_decay == recipe.schedule.finetune.weight_decay == 0.01
    for key, targets in SHORTHANDS.items():
        assert all(t in LEAVES for t in targets), key


def test_every_leaf_has_one_key_and_a_doc():
    keys = [leaf.key for leaf in LEAVES.values()]
    assert len(keys) == len(set(keys)) and not set(keys) & set(SHORTHANDS)
    assert all(len(leaf.doc) > 10 for leaf in LEAVES.values())


def test_print_config_prints_the_resolved_tree_without_training(tmp_path, capsys):
    from transferkit.cli.main import main

    code = main(["train", "--recipe", "efficientnet_lite0", "--head-epochs", "2",
                 "--print-config"])
    tree = json.loads(capsys.readouterr().out)
    assert code == 0 and tree["model"]["backbone"] == "efficientnet_lite0"
    assert tree["schedule"]["head"]["epochs"] == 2  # the flag over the recipe
    assert tree["schedule"]["head"]["learning_rate"] == 5e-3  # the recipe's
    assert not list(tmp_path.iterdir())


def test_every_train_flag_has_a_description():
    from transferkit.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    missing = [a.option_strings for a in sub._actions
               if a.option_strings and not (a.help or "").strip()]
    assert not missing, missing
    helps = {a.dest: a.help for a in sub._actions}
    assert "alpha" not in helps["head_units"]  # not copied from --backbone-kwargs
    assert "default: 5" in helps["head_epochs"] and "epochs" in helps["head_epochs"]


@pytest.mark.filterwarnings("ignore:weights=none")  # a random tiny backbone, on purpose
def test_fine_tune_and_train_without_options_run_the_same_phases_and_rates(tmp_path,
                                                                          capsys):
    # Only what a tiny offline run needs differs from the defaults (backbone, weights,
    # size); everything else, the caches included, is each side's own default.
    import keras

    import transferkit as tk
    from transferkit.cli.main import main
    from transferkit.data.config import augment_config
    from transferkit.evaluation.evaluate import predict_outputs
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "images", per_class=20)
    run = tmp_path / "run"
    keras.utils.set_random_seed(0)
    assert main(["train", "--data", folder, "--backbone", "tiny_test", "--weights",
                 "none", "--image-size", "32", "--no-report", "--out", str(run)]) == 0
    cli_out = capsys.readouterr().out
    cli = json.loads((run / "history.json").read_text())
    cli_accuracy = json.loads((run / "metrics.json").read_text())["val"]["tta"]["plain"][
        "accuracy"]
    # load_data is given the recipe's augmentation (its own default is none): the
    # same data on both sides, so any difference is fine_tune's.
    data = tk.load_data(folder, image_size=32, verbose=False,
                        augment=augment_config(RecipeConfig().data.augment))
    keras.utils.set_random_seed(0)
    model = tk.build_model("tiny_test", data.num_classes, weights=None, input_shape=32)
    api = tk.fine_tune(model, data).history
    api_out = capsys.readouterr().out
    # Both trained phase 1 on cached features and phase 2 on boundary activations,
    # sized for cached tensors (PhaseConfig.on_cache: caps of 200 and 15 epochs).
    for out in (cli_out, api_out):
        assert "phase 1 on cached backbone features (1 augmented view" in out
        assert "phase 2 on cached activations of" in out
        assert "Epoch 1/200" in out
    # Early stopping may end a phase at another epoch on either side; every epoch both
    # ran has the same phase, epoch in phase and learning rate.
    assert len(cli) >= 2 and len(api) >= 2
    assert {r["phase"] for r in cli} == {r["phase"] for r in api} == {"head", "finetune"}
    for phase in ("head", "finetune"):
        mine = [r for r in cli if r["phase"] == phase]
        theirs = [r for r in api if r["phase"] == phase]
        for a, b in zip(mine, theirs):
            assert a["phase_epoch"] == b["phase_epoch"]
            assert a["learning_rate"] == pytest.approx(b["learning_rate"])
    # Phase 2's cosine runs over the cached cap (15 epochs), not the live 5 (after one
    # epoch of 5: 0.90e-5).
    for history in (cli, api):
        finetune = [r for r in history if r["phase"] == "finetune"]
        assert finetune[0]["learning_rate"] > 0.98e-5 and len(finetune) <= 15
    # The same final validation accuracy, to within one image of noise.
    outputs, labels = predict_outputs(model, data.val)
    api_accuracy = float(np.mean(outputs.argmax(1) == labels.argmax(1)))
    assert abs(api_accuracy - cli_accuracy) <= 1 / len(labels) + 1e-9


def test_phases_on_cached_tensors_are_sized_for_convergence_unless_epochs_are_asked():
    schedule = RecipeConfig().schedule
    head, finetune = schedule.head.on_cache(), schedule.finetune.on_cache()
    assert (head.epochs, head.early_stopping_patience) == (200, 10)
    assert (finetune.epochs, finetune.early_stopping_patience) == (15, 5)
    assert schedule.head.epochs == 5  # live, a small count
    # Epochs or patience the user asked for hold on cached tensors too.
    for keys in ({"head_epochs": 3}, {"head_early_stopping_patience": 2}):
        asked = recipe_from_dict(keys).schedule.head
        assert asked.on_cache() == asked
    assert recipe_from_dict({"head_epochs": 3, "head_cached_epochs": 50}) \
        .schedule.head.on_cache().epochs == 50
    assert recipe_from_dict({"head_epochs": 0}).schedule.head.on_cache().epochs == 0
    # A tuner's trials keep a fixed timeline.
    fixed = schedule.fixed()
    assert fixed.head.on_cache() == fixed.head and fixed.finetune.on_cache() == fixed.finetune
    # The default written once: the CLI's and the API's model default is the same.
    from transferkit.models.builder import ModelConfig

    assert RecipeConfig().model.backbone == ModelConfig().backbone == "efficientnet_lite0"


@pytest.mark.slow
def test_a_run_without_a_backbone_trains_efficientnet_lite0_on_imagenet_weights_offline(
        image_folder, tmp_path):
    # Other backbones' ImageNet weights are downloads, which fail offline; Lite0's
    # install with the package, so the default run works anywhere.
    from transferkit.app.train import train
    from transferkit.models.backbones import create_backbone
    from transferkit.models.registry import get_spec

    recipe = RecipeConfig.from_keys(data=image_folder, image_size=32, head_epochs=1,
                                    finetune_epochs=0, report=False)
    result = train(recipe, tmp_path / "run", verbose=0)
    assert result.model.name == "efficientnet_lite0"
    shipped = create_backbone(get_spec("efficientnet_lite0"), weights="imagenet",
                              input_shape=(32, 32, 3))
    trained = result.model.get_layer("backbone")
    for a, b in zip(shipped.weights, trained.weights):  # the frozen backbone: as shipped
        np.testing.assert_array_equal(a.numpy(), b.numpy())
