"""`train`'s end of run: what it reads back from the caches instead of new backbone
passes, and the stage timings it records, prints and reports."""

import contextlib
import io

import numpy as np
import pytest

from conftest import make_image_folder
from transferkit.app import train as train_module
from transferkit.app.train import train
from transferkit.core.rundir import REPORT_FILE, RunDir
from transferkit.evaluation import evaluate
from transferkit.evaluation.evaluate import flip_decision, load_run
from transferkit.models.tta import unwrap_tta
from transferkit.training.recipe import load_run_data, recipe_from_dict

STAGES = ("scan", "build", "extraction", "phase 1", "phase 2", "tta", "novelty", "save",
          "report")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run with the defaults but what a tiny offline run needs (both caches, the
    flip decision, the novelty score, the report), counting passes over val: (recipe,
    RunResult, its output, the passes)."""
    root = tmp_path_factory.mktemp("train")
    folder = make_image_folder(root / "images")
    recipe = recipe_from_dict(dict(data=folder, backbone="tiny_test", weights="none",
                                   image_size=32, batch_size=8, val_split=0.5,
                                   head_epochs=3, finetune_epochs=2))
    passes, real = [], evaluate.predict_outputs

    def counting(*args, **kwargs):
        passes.append(args)
        return real(*args, **kwargs)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(train_module, "predict_outputs", counting)
        patch.setattr(evaluate, "predict_outputs", counting)
        result = train(recipe, root / "run", verbose=0)
    return recipe, result, out.getvalue(), passes


@pytest.mark.filterwarnings("ignore:weights=none")
def test_the_end_of_a_run_reads_val_and_its_mirror_from_the_caches(run):
    recipe, result, _, passes = run
    assert passes == []  # neither val nor its mirror went through the backbone again
    # What the end of the run computed above the cached activations is what the saved
    # model computes on the images (float16 activations: close, not bit-equal).
    loaded = load_run(result.out_dir)
    data = load_run_data(recipe, verbose=False)
    again = flip_decision(unwrap_tta(loaded.model), data.val, loaded.task, data.class_names)
    record = result.metrics["val"]["tta"]
    assert record["tta"] == again["tta"]
    for side in ("plain", "flip"):
        assert record[side]["loss"] == pytest.approx(again[side]["loss"], rel=1e-2, abs=1e-3)
        assert record[side]["accuracy"] == again[side]["accuracy"]
    outputs, labels = evaluate.predict_outputs(loaded.model, data.val)
    assert result.metrics["val"]["accuracy"] == np.mean(outputs.argmax(1) == labels.argmax(1))


@pytest.mark.filterwarnings("ignore:weights=none")
def test_a_run_records_prints_and_reports_its_stage_timings(run):
    _, result, out, _ = run
    record = RunDir(result.out_dir).read_info()["stages"]
    assert set(STAGES) <= set(record["stages"])
    assert record["background"]["report"]["wall"] > 0  # drawn while the model was saved
    # The stages (and what none claimed, "other") add up to the whole.
    assert sum(v["wall"] for v in record["stages"].values()) == pytest.approx(
        record["total"]["wall"], abs=0.01)
    line = next(line for line in out.splitlines() if line.startswith("time: "))
    assert line.split(" s: ")[0] in (f"time: {record['total']['wall']:.0f}",
                                     f"time: {record['total']['wall']:.1f}")
    page = open(RunDir(result.out_dir).file(REPORT_FILE)).read()
    section = page[page.index("<h2>Where the time went</h2>"):]
    assert all(f"<th>{name}</th>" in section for name in record["stages"])
    assert "<th>total</th>" in section
