"""Keras's argument names (`input_shape`, `safe_mode`, `format`): the old names still
work, with a DeprecationWarning, and mean the same thing."""

import pytest

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import UnsafeModelError


@renamed(size="input_shape", **TRUSTED)
def _build(name, *, input_shape=None, safe_mode=True):
    return name, input_shape, safe_mode


def test_old_names_map_to_the_new_ones_with_a_warning():
    with pytest.warns(DeprecationWarning, match="`size`.*`input_shape`"):
        assert _build("x", size=32) == ("x", 32, True)
    with pytest.warns(DeprecationWarning, match="safe_mode=False"):
        assert _build("x", trusted=True) == ("x", None, False)
    with pytest.warns(DeprecationWarning, match="safe_mode=True"):
        assert _build("x", trusted=False) == ("x", None, True)
    with pytest.raises(TypeError, match="both `size` and `input_shape`"):
        _build("x", size=32, input_shape=32)


def test_build_model_takes_keras_names_and_the_old_ones(tmp_path):
    import keras

    from transferkit.models.builder import build_model
    from transferkit.models.saving import load_model, save_model

    model = build_model("tiny_test", 3, weights=None, input_shape=(24, 28, 3), pooling="max")
    assert model.input_shape == (None, 24, 28, 3)
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    with pytest.warns(DeprecationWarning, match="input_shape"):
        old = build_model("tiny_test", 3, weights=None, image_size=24)
    assert old.input_shape == (None, 24, 24, 3)
    with pytest.raises(Exception, match="3 channels"):
        build_model("tiny_test", 3, weights=None, input_shape=(24, 24, 1))

    # A Lambda layer runs code when loaded: refused in safe mode, loaded with
    # safe_mode=False, and with the old trusted=True.
    inputs = keras.Input((4,))
    path = str(tmp_path / "lambda.keras")
    save_model(keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)), path)
    with pytest.raises(UnsafeModelError):
        load_model(path)
    assert load_model(path, safe_mode=False) is not None
    with pytest.warns(DeprecationWarning, match="safe_mode=False"):
        assert load_model(path, trusted=True) is not None


def test_export_takes_format_and_the_old_fmt():
    from transferkit.deploy.export import artifact_name, export_plan

    assert artifact_name(format="keras") == "model.keras"
    with pytest.warns(DeprecationWarning, match="`format`"):
        assert export_plan(fmt="tflite", quantize="fp16") == [("tflite", "fp16")]
