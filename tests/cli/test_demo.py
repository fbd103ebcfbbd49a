"""`transferkit demo`: offline, from the shipped data; transfer beats scratch."""

import json
import os
import re
import subprocess
import sys

import pytest

from transferkit import cli
from transferkit.cli import demo
from transferkit.core.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from transferkit.training.recipe import load_recipe


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    """One `transferkit demo --fast --seed 0` run shared by the tests below (~40 s), as a
    new user starts it: its own process, TF_CPP_MIN_LOG_LEVEL not set."""
    out = tmp_path_factory.mktemp("demo") / "runs"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "transferkit", "demo", "--fast", "--out",
                           str(out), "--seed", "0"], env={**env, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=900)
    return done.returncode, out, done.stdout, done.stderr


def test_demo_fast_completes_and_writes_its_report(fast_demo):
    code, out, printed, errors = fast_demo
    assert code == 0, errors[-3000:]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "report.png" in page and "transfer/" in page and "scratch/" in page
    for run in ("transfer", "scratch"):  # both are ordinary run directories
        assert (out / run / "model.keras").is_file()
        assert (out / run / "scan.json").is_file()
        history = json.loads((out / run / "history.json").read_text())
        assert len(history) == demo.FAST.head_epochs + demo.FAST.finetune_epochs
    phases = [r["phase"] for r in json.loads((out / "transfer/history.json").read_text())]
    fast = demo.FAST
    assert phases == ["head"] * fast.head_epochs + ["finetune"] * fast.finetune_epochs
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['transfer_val_accuracy']:.3f}" in printed
    assert f"{summary['scratch_val_accuracy']:.3f}" in printed


def test_transfer_beats_scratch_at_equal_budget(fast_demo):
    _, out, _, _ = fast_demo
    summary = json.loads((out / "summary.json").read_text())
    transfer = load_recipe(str(out / "transfer/config.json")).flat()
    scratch = load_recipe(str(out / "scratch/config.json")).flat()
    # Same data, split, network and number of epochs; only the start differs.
    for key in ("data", "seed", "val_split", "backbone", "image_size", "batch_size"):
        assert transfer[key] == scratch[key]
    assert (transfer["head_epochs"] + transfer["finetune_epochs"]
            == scratch["head_epochs"] + scratch["finetune_epochs"])
    assert transfer["weights"].endswith(demo.CHECKPOINT) and scratch["weights"] == "none"
    # Measured margins are +0.4 or more at seed 0; 0.2 leaves room for CPU noise.
    assert summary["transfer_val_accuracy"] >= summary["scratch_val_accuracy"] + 0.2


def test_every_line_of_the_demo_is_meant_for_a_person(fast_demo):
    """No TensorFlow native log line (oneDNN, CUDA probing, cuInit), no Python logger
    chatter and no dataclass repr in what the demo prints, stdout and stderr."""
    code, _, printed, errors = fast_demo
    assert code == 0, errors[-3000:]
    output = printed + errors
    for pattern in (r"^[IWEF]\d{4} ", r"cuInit", r"oneDNN", r"cuda", r"InitializeLog",
                    r"^WARNING:tensorflow", r"\w+Config\(", r"\w+Spec\("):
        assert not re.search(pattern, output, re.MULTILINE), (pattern, output)
    assert re.search(r"^1/3 scanning the multiclass images in \S+/sample ", printed,
                     re.MULTILINE), printed
    # Each progress line of the feature cache is named by the line above it.
    lines = printed.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\d+/\d+ - .*/batch", line):
            assert lines[i - 1].startswith("caching backbone features"), lines[i - 1:i + 1]


def test_data_is_found_from_the_package_or_the_environment(tmp_path, monkeypatch):
    assert (demo.find_data_dir() / demo.CHECKPOINT).is_file()  # the source checkout
    fake = tmp_path / "shipped"
    (fake / demo.SAMPLE_DIR).mkdir(parents=True)
    (fake / demo.CHECKPOINT).write_bytes(b"")
    monkeypatch.setenv(demo.DATA_ENV, str(fake))
    assert demo.find_data_dir() == fake


def test_missing_data_names_every_place_it_looked(tmp_path, monkeypatch):
    nowhere = [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setattr(demo, "data_candidates", lambda: nowhere)
    with pytest.raises(DataError) as info:
        demo.find_data_dir()
    assert all(str(p) in str(info.value) for p in nowhere)
    assert demo.DATA_ENV in str(info.value)


def test_demo_help_lists_its_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "--fast" in text and "--seed" in text and "runs/demo" in text

