"""Every task x every command: the numbers each command reports agree with an
independent computation from `predict`'s outputs on the same files.

One tiny run per task (multiclass and binary from class folders, multilabel and
regression from CSVs) is trained through `transferkit train`; then `evaluate` (plain,
--tta, --ensemble, --calibrate), `predict` and `export --check` run on it in-process.
The expected numbers are computed here with numpy from the JSON `predict` prints, not
through transferkit's Task code.
"""

import csv
import json
import os
import warnings

import keras
import numpy as np
import pytest
from PIL import Image

from transferkit import cli
from transferkit.core.errors import TransferkitError
from transferkit import deploy as ex
from transferkit.evaluation.evaluate import eval_data, load_run
from transferkit.models.tta import unwrap_tta
from transferkit.models.saving import read_metadata, save_model

SIZE = 16
COLOURS = ("red", "green", "blue")
TASKS = ("multiclass", "binary", "multilabel", "regression")


def _image(path, levels, rng):
    """An image whose channel c is bright by levels[c] (0..1), plus noise."""
    pixels = rng.uniform(0, 50, (SIZE, SIZE, 3)) + 180 * np.asarray(levels)[None, None]
    Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(path)


def _make_data(root, task, n=24, seed=0):
    """(data source, {file: truth}) for `task`; truth is a class name, a set of class
    names or a float."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    truth = {}
    if task in ("multiclass", "binary"):
        classes = COLOURS if task == "multiclass" else COLOURS[::2]
        for i in range(n):
            name = classes[i % len(classes)]
            os.makedirs(os.path.join(root, name), exist_ok=True)
            path = os.path.join(root, name, f"{i}.png")
            _image(path, np.eye(3)[COLOURS.index(name)], rng)
            truth[path] = name
        return str(root), truth
    rows = []
    for i in range(n):
        path = os.path.join(root, f"{i}.png")
        if task == "multilabel":
            hot = rng.integers(0, 2, 3)
            _image(path, hot, rng)
            truth[path] = {c for c, h in zip(COLOURS, hot) if h}
            rows.append([f"{i}.png", "|".join(sorted(truth[path]))])
        else:
            level = float(rng.uniform(0, 1))
            _image(path, [level] * 3, rng)
            truth[path] = level
            rows.append([f"{i}.png", f"{level:.6f}"])
    csv_path = os.path.join(root, "labels.csv")
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return csv_path, truth


def _train(data, task, out, seed):
    code = cli.main(["train", "--data", data, "--task", task, "--out", out,
                     "--backbone", "tiny_test", "--weights", "none", "--image-size",
                     str(SIZE), "--backbone-kwargs", "width=16", "--batch-size", "8",
                     "--augment", "none", "--head-epochs", "12", "--head-lr", "0.05",
                     "--finetune-epochs", "1", "--finetune-lr", "1e-3", "--unfreeze",
                     "last_blocks:1", "--early-stopping-patience", "0", "--dropout",
                     "0", "--seed", str(seed), "--no-report"])
    assert code == 0


@pytest.fixture(scope="module", params=TASKS)
def run(request, tmp_path_factory):
    task = request.param
    root = tmp_path_factory.mktemp(task)
    data, truth = _make_data(root / "data", task)
    runs = [str(root / "run_a"), str(root / "run_b")]
    with warnings.catch_warnings():  # "weights=none with head_epochs": known here
        warnings.simplefilter("ignore", UserWarning)
        for seed, out in enumerate(runs):
            keras.utils.set_random_seed(seed)
            _train(data, task, out, seed)
    return {"task": task, "data": data, "truth": truth, "runs": runs, "root": root}


def _predict(capsys, model, files, *extra):
    capsys.readouterr()
    assert cli.main(["predict", model, *files, "--json", "--top-k", "3", *extra]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == list(files)
    return rows


def _scores(task, rows):
    """Per-file output vectors from predict's JSON: class probabilities in COLOURS
    order (binary: P(second class)), or the regression value."""
    if task == "regression":
        return np.array([[r["label"]] for r in rows])
    out = []
    for row in rows:
        probs = {s["class"]: s["probability"] for s in row["scores"]}
        if task == "binary":
            out.append([probs["red"]])  # classes sorted: blue, red -> the unit is red
        else:
            out.append([probs.get(c, 0.0) for c in sorted(COLOURS)])
    return np.array(out)


def _expected(task, outputs, truth_values):
    """The headline metric, computed independently of transferkit."""
    names = sorted(COLOURS)
    if task == "multiclass":
        return float(np.mean([names[int(np.argmax(o))] == t
                              for o, t in zip(outputs, truth_values)]))
    if task == "binary":
        return float(np.mean([("red" if o[0] > 0.5 else "blue") == t
                              for o, t in zip(outputs, truth_values)]))
    if task == "multilabel":
        hits = [(o[i] > 0.5) == (names[i] in t) for o, t in zip(outputs, truth_values)
                for i in range(3)]
        return float(np.mean(hits))
    return float(np.mean([abs(o[0] - t) for o, t in zip(outputs, truth_values)]))


def _evaluate(capsys, run, out, *extra):
    capsys.readouterr()
    assert cli.main(["evaluate", run["runs"][0], "--data", run["data"], "--split", "all",
                     "--out", out, *extra]) == 0
    with open(os.path.join(out, "evaluation.json")) as f:
        return json.load(f)


def test_evaluate_predict_and_tta_agree(run, capsys):
    task, files = run["task"], sorted(run["truth"])
    truth = [run["truth"][f] for f in files]
    headline = "mae" if task == "regression" else "accuracy"
    for extra in ((), ("--tta", "flip")):
        rows = _predict(capsys, run["runs"][0], files, *extra)
        expected = _expected(task, _scores(task, rows), truth)
        report = _evaluate(capsys, run, str(run["root"] / f"eval{len(extra)}"), *extra)
        assert report["num_images"] == len(files)
        assert report[headline] == pytest.approx(expected, abs=1e-6), (task, extra)
        if task != "regression":  # predict's label is the evaluated prediction
            assert all(isinstance(r["label"], (str, list)) for r in rows)


def test_ensemble_is_the_mean_of_the_members_outputs(run, capsys):
    task, files = run["task"], sorted(run["truth"])
    truth = [run["truth"][f] for f in files]
    outputs = np.mean([_scores(task, _predict(capsys, r, files)) for r in run["runs"]],
                      axis=0)
    report = _evaluate(capsys, run, str(run["root"] / "ensemble"), "--ensemble",
                       run["runs"][1])
    headline = "mae" if task == "regression" else "accuracy"
    assert report[headline] == pytest.approx(_expected(task, outputs, truth), abs=1e-6)


def test_calibration_keeps_the_ranking_or_is_refused(run, capsys):
    task, files = run["task"], sorted(run["truth"])
    out = str(run["root"] / "calibrated")
    if task == "regression":
        capsys.readouterr()
        assert cli.main(["evaluate", run["runs"][0], "--data", run["data"],
                         "--calibrate"]) == 2
        assert "classification tasks" in capsys.readouterr().err
        return
    report = _evaluate(capsys, run, out, "--calibrate")
    temperature = report["calibration"]["temperature"]
    assert 0.05 <= temperature <= 20
    calibrated = os.path.join(out, "calibrated.keras")
    assert read_metadata(calibrated)["task"] == task
    before = _scores(task, _predict(capsys, run["runs"][0], files))
    after = _scores(task, _predict(capsys, calibrated, files))
    assert not np.allclose(after, before, atol=1e-4) or abs(temperature - 1) < 1e-3
    for column in range(before.shape[1]):  # every output keeps its ranking of images
        order = np.argsort(before[:, column], kind="stable")
        assert np.all(np.diff(after[order, column]) >= -1e-6), (task, column)
    if task == "binary":  # not the old softmax-of-one-unit: outputs are not all 1.0
        assert after.min() < 0.99


@pytest.mark.parametrize("fmt", ["keras", "savedmodel", "tflite"])
def test_export_check_passes(run, capsys, fmt):
    capsys.readouterr()
    assert cli.main(["export", run["runs"][0], "--format", fmt, "--out",
                     str(run["root"] / f"export_{fmt}"), "--check", "--data", run["data"],
                     "--split", "all"]) == 0
    table = capsys.readouterr().out
    assert "FAIL" not in table and table.count(" ok") == 2


def test_export_check_fails_on_a_wrong_artifact(run):
    # The output layer's weights negated: softmax ranks reversed, sigmoids flipped,
    # regression values negated. (An argmax over one sigmoid column would pass it.)
    loaded = load_run(run["runs"][0])
    wrong = keras.models.clone_model(loaded.model)
    wrong.set_weights(loaded.model.get_weights())
    # The run may have kept flip TTA: its head is inside the wrapper.
    dense = unwrap_tta(wrong).get_layer("head").get_layer("head_predictions")
    dense.set_weights([-w for w in dense.get_weights()])
    path = save_model(wrong, str(run["root"] / "wrong.keras"),
                      metadata=read_metadata(loaded.path))
    rows = ex.check_parity(loaded, [path], eval_data(loaded, run["data"]), 0.01)
    assert rows[0]["ok"] and not rows[1]["ok"], (run["task"], rows)
    with pytest.raises(TransferkitError, match="parity check failed"):
        ex.raise_on_mismatch(rows, 0.01, loaded.task)
