"""The `transferkit` CLI end to end: train (a real subprocess), then evaluate, predict
and export --check in-process on the run directory it wrote; neither writes into it."""

import json
import os
import subprocess
import sys

import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.deploy import parity

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    folder = make_image_folder(root / "images", per_class=8, size=32)
    run = str(root / "run")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3",
           "TRANSFERKIT_CACHE": str(root / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "transferkit", "train", "--data", folder,
         "--backbone", "tiny_test", "--weights", "none", "--image-size", "32",
         "--head-epochs", "2", "--finetune-epochs", "1", "--head-lr", "0.05",
         "--batch-size", "8", "--out", run],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"run directory: {run}" in done.stdout
    return run, folder


def test_train_writes_the_run_directory_and_report(trained):
    run, _ = trained
    for name in ("config.json", "class_names.json", "history.json", "metrics.json",
                 "model.keras", "scan.json", "report.html", "report/learning_curves.png",
                 "report/confusion_matrix.png", "report/worst.png"):
        assert os.path.getsize(os.path.join(run, name)) > 0, name
    history = json.load(open(os.path.join(run, "history.json")))
    assert [r["phase"] for r in history] == ["head", "head", "finetune"]


def test_evaluate_predict_and_export_check(trained, tmp_path, capsys, monkeypatch):
    run, folder = trained
    assert cli.main(["evaluate", run, "--data", folder, "--split", "val", "--tta",
                     "--ensemble", os.path.join(run, "model.keras"), "--calibrate",
                     "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "ensemble of 2 models" in out and "temperature" in out
    assert "4 images: accuracy=" in out  # 20% of 16 images, stratified
    assert os.path.exists(tmp_path / "eval" / "report" / "reliability.png")

    image = os.path.join(folder, "red", "0.png")
    assert cli.main(["predict", run, image, "--top-k", "2", "--gradcam",
                     str(tmp_path / "cams")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{image}: ") and "blue" in line and "red" in line
    assert os.listdir(tmp_path / "cams") == ["000_0_gradcam.png"]

    assert cli.main(["export", run, "--format", "tflite", "--out", str(tmp_path / "x"),
                     "--check", "--data", folder]) == 0
    out = capsys.readouterr().out
    assert "model.tflite" in out and "FAIL" not in out
    # A negative tolerance means nothing: refused before any work, naming it.
    assert cli.main(["export", run, "--format", "keras", "--out", str(tmp_path / "y"),
                     "--check", "--data", folder, "--tolerance", "-1"]) == 2
    assert "tolerance=-1.0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "y")
    # An artifact whose class columns come out swapped disagrees with its source: the
    # check fails with a non-zero exit.
    real = parity.load_predictor
    monkeypatch.setattr(parity, "load_predictor",
                        lambda path, **kw: (lambda x: real(path, **kw)(x)[:, ::-1]))
    assert cli.main(["export", run, "--format", "keras", "--out", str(tmp_path / "z"),
                     "--check", "--data", folder]) == 2
    assert "parity check failed" in capsys.readouterr().err


def test_export_and_evaluate_refuse_to_write_into_a_run_directory(trained, tmp_path,
                                                                  capsys):
    run, folder = trained
    before = open(os.path.join(run, "model.keras"), "rb").read()
    assert cli.main(["export", run, "--format", "keras", "--out", run]) == 2
    assert "run directory" in capsys.readouterr().err
    assert cli.main(["evaluate", run, "--data", folder, "--out", run]) == 2
    assert "run directory" in capsys.readouterr().err
    # The model file itself, as a .keras MODEL beside which --out would write.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.keras").write_bytes(before)
    assert cli.main(["export", str(alone / "model.keras"), "--format", "keras",
                     "--out", str(alone)]) == 2
    assert "MODEL file" in capsys.readouterr().err
    assert open(os.path.join(run, "model.keras"), "rb").read() == before

def test_every_command_has_help_with_examples(capsys):
    for command in ("scan", "train", "evaluate", "predict", "export"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out, command


def test_scan_and_errors_name_the_argument(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", per_class=3, size=16)
    assert cli.main(["scan", folder, "--json", str(tmp_path / "scan.json")]) == 0
    assert "6 usable" in capsys.readouterr().out
    assert cli.main(["evaluate", str(tmp_path / "nope"), "--data", folder]) == 2
    assert "MODEL argument" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path), "--format", "keras", "--out", "o",
                     "--check"]) == 2
    assert "--data" in capsys.readouterr().err
