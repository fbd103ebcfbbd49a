"""`transferkit add-class` end to end: a trained classifier grows new classes without
retraining its backbone, and says what it refuses."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import KNOWN, SAMPLE, make_image_folder, tiny_recipe
from transferkit.app.add_class import add_classes
from transferkit.app.train import train
from transferkit.cli.main import main
from transferkit.core.errors import ConfigError
from transferkit.data.files import image_dataset, list_images
from transferkit.evaluation.evaluate import load_run
from transferkit.models.parts import resolve
from transferkit.models.tta import unwrap_tta


def test_add_class_grows_the_head_and_records_its_origin(open_world_run, tmp_path):
    out = str(tmp_path / "run5")
    assert main(["add-class", open_world_run["run"], "--data", open_world_run["new"], "--out", out]) == 0
    loaded = load_run(out)
    assert loaded.class_names == KNOWN + ("ring",)
    assert loaded.model.output_shape[-1] == 5 and loaded.novelty is not None
    with open(os.path.join(out, "run.json")) as f:
        origin = json.load(f)["derived_from"]
    assert origin["run"] == os.path.abspath(open_world_run["run"]) and origin["added_classes"] == ["ring"]
    with open(os.path.join(out, "metrics.json")) as f:
        val = json.load(f)["val"]
    assert val["new_classes_recall"] >= 0.8
    # The backbone did not move: same features for the same image.
    old = load_run(open_world_run["run"])
    image = next(iter(image_dataset(list_images(open_world_run["new"])[:2], old.input.size)[0]))[0]
    features = [resolve(unwrap_tta(m.model)).feature_extractor().predict_on_batch(image)
                for m in (loaded, old)]
    np.testing.assert_allclose(*features,
                               atol=1e-5)
    # The novelty score was refitted to five classes: same detector, one class mean per
    # class (those of the stored arrays), threshold at 5% of the new validation images.
    assert loaded.novelty.detector == old.novelty.detector
    if "means" in loaded.novelty.arrays:
        assert len(loaded.novelty.arrays["means"]) == 5
    assert val["class_names"] == list(KNOWN + ("ring",))


def test_add_class_refusals(open_world_run, tmp_path, capsys):
    clash = str(tmp_path / "clash")
    shutil.copytree(os.path.join(SAMPLE, "arrow"), os.path.join(clash, "arrow"))
    assert main(["add-class", open_world_run["run"], "--data", clash, "--out",
                 str(tmp_path / "x")]) == 2
    assert "['arrow'] already exist" in capsys.readouterr().err
    reg = make_image_folder(tmp_path / "reg", per_class=4, size=32)
    csv = tmp_path / "reg.csv"
    csv.write_text("path,label\n" + "".join(f"{os.path.join(reg, 'red', f'{i}.png')},{i}\n"
                                          for i in range(4)))
    regression = str(tmp_path / "regression_run")
    train(tiny_recipe(csv, task="regression", val_split=0.25), regression, verbose=0)
    with pytest.raises(ConfigError, match="multiclass and multilabel.*regression"):
        add_classes(regression, open_world_run["new"], str(tmp_path / "y"))
