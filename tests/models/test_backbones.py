"""The backbone registry: every spec builds, at its minimum size, with its feature size.

The build test is parametrized over `list_backbones()` itself, so a backbone is tested
the day it is registered. Heavy ones, by their declared build cost, are marked slow
(`conftest.backbone_params`); each family's lightest stays in the default run.
"""

import dataclasses

import pytest

from transferkit.models.registry import BackboneSpec, block_starts, get_spec, list_backbones, register_backbone
from transferkit.models.backbones import create_backbone
from transferkit.core.errors import ConfigError

from conftest import backbone_params

# One build at the minimum size each: up to 200 operations (BackboneSpec.operations)
# in the default run, plus the lightest of each family; the rest with `-m slow`.
BUILD_BUDGET = 200


def _params():
    return backbone_params(list_backbones(), BUILD_BUDGET, one_per_family=True)


@pytest.mark.parametrize("name", _params())
def test_backbone_builds_at_min_size_with_spec_feature_size_and_blocks(name):
    spec = get_spec(name)
    size = spec.min_size
    model = create_backbone(name, weights=None, input_shape=(size, size, 3))
    assert model.name == "backbone"
    assert model.output_shape[-1] == spec.feature_size
    assert len(model.operations) == spec.operations  # the declared build cost
    # block_pattern sanity: more than one block, starting at the stem, in order.
    names = [layer.name for layer in model.layers]
    starts = block_starts(names, spec)
    assert len(starts) > 1, f"{name}: block_pattern {spec.block_pattern!r} found no blocks"
    assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < len(names)


def test_every_family_runs_in_ci():
    # Every built-in backbone declares its build cost, so none is heavy by omission.
    assert [n for n in list_backbones() if get_spec(n).operations <= 0] == []
    in_ci = [p for p in _params() if isinstance(p, str)]
    assert {get_spec(n).family for n in in_ci} == {get_spec(n).family
                                                   for n in list_backbones()}


def test_registry_covers_every_keras_family():
    families = {get_spec(n).family for n in list_backbones(tag="keras")}
    assert families == {
        "vgg", "resnet", "resnet_v2", "inception", "inception_resnet", "xception",
        "mobilenet", "mobilenet_v2", "mobilenet_v3", "densenet", "nasnet", "efficientnet",
        "efficientnet_v2", "convnext"}
    assert len(list_backbones("efficientnet_b*")) == 8
    assert [get_spec(f"efficientnet_b{i}").default_size for i in range(8)] == [
        224, 240, 260, 300, 380, 456, 528, 600]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ConfigError) as info:
        get_spec("mobilenetv2x")
    message = str(info.value)
    assert "'mobilenetv2x'" in message and "'mobilenet_v2'" in message
    with pytest.raises(ConfigError, match="resnet50"):
        create_backbone("resnet5O", weights=None)


def test_list_backbones_wildcards_and_tags():
    assert list_backbones("convnext_*") == [
        "convnext_base", "convnext_large", "convnext_small", "convnext_tiny",
        "convnext_xlarge"]
    assert list_backbones("resnet*_v2") == ["resnet101_v2", "resnet152_v2", "resnet50_v2"]
    assert list_backbones("vgg1?") == ["vgg16", "vgg19"]
    assert list_backbones("no_such_*") == []
    assert {"lenet", "alexnet"} <= set(list_backbones(tag="scratch"))
    assert "tiny_test" not in list_backbones(tag="scratch")
    assert list_backbones() == sorted(list_backbones())
    assert {"tiny_test", "mobilenet_v2", "efficientnet_v2_l"} <= set(list_backbones())


def test_lookup_ignores_case_and_underscores():
    for alias in ("MobileNetV2", "mobilenet_v2", "mobilenetv2", "MOBILENET-V2"):
        assert get_spec(alias).name == "mobilenet_v2", alias
    assert get_spec("EfficientNetV2B0").name == "efficientnet_v2_b0"


def test_duplicate_registration_raises():
    spec = get_spec("tiny_test")
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone(spec)
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone(dataclasses.replace(spec, name="Tiny_Test"))


def test_spec_rejects_unknown_preprocessing():
    spec = get_spec("tiny_test")
    with pytest.raises(ConfigError, match="preprocessing"):
        dataclasses.replace(spec, name="tiny_test_bad", preprocessing="imagenet")
    assert isinstance(spec, BackboneSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.min_size = 1


def test_input_smaller_than_min_size_is_refused():
    with pytest.raises(ConfigError) as info:
        create_backbone("inception_v3", weights=None, input_shape=(74, 80, 3))
    message = str(info.value)
    assert "75x75" in message and "(74, 80, 3)" in message
    with pytest.raises(ConfigError, match="8x8"):
        create_backbone("tiny_test", weights=None, input_shape=(7, 7, 3))


def test_scratch_baselines_build_like_keras_backbones():
    lenet = create_backbone("lenet", weights=None, input_shape=(32, 32, 3))
    assert [l.name for l in lenet.layers if "conv" in l.name or "fc" in l.name] == [
        "block1_conv", "block2_conv", "block3_fc120", "block4_fc84"]
    assert lenet.get_layer("block1_conv").kernel_size == (5, 5)
    tiny = create_backbone("tiny_test", weights=None, input_shape=(16, 16, 3), width=4)
    assert tiny.output_shape == (None, 4, 4, 8)
