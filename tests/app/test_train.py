"""`train`'s end of run: what it reads back from the caches instead of new backbone
passes, and the stage timings it records, prints and reports."""

import json

import numpy as np
import pytest

from transferkit.app import train as train_module
from transferkit.app.train import train
from transferkit.core.rundir import RunDir
from transferkit.evaluation import evaluate
from transferkit.evaluation.evaluate import flip_decision, load_run
from transferkit.models.tta import unwrap_tta
from transferkit.training.recipe import load_run_data, recipe_from_dict

STAGES = ("scan", "build", "extraction", "phase 1", "phase 2", "tta", "novelty", "save",
          "report")


@pytest.fixture
def recipe(image_folder):
    # Defaults but what a tiny offline run needs: both caches, the flip decision, the
    # novelty score and the report all run.
    return recipe_from_dict(dict(data=image_folder, backbone="tiny_test", weights="none",
                                 image_size=32, batch_size=8, val_split=0.5,
                                 head_epochs=3, finetune_epochs=2))


@pytest.mark.filterwarnings("ignore:weights=none")
def test_the_end_of_a_run_reads_val_and_its_mirror_from_the_caches(recipe, tmp_path,
                                                                    monkeypatch):
    passes = []
    real = evaluate.predict_outputs
    monkeypatch.setattr(train_module, "predict_outputs",
                        lambda *a, **k: passes.append(a) or real(*a, **k))
    monkeypatch.setattr(evaluate, "predict_outputs",
                        lambda *a, **k: passes.append(a) or real(*a, **k))
    result = train(recipe, tmp_path / "run", verbose=0)
    assert passes == []  # neither val nor its mirror went through the backbone again
    # What the end of the run computed above the cached activations is what the saved
    # model computes on the images (float16 activations: close, not bit-equal).
    loaded = load_run(str(tmp_path / "run"))
    data = load_run_data(recipe, verbose=False)
    plain = unwrap_tta(loaded.model)
    again = flip_decision(plain, data.val, loaded.task, data.class_names)
    record = result.metrics["val"]["tta"]
    assert record["tta"] == again["tta"]
    for side in ("plain", "flip"):
        assert record[side]["loss"] == pytest.approx(again[side]["loss"], rel=1e-2, abs=1e-3)
        assert record[side]["accuracy"] == again[side]["accuracy"]
    outputs, labels = real(loaded.model, data.val)
    assert result.metrics["val"]["accuracy"] == np.mean(outputs.argmax(1) == labels.argmax(1))


@pytest.mark.filterwarnings("ignore:weights=none")
def test_a_run_records_prints_and_reports_its_stage_timings(recipe, tmp_path, capsys):
    train(recipe, tmp_path / "run", verbose=0)
    out = capsys.readouterr().out
    record = RunDir(tmp_path / "run").read_info()["stages"]
    assert set(STAGES) <= set(record["stages"])
    assert record["background"]["report"]["wall"] > 0  # drawn while the model was saved
    # The stages (and what none claimed, "other") add up to the whole.
    assert sum(v["wall"] for v in record["stages"].values()) == pytest.approx(
        record["total"]["wall"], abs=0.01)
    line = next(line for line in out.splitlines() if line.startswith("time: "))
    assert line.startswith(f"time: {record['total']['wall']:.0f}") or \
        line.startswith(f"time: {record['total']['wall']:.1f}")
    page = (tmp_path / "run" / "report.html").read_text()
    section = page[page.index("<h2>Where the time went</h2>"):]
    assert all(f"<th>{name}</th>" in section for name in record["stages"])
    assert "<th>total</th>" in section
