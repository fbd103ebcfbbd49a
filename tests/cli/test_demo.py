"""`transferkit demo`: offline, from the shipped data; transfer beats scratch."""

import contextlib
import io
import json

import pytest

from transferkit import cli
from transferkit.cli import demo
from transferkit.core.errors import DataError
from transferkit.training.recipe import load_recipe


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    """One `transferkit demo --fast --seed 0` run shared by the tests below (~40 s)."""
    out = tmp_path_factory.mktemp("demo") / "runs"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["demo", "--fast", "--out", str(out), "--seed", "0"])
    return code, out, printed.getvalue()


def test_demo_fast_completes_and_writes_its_report(fast_demo):
    code, out, printed = fast_demo
    assert code == 0
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
    _, out, _ = fast_demo
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

