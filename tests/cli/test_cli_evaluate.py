"""`transferkit evaluate` end to end: with --unknown-data, how well the run's novelty
score tells unknown images from known ones, in evaluation.json and the report."""

import json
import os

from transferkit.cli.main import main
from transferkit.evaluation.evaluate import load_run


def test_evaluate_reports_rejection_and_auroc_against_unknown_images(open_world_run, tmp_path):
    out = str(tmp_path / "eval")
    assert main(["evaluate", open_world_run["run"], "--data", open_world_run["known"], "--split", "val",
                 "--unknown-data", open_world_run["new"], "--out", out]) == 0
    with open(os.path.join(out, "evaluation.json")) as f:
        report = json.load(f)["novelty"]
    # The done-when figures of the open-world issue, on the shipped sample.
    assert report["auroc"] >= 0.85, report
    assert report["rejected"] <= 0.10, report
    assert report["unknown_rejected"] > report["rejected"]
    # The report shows the same numbers: the model's detector and candidates, and
    # both histograms on edges that reach the threshold.
    with open(os.path.join(out, "report.html")) as f:
        page = f.read()
    section = page[page.index("<h2>Novelty</h2>"):]
    loaded = load_run(open_world_run["run"])
    assert f"<b>{loaded.novelty.detector}</b>" in section
    assert f"threshold {loaded.novelty.threshold:.6g}," in section
    assert f"AUROC {report['auroc']:.4f}" in section
    for name, value in loaded.novelty.auroc.items():
        assert f"<tr><th>{name}</th><td>{value:.4f}</td></tr>" in section
    hist = report["histogram"]
    assert sum(hist["unknown"]) == report["unknown_images"]
    assert hist["edges"][0] <= loaded.novelty.threshold <= hist["edges"][-1]
