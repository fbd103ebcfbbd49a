"""Freezing policies set exactly the expected layers, idempotently, with BN kept frozen."""

import math

import keras
import pytest

from transferkit.core.errors import ConfigError
from transferkit.training.freezing import (KINDS, FreezePolicy, freeze, layer_depths,
                                          trainable_signature)
from transferkit.models import ModelParts, build_model

# tiny_test backbone layers, in order (index: name):
# 0 image | 1 block1_conv 2 block1_bn 3 block1_relu | 4 block2_conv 5 block2_bn
# 6 block2_relu | 7 block3_conv 8 block3_bn 9 block3_relu
ALL = ["image", "block1_conv", "block1_bn", "block1_relu", "block2_conv", "block2_bn",
       "block2_relu", "block3_conv", "block3_bn", "block3_relu"]
EXPECTED = {  # policy -> trainable backbone layers (BN excluded by default)
    FreezePolicy("all"): [],
    FreezePolicy("none"): [n for n in ALL if not n.endswith("_bn")],
    FreezePolicy("top_layers", 3): ["block3_conv", "block3_relu"],
    FreezePolicy("from_layer", "block2_conv"): ["block2_conv", "block2_relu",
                                                "block3_conv", "block3_relu"],
    FreezePolicy("last_blocks", 1): ["block3_conv", "block3_relu"],
    FreezePolicy("last_blocks", 2): ["block2_conv", "block2_relu", "block3_conv",
                                     "block3_relu"],
    FreezePolicy("fraction", 0.5): ["block2_relu", "block3_conv", "block3_relu"],
    FreezePolicy("regex", r"_conv$"): ["block1_conv", "block2_conv", "block3_conv"],
}


@pytest.fixture
def model():
    return build_model("tiny_test", 3, weights=None, input_shape=16,
                       head=_head(units=(4,), batch_norm=True))


def _head(**kwargs):
    from transferkit.models.heads import HeadConfig
    return HeadConfig(**kwargs)


def _trainable_layers(model):
    return [l.name for l in model.get_layer("backbone").layers if l.trainable]


def _count(weights):
    return sum(math.prod(w.shape) for w in weights)


def test_every_policy_kind_is_covered():
    assert {p.kind for p in EXPECTED} == set(KINDS)


@pytest.mark.parametrize("policy", list(EXPECTED), ids=str)
def test_policy_sets_the_expected_layers_idempotently(model, policy):
    assert [l.name for l in model.get_layer("backbone").layers] == ALL
    freeze(model, policy)
    assert _trainable_layers(model) == EXPECTED[policy]
    backbone = model.get_layer("backbone")
    trainable_vars = {w.path for w in backbone.trainable_weights}
    expected_vars = {w.path for n in EXPECTED[policy] for w in backbone.get_layer(n).weights}
    assert trainable_vars == expected_vars
    # the head always trains (its BN included: it learns from the target data)
    assert all(l.trainable for l in model.get_layer("head").layers)
    assert len(model.get_layer("head").trainable_weights) == 6

    once = trainable_signature(model)
    freeze(model, policy)
    assert trainable_signature(model) == once
    for other in EXPECTED:  # any history of policies, then this one: same flags
        freeze(model, other)
        freeze(model, policy)
        assert trainable_signature(model) == once, f"{other} then {policy}"


def test_batchnorm_stays_frozen_unless_asked(model):
    bns = ["block1_bn", "block2_bn", "block3_bn"]
    for policy in EXPECTED:
        freeze(model, policy)
        assert not set(bns) & set(_trainable_layers(model))
    freeze(model, FreezePolicy("none", train_batchnorm=True))
    assert set(bns) <= set(_trainable_layers(model))
    freeze(model, FreezePolicy("last_blocks", 1, train_batchnorm=True))
    assert _trainable_layers(model) == ["block3_conv", "block3_bn", "block3_relu"]
    freeze(model, "none")  # train_batchnorm is per policy, not sticky
    assert not set(bns) & set(_trainable_layers(model))


def test_audit_counts_add_up(model, capsys):
    for policy in EXPECTED:
        _check_audit(model, policy, capsys)


def _check_audit(model, policy, capsys):
    audit = freeze(model, policy, verbose=True)
    backbone, head = model.get_layer("backbone"), model.get_layer("head")
    assert audit.trainable_params == _count(model.trainable_weights)
    assert audit.total_params == _count(model.weights)
    assert sum(b.trainable_params for b in audit.blocks) == _count(backbone.trainable_weights)
    assert (sum(b.trainable_params for b in audit.blocks) + _count(head.trainable_weights)
            == audit.trainable_params)
    assert sum(b.total_params for b in audit.blocks) == _count(backbone.weights)
    assert sum(b.layers for b in audit.blocks) == len(ALL)
    assert [b.block for b in audit.blocks] == ["stem", "block1", "block2", "block3"]
    printed = capsys.readouterr().out
    assert f"freeze policy: {policy}" in printed and "block3" in printed
    assert printed.strip() == str(audit)


def test_unknown_from_layer_suggests_close_matches(model):
    with pytest.raises(ConfigError) as info:
        freeze(model, FreezePolicy("from_layer", "block3_cnv"))
    assert "'block3_cnv'" in str(info.value) and "'block3_conv'" in str(info.value)


def test_policy_parse_and_validation():
    assert FreezePolicy.parse("last_blocks:2") == FreezePolicy("last_blocks", 2)
    assert FreezePolicy.parse("fraction:0.25") == FreezePolicy("fraction", 0.25)
    assert FreezePolicy.parse("regex:^block5") == FreezePolicy("regex", "^block5")
    assert FreezePolicy.parse("all") == FreezePolicy()
    assert str(FreezePolicy("top_layers", 20)) == "top_layers:20"
    with pytest.raises(ConfigError, match="last_blocks:two"):
        FreezePolicy.parse("last_blocks:two")
    with pytest.raises(ConfigError, match=r"`kind`.*'last_block'.*'last_blocks'"):
        FreezePolicy("last_block", 2)
    # a misspelled kind on the command line gets the suggestion, not a type complaint
    with pytest.raises(ConfigError, match=r"Received: kind='last_blok'.*'last_blocks'"):
        FreezePolicy.parse("last_blok:2")
    with pytest.raises(ConfigError, match="needs a value of type int"):
        FreezePolicy("top_layers")
    with pytest.raises(ConfigError, match="fraction"):
        FreezePolicy("fraction", 1.5)


def test_last_blocks_needs_a_spec_when_the_model_is_not_named_after_one():
    inputs = keras.Input((8, 8, 3))
    bare = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="block1_conv")(inputs),
                       name="custom")
    with pytest.raises(ConfigError, match="no layer named 'backbone'.*ModelParts"):
        freeze(bare, FreezePolicy("all"))  # parts are named, never guessed
    whole = ModelParts(backbone=None)  # the model is a backbone itself
    with pytest.raises(ConfigError, match="spec="):
        freeze(bare, FreezePolicy("last_blocks", 1), parts=whole)
    audit = freeze(bare, FreezePolicy("last_blocks", 1), spec="tiny_test", parts=whole)
    assert audit.trainable_params == 2 * 27 + 2


def test_last_blocks_on_a_keras_backbone():
    model = build_model("mobilenet_v2", 2, weights=None, input_shape=32,
                        backbone_kwargs={"alpha": 0.35})
    freeze(model, FreezePolicy("last_blocks", 2))
    layers = [l.name for l in model.get_layer("backbone").layers]
    trainable = _trainable_layers(model)
    assert trainable[0] == "block_15_expand"  # blocks 15 and 16, with the top layers
    assert "Conv_1" in trainable and "Conv_1_bn" not in trainable
    first = layers.index("block_15_expand")
    assert all(not l.startswith("block_15") for l in layers[:first])


def test_layer_depths_count_blocks_from_the_top(model):
    # The depths layer-wise LR decay uses: any backbone with a block layout, CNNs too.
    depths = layer_depths(model)
    assert {path.split("/")[0]: d for path, d in depths.items()} == {
        "block1_conv": 2, "block1_bn": 2, "block2_conv": 1, "block2_bn": 1,
        "block3_conv": 0, "block3_bn": 0}
    assert not any(path.startswith("head") for path in depths)
    bare = keras.Model(model.inputs, model.outputs)
    with pytest.raises(ConfigError, match="layer_lr_decay"):
        layer_depths(bare, parts=ModelParts(backbone="backbone", features=None))
