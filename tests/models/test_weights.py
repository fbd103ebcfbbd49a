"""Weights: local files, Keras's own ImageNet cache (offline), and saved .keras models.

ImageNet cannot be downloaded here, so the test pre-fills a temporary Keras cache with a
file in Keras's legacy h5 weights format (the format of Keras's own ImageNet files),
under the exact name `keras.applications.MobileNetV2` asks `get_file` for. Keras reads
KERAS_HOME once, at import, hence the subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from transferkit.models.backbones import create_backbone
from transferkit.core.errors import WeightsError
from transferkit.models.builder import build_model
from transferkit.models.saving import save_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _assert_same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb) > 0
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


def test_local_weights_file_loads_equal_weights(tmp_path):
    source = create_backbone("tiny_test", input_shape=(16, 16, 3))
    for w in source.weights:  # make every value distinct from a fresh init
        w.assign(np.random.default_rng(1).normal(size=w.shape).astype("float32"))
    path = tmp_path / "tiny.weights.h5"
    source.save_weights(path)
    loaded = create_backbone("tiny_test", weights=str(path), input_shape=(16, 16, 3))
    _assert_same_weights(source, loaded)
    fresh = create_backbone("tiny_test", input_shape=(16, 16, 3))
    assert not np.array_equal(fresh.get_weights()[0], loaded.get_weights()[0])


def test_missing_local_weights_file_echoes_the_value(tmp_path):
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(WeightsError) as info:
        create_backbone("tiny_test", weights=missing, input_shape=(16, 16, 3))
    assert repr(missing) in str(info.value) and "imagenet" in str(info.value)


def test_a_damaged_weights_file_is_named_before_any_model_is_built(tmp_path):
    import zipfile

    from transferkit.models.backbones import check_weights_path

    source = tmp_path / "good.keras"
    save_model(build_model("tiny_test", 2, weights=None, input_shape=(16, 16, 3)), source)
    check_weights_path(str(source))  # a real one passes
    create_backbone("tiny_test", input_shape=(16, 16, 3)).save_weights(
        tmp_path / "good.weights.h5")
    check_weights_path(str(tmp_path / "good.weights.h5"))
    npz = tmp_path / "npz.keras"  # Keras's loader also takes npz weights
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.npz", b"")
    check_weights_path(str(npz))
    cut = tmp_path / "cut.keras"
    cut.write_bytes(source.read_bytes()[:200])  # a download that stopped early
    hollow = tmp_path / "hollow.keras"
    with zipfile.ZipFile(hollow, "w") as archive:
        archive.writestr("metadata.json", "{}")
    text = tmp_path / "text.weights.h5"
    text.write_text("not weights")
    for path, says in ((cut, "not a Keras .keras archive"),
                       (hollow, "lacks config.json, model.weights.h5"),
                       (text, "not an HDF5 weights file")):
        with pytest.raises(WeightsError) as info:
            check_weights_path(str(path))
        assert repr(str(path)) in str(info.value) and says in str(info.value), path


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on the mismatch
def test_mismatched_weights_file_names_the_file(tmp_path):
    path = tmp_path / "wide.weights.h5"
    create_backbone("tiny_test", input_shape=(16, 16, 3), width=4).save_weights(path)
    with pytest.raises(WeightsError, match="wide.weights.h5"):
        create_backbone("tiny_test", weights=str(path), input_shape=(16, 16, 3))


def test_scratch_backbone_has_no_imagenet_weights():
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        create_backbone("tiny_test", weights="imagenet", input_shape=(16, 16, 3))


def test_saved_keras_model_backbone_transfers_at_another_size(tmp_path):
    source = build_model("tiny_test", 3, weights=None, input_shape=32)
    for w in source.get_layer("backbone").weights:
        w.assign(np.random.default_rng(2).normal(size=w.shape).astype("float32"))
    path = save_model(source, str(tmp_path / "source.keras"))
    for size in (32, 48):
        target = build_model("tiny_test", 5, weights=path, input_shape=size)
        assert target.input_shape == (None, size, size, 3)
        _assert_same_weights(source.get_layer("backbone"), target.get_layer("backbone"))


def test_saved_keras_model_of_another_backbone_is_refused(tmp_path):
    path = save_model(build_model("lenet", 2, weights=None, input_shape=32),
                      str(tmp_path / "lenet.keras"))
    with pytest.raises(WeightsError, match="lenet.keras"):
        create_backbone("tiny_test", weights=path, input_shape=(32, 32, 3))


# Runs in a fresh interpreter with KERAS_HOME=<tmp>. Downloads are made to fail the way
# they fail offline (URLError), so the test is the same with or without a network, and a
# pre-filled cache that Keras ignored would show up as an error, not a silent download.
_IMAGENET_SCRIPT = textwrap.dedent("""
    import json, os, sys, urllib.error
    import h5py, keras, numpy as np
    import keras.src.utils.file_utils as file_utils
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
    from transferkit.models.backbones import create_backbone, imagenet_cache_dir
    from transferkit.core.errors import WeightsError

    attempts = []
    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("offline (test)")
    file_utils.urlretrieve = offline

    cache = os.path.join(os.environ["KERAS_HOME"], "models")
    os.makedirs(cache, exist_ok=True)
    source = keras.applications.MobileNetV2(include_top=False, weights=None,
                                            input_shape=(96, 96, 3), alpha=0.35)
    for w in source.weights:
        w.assign(np.random.default_rng(3).normal(size=w.shape).astype("float32"))
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    with h5py.File(os.path.join(cache, name), "w") as f:
        save_weights_to_hdf5_group(f, source)
    loaded = create_backbone("mobilenet_v2", weights="imagenet", input_shape=(96, 96, 3),
                             alpha=0.35)
    diff = max(float(np.abs(a - b).max())
               for a, b in zip(source.get_weights(), loaded.get_weights()))
    result = {"diff": diff, "n": len(loaded.get_weights()),
              "attempts_with_cache": list(attempts), "cache_dir": imagenet_cache_dir()}
    try:  # alpha 0.5 at 96 px is not in the cache
        create_backbone("mobilenet_v2", weights="imagenet", input_shape=(96, 96, 3),
                        alpha=0.5)
        result["error"] = None
    except WeightsError as error:
        result["error"] = str(error)
    result["attempts"] = attempts
    result["left_behind"] = sorted(os.listdir(cache))
    print("RESULT " + json.dumps(result))
""")


def test_imagenet_weights_load_offline_from_a_prefilled_keras_cache(tmp_path):
    home = tmp_path / "keras_home"
    env = {**os.environ, "KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _IMAGENET_SCRIPT], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])

    # The pre-filled file was used as is: same weights, no download attempted.
    assert result["n"] > 100 and result["diff"] == 0.0
    assert result["attempts_with_cache"] == []
    assert result["cache_dir"] == str(home / "models")

    # The missing file: one (failed) download attempt, then the documented error.
    missing = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96_no_top.h5"
    assert len(result["attempts"]) == 1 and result["attempts"][0].endswith(missing)
    error = result["error"]
    assert error is not None, "a missing ImageNet file should raise WeightsError"
    assert f"file: {missing}" in error
    assert os.path.join(str(home), "models", missing) in error  # where Keras looks
    assert "weights='/path/to/weights.h5'" in error and "KERAS_HOME" in error
    assert result["left_behind"] == [
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"]
