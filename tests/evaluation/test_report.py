"""report.html and its PNGs: they exist, are real images, are linked relatively and
escape any class name."""

import os
import re

import numpy as np
from PIL import Image

from conftest import make_image_folder, tiny_recipe
from transferkit.core.task_registry import get_task
from transferkit.evaluation import calibrate as cal
from transferkit.data.load import load_data
from transferkit.models import novelty as nv
from transferkit.models.builder import build_model
from transferkit.evaluation.report import write_eval_report, write_report
from transferkit.data.augment import augment_config


def _assert_real_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 50 and image.height > 50
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 5.0  # not a blank canvas


def _linked_images(html_path):
    with open(html_path) as f:
        page = f.read()
    sources = re.findall(r"<img src='([^']+)'", page)
    assert sources and all(not os.path.isabs(s) for s in sources)  # opens anywhere
    return [os.path.join(os.path.dirname(html_path), s) for s in sources]


def test_run_report_has_every_plot(tmp_path):
    folder = make_image_folder(tmp_path / "images", classes=("red", "blue", "green"),
                               per_class=6, size=32)
    data = load_data(folder, image_size=32, batch_size=8, val_split=0.34,
                     augment=augment_config("medium"), verbose=False)
    model = build_model("tiny_test", 3, weights=None, input_shape=32)
    history = [{"epoch": e, "phase": "head" if e <= 2 else "finetune", "loss": 1.0 / e,
                "val_loss": 1.1 / e, "accuracy": 0.3 * e, "val_accuracy": 0.25 * e}
               for e in (1, 2, 3)]
    path = write_report(str(tmp_path / "run"), model, data, history)
    images = _linked_images(path)
    names = {os.path.basename(p) for p in images}
    assert names == {"learning_curves.png", "augmented.png", "confusion_matrix.png",
                     "per_class.png", "worst.png"}
    for image in images:
        _assert_real_png(image)
    page = open(path).read()
    assert "Validation: Metrics" in page and "blue" in page
    assert "Novelty" not in page  # no novelty score given


def test_run_report_shows_the_novelty_score_on_validation(tmp_path):
    from transferkit.models import novelty as nv

    folder = make_image_folder(tmp_path / "images", classes=("red", "blue", "green"),
                               per_class=4, size=32)
    data = load_data(folder, image_size=32, batch_size=8, val_split=0.5, verbose=False)
    model = build_model("tiny_test", 3, weights=None, input_shape=32)
    task = get_task("multiclass")
    features, probs, logits, _ = nv.novelty_inputs(model, data.val, task)
    scores = -np.log(np.exp(logits).sum(axis=1))  # energy, by hand
    novelty = nv.Novelty("energy", float(np.median(scores)), 0.05,
                         {"msp": 0.5, "energy": 0.75}, "synthetic")
    path = write_report(str(tmp_path / "run"), model, data, [], novelty=novelty)
    page = open(path).read()
    section = page[page.index("<h2>Validation: Novelty</h2>"):]
    assert "<b>energy</b>" in section and f"threshold {novelty.threshold:.6g}," in section
    assert "<tr><th>energy</th><td>0.7500</td></tr>" in section
    # Half the validation images lie above the median.
    assert f"{np.mean(scores > novelty.threshold):.1%} of these images" in section
    _assert_real_png(os.path.join(tmp_path, "run", "report", "novelty.png"))


def test_train_report_novelty_matches_the_saved_models_scores(tmp_path):
    """`train` hands the report the validation outputs and novelty scores it already
    has; they must be what the saved model gives on the validation images."""
    from transferkit.app.train import train
    from transferkit.training.recipe import load_run_data
    from transferkit.evaluation.evaluate import load_run, novelty_scores

    folder = make_image_folder(tmp_path / "images", classes=("red", "blue", "green"),
                               per_class=8, size=32)
    recipe = tiny_recipe(folder, val_split=0.5, report=True)
    train(recipe, tmp_path / "run", verbose=0)
    loaded = load_run(str(tmp_path / "run"))
    scores = novelty_scores(loaded, load_run_data(recipe, verbose=False).val)
    page = open(tmp_path / "run" / "report.html").read()
    section = page[page.index("<h2>Validation: Novelty</h2>"):]
    rejected = np.mean(loaded.novelty.unknown(scores))
    assert f"{rejected:.1%} of these images called unknown" in section


def test_eval_report_includes_the_reliability_plot(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([0.3, 0.3], size=40)
    labels = np.eye(2)[rng.integers(0, 2, 40)]
    task = get_task("multiclass")
    report = task.score(probs, labels, ["cat", "dog"])
    calibration = cal.calibrate(task, probs, labels, probs, labels)
    worst = ([rng.uniform(0, 255, (32, 32, 3)) for _ in range(3)], ["a", "b", "c"])
    path = write_eval_report(str(tmp_path / "eval"), report, worst, calibration)
    images = _linked_images(path)
    assert "reliability.png" in {os.path.basename(p) for p in images}
    for image in images:
        _assert_real_png(image)


def test_the_eval_report_has_a_novelty_section(tmp_path):
    rng = np.random.default_rng(0)
    novelty = nv.Novelty("knn", 0.25, 0.05, {"msp": 0.61, "mahalanobis": 0.83, "knn": 0.87},
                         "unknown-data")
    summary = nv.novelty_summary(novelty, rng.uniform(0, 0.3, 50), rng.uniform(0.2, 1, 20))
    task = get_task("multiclass")
    probs = rng.dirichlet([1, 1], size=10)
    report = task.score(probs, np.eye(2)[rng.integers(0, 2, 10)], ["a", "b"])
    page = open(write_eval_report(str(tmp_path / "plain"), report)).read()
    assert "Novelty" not in page
    report["novelty"] = summary
    path = write_eval_report(str(tmp_path / "eval"), report)
    page = open(path).read()
    section = page[page.index("<h2>Novelty</h2>"):]
    assert "<b>knn</b>" in section and "threshold 0.25," in section
    assert f"{summary['rejected']:.1%} of these images" in section
    assert f"AUROC {summary['auroc']:.4f}" in section and "20 unknown images" in section
    for name, value in novelty.auroc.items():
        assert f"<tr><th>{name}</th><td>{value:.4f}</td></tr>" in section
    assert re.search(r"<img src='report/novelty.png'", section)
    assert os.path.getsize(tmp_path / "eval" / "report" / "novelty.png") > 1000
    hist = summary["histogram"]
    assert sum(hist["known"]) == 50 and sum(hist["unknown"]) == 20


HOSTILE_NAMES = ("$\\notacommand{x}$ 5", "<b>bold<b> & \"q\" 'x'", "猫 кот ψ", "a b$")


def test_reports_render_and_escape_any_class_name(tmp_path):
    folder = make_image_folder(tmp_path / "images", classes=HOSTILE_NAMES, per_class=3,
                               size=16)
    data = load_data(folder, image_size=16, batch_size=4, val_split=0.34, verbose=False)
    model = build_model("tiny_test", len(HOSTILE_NAMES), weights=None, image_size=16)
    history = [{"epoch": 1, "phase": "head", "loss": 1.0, "val_loss": 1.1}]
    page = open(write_report(str(tmp_path / "run"), model, data, history)).read()
    assert "<b>bold" not in page
    assert "&lt;b&gt;bold&lt;b&gt; &amp; &quot;q&quot; &#x27;x&#x27;" in page
    assert "猫 кот ψ" in page
    for name in ("confusion_matrix.png", "per_class.png", "worst.png", "augmented.png"):
        assert os.path.getsize(tmp_path / "run" / "report" / name) > 1000
