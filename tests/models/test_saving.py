"""Saving: atomic writes, metadata inside the .keras file, safe loading."""

import json
import os

import keras
import numpy as np
import pytest

from transferkit.core.errors import TransferkitError, UnsafeModelError
from transferkit.models.heads import HeadConfig
from transferkit.models.builder import build_model
from transferkit.training.optimizers import make_optimizer
from transferkit.core.files import atomic_path, write_json
from transferkit.models.saving import load_model, read_metadata, save_model


def _tiny(classes=2):
    return build_model("tiny_test", classes, weights=None, input_shape=16)


def test_save_model_is_atomic_when_the_save_crashes(tmp_path, monkeypatch):
    path = str(tmp_path / "model.keras")
    save_model(_tiny(2), path, {"version": 1})
    before = open(path, "rb").read()

    other = _tiny(3)

    def crash(tmp, *args, **kwargs):  # half a file written, then the process "dies"
        with open(tmp, "wb") as f:
            f.write(b"PK\x03\x04 torn")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(other, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        save_model(other, path, {"version": 2})
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.keras"]  # no temp file left behind
    assert read_metadata(path) == {"version": 1}
    assert load_model(path).output_shape == (None, 2)


def test_metadata_round_trips_and_keras_ignores_it(tmp_path):
    model = _tiny(3)
    metadata = {"class_names": ["red", "green", "blue"], "task": "multiclass",
                "backbone": "tiny_test", "image_size": [16, 16]}
    path = save_model(model, str(tmp_path / "m.keras"), metadata)
    assert read_metadata(path) == metadata
    loaded = load_model(path)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    assert loaded.name == "tiny_test"  # the spec is found again from the name
    plain = save_model(model, str(tmp_path / "plain.keras"))
    assert read_metadata(plain) == {}


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(TransferkitError, match=r"\.keras files.*m\.h5"):
        save_model(_tiny(), str(tmp_path / "m.h5"))
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(TransferkitError, match="missing.keras"):
        load_model(missing)
    not_zip = tmp_path / "fake.keras"
    not_zip.write_text("hello")
    with pytest.raises(TransferkitError, match="fake.keras"):
        read_metadata(str(not_zip))


def test_lambda_layer_is_refused_unless_trusted(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = save_model(model, str(tmp_path / "lambda.keras"))
    with pytest.raises(UnsafeModelError) as info:
        load_model(path)
    assert "lambda.keras" in str(info.value) and "safe_mode=False" in str(info.value)
    loaded = load_model(path, safe_mode=False)
    np.testing.assert_allclose(loaded.predict(np.ones((1, 4)), verbose=0), [[2.0] * 4])


def test_discriminative_optimizer_survives_a_save(tmp_path):
    model = build_model("tiny_test", 2, weights=None, input_shape=16,
                        head=HeadConfig(dropout=0.0))
    model.compile(optimizer=make_optimizer("adam", 1e-3, backbone_multiplier=0.1),
                  loss="categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    model.fit(images, np.eye(2)[[0, 1, 0, 1]], epochs=1, verbose=0)
    path = save_model(model, str(tmp_path / "d.keras"))
    loaded = load_model(path)  # safe mode: the optimizer class is registered
    assert type(loaded.optimizer).__name__ == "DiscriminativeAdam"
    assert loaded.optimizer.backbone_multiplier == 0.1
    assert int(loaded.optimizer.iterations) == 1  # its state came along too


def test_atomic_path_and_write_json(tmp_path):
    target = tmp_path / "sub" / "w.weights.h5"
    model = _tiny()
    with atomic_path(target) as tmp:
        assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(target.parent)
        model.save_weights(tmp)  # Keras insists on the suffix
    assert os.listdir(target.parent) == ["w.weights.h5"]

    path = tmp_path / "data.json"
    write_json(path, {"a": [1, 2]})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("{torn")
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["data.json", "sub"]
