"""`transferkit doctor` (`data_doctor`): planted label flips and leaks are found, the
review page shows every flagged image and saves a fixes file, and training with the
doctor's fixes learns from the fixed listing."""

import csv
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from transferkit.data_doctor.doctor import doctor
from transferkit.app.train import train
from transferkit.cli.main import main
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.data.fixes import read_fixes
from transferkit.data_doctor import issues as data_issues
from transferkit.training.recipe import recipe_from_dict

from conftest import make_image_folder, trained_listing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The planting (flips, leaks) is the benchmark's, so both measure the same faults.
_spec = importlib.util.spec_from_file_location("doctor_benchmark",
                                               os.path.join(REPO, "benchmarks", "doctor.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
SOURCE = bench.SOURCE  # the shipped checkpoint: features that separate the shapes


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor")
    train_dir, val_dir, flipped, copies = bench.plant(str(root))
    out = str(root / "report")
    code = main(["doctor", train_dir, "--val-data", val_dir, "--backbone", "compact_cnn",
                 "--weights", SOURCE["weights"], "--image-size", "64", "--out", out])
    assert code == 0
    with open(os.path.join(out, "issues.json")) as f:
        rows = json.load(f)
    return dict(root=root, train=train_dir, val=val_dir, flipped=flipped, copies=copies,
                out=out, rows=rows)


def test_doctor_finds_planted_label_flips(checked):
    found = {os.path.realpath(r["path"]) for r in checked["rows"] if r["kind"] == "label"}
    hits = found & checked["flipped"]
    precision, recall = len(hits) / max(len(found), 1), len(hits) / len(checked["flipped"])
    assert precision >= 0.7 and recall >= 0.6, (precision, recall, len(found))
    for r in checked["rows"]:
        if r["kind"] == "label":  # the suggestion is the class the file came from
            assert r["suggested_label"] and r["suggested_label"] != r["given_label"]
            assert 0 <= r["score"] <= 1


def test_reencoded_copies_across_splits_are_reported_first_as_leaks(checked):
    rows = checked["rows"]
    leaks = {(os.path.realpath(r["other"]), os.path.realpath(r["path"]))
             for r in rows if r["kind"] == "leak"}
    assert set(checked["copies"].items()) <= leaks
    kinds = [r["kind"] for r in rows]
    assert kinds[:len(leaks)] == ["leak"] * len(leaks)  # leaks lead the list
    for r in rows:
        if r["kind"] == "leak":
            assert r["split"] == "train"  # the training copy is named: it is excluded


def test_review_page_and_fixes_file(checked):
    with open(os.path.join(checked["out"], "review.html")) as f:
        page = f.read()
    flagged = {r["path"] for r in checked["rows"] if r["path"]}
    assert flagged and all(p in page for p in flagged)
    assert page.count("<img") >= len(flagged)
    fixes = read_fixes(os.path.join(checked["out"], "fixes.csv"))
    labels = {os.path.realpath(r["path"]): r["suggested_label"]
              for r in checked["rows"] if r["kind"] == "label"}
    assert fixes.relabel == labels
    assert fixes.exclude == frozenset(checked["copies"].values())


def test_proposals_exclude_the_training_copy_of_a_leak_once():
    rows = [{"path": "t/a.png", "kind": "leak", "split": "train", "other": "v/a.jpg"},
            {"path": "t/a.png", "kind": "label", "split": "train", "suggested_label": "x"},
            {"path": "t/b.png", "kind": "outlier", "split": "train"}]
    assert data_issues.proposals(rows) == [("t/a.png", "exclude", "")]


def test_doctor_refuses_a_task_and_bad_folds(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=3, size=32)
    with pytest.raises(ConfigError, match="task"):
        doctor(data, task="multilabel", backbone="tiny_test")
    with pytest.raises(ConfigError, match="folds=1"):
        doctor(data, folds=1, backbone="tiny_test")


def test_views_add_augmented_rows_only(tmp_path, monkeypatch):
    """--views K gives the out-of-fold heads K augmented views beside the clean rows
    (the cache's clean view is not added a second time)."""
    data = make_image_folder(tmp_path / "d", per_class=6, size=32)
    seen = {}
    real = data_issues.out_of_fold_probabilities

    def spy(x, labels, num_classes, **kwargs):
        seen["x"], seen["views"] = x, kwargs["views"]
        return real(x, labels, num_classes, **kwargs)

    monkeypatch.setattr(data_issues, "out_of_fold_probabilities", spy)
    doctor(data, backbone="tiny_test", weights="none", image_size=32, views=2, folds=2,
           store=None, verbose=False)
    assert seen["views"].shape == (2, *seen["x"].shape)
    for view in seen["views"]:  # augmented: none of them is the clean features
        assert not np.allclose(view, seen["x"])


@pytest.mark.slow
def test_training_with_the_doctors_fixes_is_no_worse_on_clean_validation(checked, tmp_path,
                                                                           monkeypatch):
    # The clean validation set: val/ without the leaked copies.
    clean = str(tmp_path / "clean_val")
    shutil.copytree(checked["val"], clean)
    for copy in checked["copies"]:
        os.remove(os.path.join(clean, *copy.split(os.sep)[-2:]))
    scores = {}
    # Heads on cached features, trained to a plateau, over 3 seeds: 40 validation images
    # make one seed's accuracy move in steps of 0.025.
    fixes_file = os.path.join(checked["out"], "fixes.csv")
    proposed = read_fixes(fixes_file)
    for name, fixes in (("as given", ""), ("fixed", fixes_file)):
        runs = []
        for seed in range(3):
            recipe = recipe_from_dict({"data": checked["train"], "val_data": clean, **SOURCE,
                                       "fixes": fixes, "report": False, "head_epochs": 40,
                                       "finetune_epochs": 0, "seed": seed})
            out = str(tmp_path / f"{name}{seed}")
            trained = trained_listing(monkeypatch, recipe, out)
            runs.append(RunDir(out).read_metrics()["val"]["accuracy"])
        # What the model learnt from: the fixes' exclusions gone, their relabels applied.
        changed = {p: trained.get(p) for p in (*proposed.exclude, *proposed.relabel)}
        scores[name] = float(np.mean(runs))
        if name == "fixed":
            assert changed == {**dict.fromkeys(proposed.exclude), **proposed.relabel}
        else:
            assert None not in changed.values() and changed != {
                **dict.fromkeys(proposed.exclude), **proposed.relabel}
    assert scores["fixed"] >= scores["as given"] - 0.01, scores


@pytest.mark.slow
def test_review_page_in_a_real_browser(checked, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is not installed (.ci/run installs it with apt-get)"
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(accept_downloads=True)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto("file://" + os.path.join(checked["out"], "review.html"))
        broken = page.evaluate("[...document.images].filter(i => !i.complete || "
                               "i.naturalWidth === 0).length")
        assert broken == 0 and page.evaluate("document.images.length") > 0
        # Exclude the first flagged label issue instead of relabelling it.
        card = page.locator("#label .card").first
        path = card.get_attribute("data-path")
        card.locator("input[value=exclude]").check()
        with page.expect_download() as info:
            page.click("#download")
        saved = tmp_path / "fixes.csv"
        info.value.save_as(saved)
        browser.close()
    assert errors == []
    with open(saved) as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert rows[path]["action"] == "exclude"
    fixes = read_fixes(saved)  # the page's file is one train --fixes reads
    assert os.path.realpath(path) in fixes.exclude


def test_evaluate_flags_wrong_labels_in_a_test_folder(checked, tmp_path, capsys):
    recipe = recipe_from_dict({"data": checked["train"], **SOURCE, "report": False,
                               "head_epochs": 30, "finetune_epochs": 0,
                               "fixes": os.path.join(checked["out"], "fixes.csv")})
    run = str(tmp_path / "run")
    train(recipe, run, verbose=0)
    test = str(tmp_path / "test")
    shutil.copytree(checked["val"], test)
    moved = set()
    for name, other in (("ring", "cross"), ("arrow", "frame"), ("crescent", "ring")):
        f = [f for f in sorted(os.listdir(os.path.join(test, name)))
             if not f.startswith("copy_")][0]
        target = os.path.join(test, other, "moved_" + f)
        os.rename(os.path.join(test, name, f), target)
        moved.add(os.path.realpath(target))
    out = str(tmp_path / "eval")
    assert main(["evaluate", run, "--data", test, "--label-issues", "--out", out]) == 0
    assert "likely label issues:" in capsys.readouterr().out
    with open(os.path.join(out, "evaluation.json")) as f:
        flagged = {os.path.realpath(r["path"]) for r in json.load(f)["label_issues"]}
    assert len(moved & flagged) >= 2 and len(flagged) <= 6, flagged


def test_label_issues_need_one_class_per_image():
    from transferkit.core.task_registry import get_task

    with pytest.raises(ConfigError, match="one class per image.*regression"):
        get_task("regression").single_label_ids(np.zeros((3, 1)))
    assert get_task("binary").single_label_ids(np.array([[0.0], [1.0]])).tolist() == [0, 1]
