"""Backbone keyword arguments: unknown ones are refused up front, naming them and the
accepted ones, for every registered backbone and every way of passing them."""

import dataclasses
import os

import keras
import pytest

from conftest import tiny_recipe
from transferkit import cli
from transferkit.core.errors import ConfigError
from transferkit.models import hub
from transferkit.models.backbones import create_backbone
from transferkit.models.builder import build_model
from transferkit.models.registry import (OWN_ARGUMENTS, BackboneSpec, get_spec,
                                         list_backbones, spec_from_model)
from transferkit.models.segmentation import build_segmenter
from transferkit.app.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def nothing_built(monkeypatch):
    # Every backbone starts from an input layer: creating one means building began.
    def refuse(self, *args, **kwargs):
        raise AssertionError("a backbone was built before its arguments were checked")

    monkeypatch.setattr(keras.layers.InputLayer, "__init__", refuse)


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_refuses_an_unknown_argument(name, nothing_built):
    spec = get_spec(name)
    with pytest.raises(ConfigError) as info:
        create_backbone(name, weights=None, input_shape=(spec.default_size,) * 2 + (3,),
                        foo=1)
    message = str(info.value)
    assert "['foo']" in message and f"backbone {name!r}" in message
    assert f"Accepted: {', '.join(spec.accepted_kwargs()) or 'none'}." in message
    assert "Received: backbone_kwargs={'foo': 1}" in message
    # What transferkit sets itself is never offered to the caller.
    assert not set(spec.accepted_kwargs()) & set(OWN_ARGUMENTS)


def test_accepted_arguments_are_the_constructors_own():
    accepted = {name: get_spec(name).accepted_kwargs() for name in (
        "mobilenet", "mobilenet_v2", "mobilenet_v3_small", "resnet50", "convnext_tiny",
        "efficientnet_lite0", "tiny_test", "compact_cnn")}
    assert accepted == {
        "mobilenet": ("alpha", "depth_multiplier", "dropout"),
        "mobilenet_v2": ("alpha",),
        "mobilenet_v3_small": ("alpha", "dropout_rate", "minimalistic"),
        "resnet50": (), "convnext_tiny": (), "efficientnet_lite0": (),
        "tiny_test": ("width",), "compact_cnn": ("bn_momentum", "width")}


def test_known_arguments_still_reach_the_constructor():
    slim = build_model("mobilenet_v2", 3, weights=None, input_shape=32,
                       backbone_kwargs={"alpha": 0.35})
    full = build_model("mobilenet_v2", 3, weights=None, input_shape=32)
    assert slim.get_layer("backbone").count_params() < full.get_layer("backbone").count_params()
    cnn = create_backbone("compact_cnn", input_shape=(32, 32, 3), bn_momentum=0.9, width=4)
    assert cnn.get_layer("block1_bn1").momentum == 0.9
    assert cnn.output_shape[-1] == 32


def test_message_suggests_close_matches_and_names_what_transferkit_sets(nothing_built):
    with pytest.raises(ConfigError, match=r"\['alhpa'\].*Did you mean 'alpha'\?"):
        create_backbone("mobilenet_v2", input_shape=(32, 32, 3), alhpa=0.35)
    with pytest.raises(ConfigError) as info:
        create_backbone("resnet50", input_shape=(32, 32, 3), pooling="avg", zoom=2)
    message = str(info.value)
    assert "['pooling', 'zoom']" in message and "transferkit sets ['pooling']" in message
    assert "Accepted: none." in message


def test_every_builder_refuses():
    for build in (build_model, build_segmenter):
        with pytest.raises(ConfigError, match=r"\['foo'\].*'tiny_test'"):
            build("tiny_test", 3, weights=None, image_size=32, backbone_kwargs={"foo": 1})


def test_a_backbone_made_from_your_model_takes_no_arguments():
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    spec = spec_from_model(keras.Model(inputs, outputs, name="mine"))
    assert spec.accepted_kwargs() == ()
    with pytest.raises(ConfigError, match=r"\['width'\] for backbone 'mine'.*Accepted: none"):
        create_backbone(spec, input_shape=(32, 32, 3), width=8)
    # A KerasHub preset is built as saved: the same contract, checked without KerasHub.
    hub_like = dataclasses.replace(spec, name="hub_like", constructor=hub._constructor(
        "some/preset", False))
    with pytest.raises(ConfigError, match="Accepted: none"):
        hub_like.check_kwargs({"width": 8})


def test_spec_kwargs_are_checked_at_registration_and_var_kwargs_accept_any():
    spec = get_spec("tiny_test")
    with pytest.raises(ConfigError, match=r"\['depth'\].*Received: kwargs=\{'depth': 2\}"):
        dataclasses.replace(spec, name="tiny_bad", kwargs=(("depth", 2),))
    assert dataclasses.replace(spec, name="tiny_narrow", kwargs=(("width", 4),)).kwargs

    def anything(include_top=False, weights=None, input_shape=None, **kwargs):
        return spec.constructor(include_top, weights, input_shape)

    open_spec = BackboneSpec(name="open", constructor=anything, default_size=32,
                             min_size=8, preprocessing="tf", feature_size=16,
                             block_pattern=r"^(block\d+)_", family="test")
    assert open_spec.accepted_kwargs() is None  # the constructor says it takes any
    open_spec.check_kwargs({"foo": 1})


def test_train_refuses_before_touching_the_run_folder(tmp_path, nothing_built):
    recipe = tiny_recipe(os.path.join(ROOT, "data", "sample"), backbone_kwargs={"foo": 1})
    with pytest.raises(ConfigError, match=r"\['foo'\]"):
        train(recipe, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_cli_exits_2_naming_the_unknown_argument(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--data", os.path.join(ROOT, "data", "sample"),
                     "--backbone", "tiny_test", "--weights", "none", "--image-size", "32",
                     "--head-epochs", "1", "--finetune-epochs", "0",
                     "--backbone-kwargs", "foo=1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Unknown backbone argument(s) ['foo'] for backbone 'tiny_test'" in err
    assert "Accepted: width." in err and not out.exists()


def test_tune_refuses_before_writing_its_search(tmp_path, capsys):
    out = tmp_path / "search"
    code = cli.main(["tune", "--data", os.path.join(ROOT, "data", "sample"),
                     "--backbone", "tiny_test", "--weights", "none", "--image-size", "32",
                     "--backbone-kwargs", "foo=1", "--max-trials", "1", "--in-process",
                     "--out", str(out)])
    assert code == 2 and "['foo']" in capsys.readouterr().err
    assert not out.exists() or not os.listdir(out)
