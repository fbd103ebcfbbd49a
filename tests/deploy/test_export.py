"""Export to .keras, SavedModel and TFLite keeps the predictions and the class names."""

import json
import os

import numpy as np
import pytest

from conftest import make_image_folder
from transferkit import deploy as ex
from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.core.task_registry import get_task
from transferkit.evaluation.evaluate import eval_data, load_run
from transferkit.models.builder import build_model
from transferkit.models.saving import read_metadata, save_model


@pytest.fixture
def tiny_run(tmp_path):
    model = build_model("tiny_test", 2, weights=None, input_shape=32)
    path = save_model(model, str(tmp_path / "model.keras"),
                      metadata={"class_names": ["blue", "red"], "image_size": 32})
    folder = make_image_folder(tmp_path / "images", per_class=5, size=32)
    return load_run(path), folder


def test_every_format_predicts_like_the_keras_model(tiny_run, tmp_path):
    loaded, folder = tiny_run
    out = str(tmp_path / "out")
    paths = {"keras": ex.export_model(loaded, "keras", out),
             "savedmodel": ex.export_model(loaded, "savedmodel", out),
             "tflite": ex.export_model(loaded, "tflite", out),
             "fp16": ex.export_model(loaded, "tflite", out, quantize="fp16"),
             "int8": ex.export_model(loaded, "tflite", out, quantize="int8",
                                     representative=ex.representative_images(loaded, folder))}
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    reference = loaded.model.predict(x, verbose=0)
    tolerance = {"keras": 1e-6, "savedmodel": 1e-5, "tflite": 1e-5, "fp16": 1e-2,
                 "int8": 5e-2}
    for name, path in paths.items():
        got = ex.load_predictor(path)(x)
        np.testing.assert_allclose(got, reference, atol=tolerance[name], err_msg=name)
    # Class names travel with every artifact.
    assert open(os.path.join(out, "labels.txt")).read() == "blue\nred\n"
    for path in paths.values():
        assert json.load(open(path + ".json"))["class_names"] == ["blue", "red"]
    assert read_metadata(paths["keras"])["class_names"] == ["blue", "red"]
    assert os.path.exists(os.path.join(paths["savedmodel"], "assets", "labels.txt"))
    rows = ex.check_parity(loaded, [paths["savedmodel"], paths["tflite"]],
                           eval_data(loaded, folder, split="val"))
    assert [r["ok"] for r in rows] == [True, True, True]
    assert rows[2]["max_abs_diff"] < 1e-4 and rows[2]["agreement"] == 1.0
    assert "saved_model" in ex.format_parity(rows, 0.01, loaded.task)


def test_parity_failure_names_the_artifact():
    rows = [{"artifact": "source", "accuracy": 0.9, "agreement": 1.0, "ok": True},
            {"artifact": "model_int8.tflite", "accuracy": 0.7, "agreement": 0.8,
             "ok": False}]
    with pytest.raises(TransferkitError,
                       match="model_int8.tflite accuracy 0.7000, agreement 0.800"):
        ex.raise_on_mismatch(rows, 0.01, get_task("multiclass"))


def test_quantize_arguments_are_checked(tiny_run, tmp_path):
    loaded, _ = tiny_run
    with pytest.raises(ConfigError, match="tflite only"):
        ex.export_model(loaded, "keras", str(tmp_path), quantize="fp16")
    with pytest.raises(ConfigError, match="--data"):
        ex.export_model(loaded, "tflite", str(tmp_path), quantize="int8")
    with pytest.raises(ConfigError, match="Did you mean 'tflite'"):
        ex.export_model(loaded, "tflit", str(tmp_path))


def test_a_tta_model_exports_to_tflite(tiny_run, tmp_path):
    import dataclasses

    from transferkit.models.tta import with_tta

    loaded, _ = tiny_run
    loaded = dataclasses.replace(loaded, model=with_tta(loaded.model, "ten_crop"))
    path = ex.export_model(loaded, "tflite", str(tmp_path / "out"), metadata={"tta": "ten_crop"})
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(ex.load_predictor(path)(x), loaded.model.predict(x, verbose=0),
                               atol=1e-5)
    assert json.load(open(path + ".json"))["tta"] == "ten_crop"
