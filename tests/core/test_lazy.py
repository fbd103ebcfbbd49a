"""`import transferkit` is light: the public names load on first use (`core.lazy`), the
built-in tasks and backbones are there at first lookup, and names that left the top level
still resolve, with a DeprecationWarning."""

import json
import os
import subprocess
import sys
import warnings

import pytest

import transferkit as tk

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fresh(code):
    """What `code` prints (JSON) in a fresh interpreter with this checkout first."""
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_transferkit_loads_no_tensorflow_and_no_vendored_schema():
    loaded = _fresh(
        "import sys, json, transferkit, transferkit.training.recipe, transferkit.cli.main\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'keras_tuner') or '_vendor' in m)))")
    assert loaded == []


def test_first_use_loads_the_name_and_the_registries_fill_themselves(tmp_path):
    # A model naming transferkit's own Keras classes (TTA views, a temperature layer,
    # the preprocessing layer), loaded first thing in a fresh process.
    from transferkit.models.builder import build_model
    from transferkit.models.saving import save_model
    from transferkit.models.temperature import with_temperature
    from transferkit.models.tta import with_tta

    path = str(tmp_path / "model.keras")
    model = with_temperature(build_model("tiny_test", 2, weights=None, input_shape=16),
                             1.5, "multiclass")
    save_model(with_tta(model, "flip"), path)
    found = _fresh(
        "import sys, json, transferkit as tk\n"
        f"layers = len(tk.load_model({path!r}).layers)\n"
        "before = 'transferkit.training.orchestrator' in sys.modules\n"
        "fine_tune = tk.fine_tune\n"
        "from transferkit.models.registry import get_spec\n"
        "from transferkit.core.task_registry import get_task\n"
        "print(json.dumps([layers > 1, before, fine_tune.__module__,\n"
        "                  get_spec('tiny_test').name, get_task('binary').name,\n"
        "                  'tiny_test' in tk.list_backbones()]))")
    assert found == [True, False, "transferkit.training.orchestrator", "tiny_test",
                     "binary", True]


def test_every_public_name_resolves_and_dir_lists_it():
    for name in tk.__all__:
        assert getattr(tk, name) is not None, name
    assert set(tk.__all__) <= set(dir(tk))
    from transferkit import data, models, training

    for package in (data, models, training):
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)


def test_an_exported_function_wins_over_its_module_of_the_same_name():
    import transferkit.data.scan as scan_module  # noqa: F401 (binds the submodule)
    from transferkit.data import scan
    from transferkit.data_doctor import doctor

    assert callable(scan) and scan.__name__ == "scan"
    assert callable(doctor) and doctor.__name__ == "doctor"


@pytest.mark.parametrize("name,place", [("Position", "transferkit.training"),
                                        ("ModelParts", "transferkit.models"),
                                        ("InputSpec", "transferkit.core.inputs")])
def test_internals_left_the_top_level_but_still_resolve_with_a_warning(name, place):
    assert name not in tk.__all__
    with pytest.warns(DeprecationWarning, match=place):
        moved = getattr(tk, name)
    module = __import__(place, fromlist=[name])
    assert getattr(module, name) is moved


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        tk.no_such_name  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a public name warns of nothing
        tk.RecipeConfig  # noqa: B018
