"""RecipeConfig: frozen, validated, and strict about the keys of a recipe file."""

import dataclasses
import json

import pytest

from transferkit.core.errors import ConfigError
from transferkit.training.freezing import FreezePolicy
from transferkit.training.recipe import FIELDS, RecipeConfig, load_recipe, recipe_from_dict


def test_unknown_keys_list_valid_keys_and_suggest_a_close_match():
    with pytest.raises(ConfigError) as info:
        recipe_from_dict({"head_epoch": 3, "batch_size": 8})
    message = str(info.value)
    assert "'head_epoch'" in message and "Did you mean 'head_epochs'" in message
    assert "Valid keys:" in message
    assert all(field in message for field in FIELDS)
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
    assert recipe.head_lr == 1.0 and isinstance(recipe.head_lr, float)
    assert recipe.head_units == (64, 32)
    assert recipe.backbone_kwargs == (("alpha", 0.35),)
    assert recipe.scan is False
    hash(recipe)  # tuples all the way down: the config stays hashable


def test_config_is_frozen_and_replace_revalidates():
    recipe = RecipeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.head_epochs = 1
    changed = dataclasses.replace(recipe, head_epochs=1, backbone="resnet50")
    assert (changed.head_epochs, changed.backbone) == (1, "resnet50")
    assert recipe.head_epochs == RecipeConfig().head_epochs  # the original is untouched
    with pytest.raises(ConfigError, match="dropout"):
        dataclasses.replace(recipe, dropout=1.5)
    with pytest.raises(ConfigError, match="pooling"):
        dataclasses.replace(recipe, pooling="mean")
    with pytest.raises(ConfigError, match="last_blocks:x"):
        dataclasses.replace(recipe, unfreeze="last_blocks:x")


def test_recipe_builds_head_and_schedule_configs():
    recipe = recipe_from_dict({"task": "binary", "head_units": [8], "head_epochs": 2,
                               "finetune_lr": 2e-5, "unfreeze": "regex:^block5",
                               "train_batchnorm": True, "backbone_lr_multiplier": 0.1,
                               "early_stopping_patience": 0, "warmup_epochs": 1,
                               "layer_lr_decay": 0.75})
    head = recipe.head_config()
    assert (head.task, head.units) == ("binary", (8,))
    schedule = recipe.schedule_config()
    assert schedule.head.epochs == 2 and schedule.head.freeze == FreezePolicy("all")
    assert schedule.finetune.learning_rate == 2e-5
    assert schedule.finetune.freeze == FreezePolicy("regex", "^block5", train_batchnorm=True)
    assert schedule.finetune.backbone_lr_multiplier == 0.1
    assert schedule.finetune.early_stopping_patience is None  # 0 turns it off
    assert schedule.finetune.warmup_epochs == 1
    assert schedule.finetune.layer_lr_decay == 0.75 and schedule.head.layer_lr_decay == 1.0
    # config.json is `to_dict`: a resumed run reads the decay back.
    assert recipe_from_dict(recipe.to_dict()).layer_lr_decay == 0.75


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5])
def test_layer_lr_decay_outside_0_1_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=rf"`layer_lr_decay`.*\(0, 1\].*"
                                          rf"layer_lr_decay={value}"):
        recipe_from_dict({"layer_lr_decay": value})


def test_load_recipe_from_json(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"backbone": "tiny_test", "image_size": 32}))
    recipe = load_recipe(str(path))
    assert (recipe.backbone, recipe.image_size) == ("tiny_test", 32)
    base = RecipeConfig(batch_size=4)
    assert load_recipe(str(path), base=base).batch_size == 4
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
