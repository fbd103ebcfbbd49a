"""Hardening (issue 11): run ownership, resume that survives damage, an error for every
bad input, no silent overwrite, what the scan accepts training decodes, reports for any
class name, no leak between splits."""

import json
import os
import signal

import numpy as np
import pytest

from conftest import make_image_folder
from transferkit import cli
from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.models.builder import build_model
from transferkit.training.checkpoint import CheckpointManager, Checkpointer, save_on_sigterm
from transferkit.training.recipe import RecipeConfig, load_recipe
from transferkit.app.train import claim_run, run_dir, train

TINY = dict(backbone="tiny_test", weights="none", image_size=16, batch_size=4,
            head_epochs=1, finetune_epochs=1, augment="none", report=False,
            cache_features=False, early_stopping_patience=0)


def _save(manager, model, step, **extra):
    state = {"phase": "head", "phase_start_epoch": 0, "epoch": step, "step": 0,
             "global_step": step, "phase_complete": False, "optimizer_iterations": 0,
             "history": [], **extra}
    return manager.save(model, state)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("tiny_test", 2, weights=None, input_shape=16)


# 1. Run ownership ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny run (its images folder is its own: one test adds a class)."""
    root = tmp_path_factory.mktemp("hardening")
    folder = make_image_folder(root / "images", per_class=4, size=16)
    run = str(root / "run")
    train(RecipeConfig.from_keys(data=folder, **TINY), run, verbose=0)
    return run, folder


def test_a_new_run_into_a_run_directory_is_refused_unless_resume_or_overwrite(
        trained_run, tmp_path):
    run, folder = trained_run
    recipe = RecipeConfig.from_keys(data=folder, **TINY)
    run_id = json.load(open(os.path.join(run, "run.json")))["run_id"]
    states = CheckpointManager(os.path.join(run, "checkpoints")).states()
    assert states and all(s["run_id"] == run_id for s in states)
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        train(recipe, run, verbose=0)
    # A resume may not change what the run means, and says which key it refused.
    with pytest.raises(ConfigError, match="'batch_size'.*batch_size=4.*batch_size=2"):
        train(RecipeConfig.from_keys(data=folder, **{**TINY, "batch_size": 2}), run, resume=True)
    # A harmless change is allowed and recorded in config.json and run.json.
    train(RecipeConfig.from_keys(data=folder, **{**TINY, "report": True}), run, resume=True,
          verbose=0)
    assert load_recipe(os.path.join(run, "config.json")).runtime.report is True
    assert json.load(open(os.path.join(run, "run.json")))["resumes"][-1]["changed"] == {
        "report": True}
    assert json.load(open(os.path.join(run, "run.json")))["run_id"] == run_id


def test_overwrite_starts_a_new_run_and_deletes_only_the_runs_files(tmp_path, tiny_model):
    run = tmp_path / "run"
    run_id, _ = claim_run(run_dir(run), RecipeConfig.from_keys(**TINY))
    _save(CheckpointManager(run / "checkpoints", run_id=run_id), tiny_model, 1)
    (run / "report").mkdir()
    (run / "report" / "worst.png").write_text("old plot")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_run(run_dir(run), RecipeConfig.from_keys(**TINY))
    new_id, _ = claim_run(run_dir(run), RecipeConfig.from_keys(**TINY), overwrite=True)
    assert new_id != run_id
    assert sorted(os.listdir(run)) == ["notes.txt", "run.json"]


def test_resume_never_loads_another_runs_checkpoint(tmp_path, tiny_model):
    folder = tmp_path / "ckpt"
    ours, theirs = CheckpointManager(folder, run_id="ours"), CheckpointManager(
        folder, run_id="theirs")
    _save(ours, tiny_model, 1)
    _save(theirs, tiny_model, 9)  # a higher step, as an old run's would be
    assert ours.latest()["global_step"] == 1 and theirs.latest()["global_step"] == 9
    assert CheckpointManager(folder, run_id="new").latest() is None


def test_claim_run_refuses_resume_and_overwrite_together_and_a_file_as_out(tmp_path):
    recipe = RecipeConfig.from_keys(**TINY)
    with pytest.raises(ConfigError, match="either `--resume`.*or `--overwrite`"):
        train(recipe, str(tmp_path / "r"), resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="should be a directory"):
        claim_run(run_dir(tmp_path / "file"), recipe)


def test_overwrite_leaves_a_folder_that_is_not_a_run_alone(tmp_path):
    for name in ("logs", "report"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text("mine")
    claim_run(run_dir(tmp_path), RecipeConfig.from_keys(**TINY), overwrite=True)
    assert (tmp_path / "logs" / "keep.txt").exists()
    assert (tmp_path / "report" / "keep.txt").exists()


# 2. Resume that survives damage ----------------------------------------------------

def test_a_torn_or_altered_newest_checkpoint_falls_back_to_the_previous(tmp_path,
                                                                       tiny_model):
    manager = CheckpointManager(tmp_path, keep=5, run_id="r")
    for step in (1, 2, 3):
        _save(manager, tiny_model, step)
    newest = tmp_path / "ckpt-00000003.weights.h5"
    newest.write_bytes(newest.read_bytes()[:100])  # torn
    with pytest.warns(UserWarning, match="ckpt-00000003.json is damaged"):
        assert manager.latest()["global_step"] == 2
    data = bytearray((tmp_path / "ckpt-00000002.weights.h5").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (tmp_path / "ckpt-00000002.weights.h5").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        assert manager.latest()["global_step"] == 1
    (tmp_path / "ckpt-00000001.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert manager.latest() is None


def test_checkpoint_paths_are_confined_and_only_its_own_files_are_deleted(tmp_path,
                                                                         tiny_model):
    outside = tmp_path / "precious.weights.h5"
    outside.write_text("user data")
    folder = tmp_path / "ckpt"
    manager = CheckpointManager(folder, keep=1, run_id="r")
    _save(manager, tiny_model, 1)
    # A state pointing outside the folder is refused, never loaded or deleted.
    evil = json.load(open(folder / "ckpt-00000001.json"))
    evil.update(global_step=5, weights="../precious.weights.h5")
    (folder / "ckpt-00000005.json").write_text(json.dumps(evil))
    (folder / "other.weights.h5").write_text("not the manager's")
    (folder / ".ckpt-00000007.abc.tmp.weights.h5").write_text("torn temp")
    (folder / "ckpt-00000008.weights.h5").write_text("uncommitted")
    with pytest.warns(UserWarning, match="not a checkpoint file name"):
        assert manager.latest()["global_step"] == 1
    manager.clean()
    _save(manager, tiny_model, 2)  # prunes step 1 (keep=1)
    assert outside.read_text() == "user data"
    assert sorted(os.listdir(folder)) == ["ckpt-00000002.json", "ckpt-00000002.weights.h5",
                                          "ckpt-00000005.json", "other.weights.h5"]


def test_temp_files_a_kill_left_in_the_run_folder_are_cleaned(tmp_path):
    (tmp_path / ".model.x1y2.tmp.keras").write_text("torn")
    (tmp_path / ".config.abc.tmp.json").write_text("torn")
    (tmp_path / ".mine.tmp.keras").write_text("not ours")
    (tmp_path / "report").mkdir()  # a kill while the report's plots were written
    (tmp_path / "report" / ".curves.p999999999.ab.tmp.png").write_text("torn")
    claim_run(run_dir(tmp_path), RecipeConfig.from_keys(**TINY))
    assert sorted(os.listdir(tmp_path)) == [".mine.tmp.keras", "report", "run.json"]
    assert os.listdir(tmp_path / "report") == []


def test_temp_files_a_killed_writer_left_are_removed_but_not_a_live_write(tmp_path):
    from transferkit.core.files import atomic_path, remove_stale_temp_files

    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".features.p{dead}.ab12.tmp.npz"  # a SIGKILL mid-write leaves it
    stale.write_bytes(b"torn")
    with atomic_path(tmp_path / "live.json") as live:
        with open(live, "w") as f:
            f.write("{}")
        assert remove_stale_temp_files(tmp_path) == 1  # this process is alive: kept
        assert not stale.exists() and os.path.exists(live)
    assert json.loads((tmp_path / "live.json").read_text()) == {}


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_then_exit(tmp_path, signum, code):
    import keras
    import tensorflow as tf

    from transferkit.training.orchestrator import fine_tune
    from transferkit.training.schedule import PhaseConfig, ScheduleConfig

    model = build_model("tiny_test", 2, weights=None, input_shape=16)
    manager = CheckpointManager(tmp_path, run_id="r")
    saver = Checkpointer(manager, model)

    class Kill(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                os.kill(os.getpid(), signum)

    x = np.zeros((16, 16, 16, 3), "float32")
    y = keras.utils.to_categorical(np.arange(16) % 2, 2)
    schedule = ScheduleConfig(head=PhaseConfig(epochs=2, early_stopping_patience=None),
                              finetune=PhaseConfig(epochs=0), batch_size=4)
    with save_on_sigterm(saver), pytest.raises(SystemExit) as exit_info:
        fine_tune(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
                  config=schedule, callbacks=[saver, Kill()], verbose=0)
    assert exit_info.value.code == code
    assert manager.latest()["global_step"] == 2  # saved at the batch end after the signal
    assert signal.getsignal(signum) is not None  # the handlers were put back


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    saver = Checkpointer(CheckpointManager(tmp_path), None)
    with pytest.raises(KeyboardInterrupt), save_on_sigterm(saver):
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a save at a batch end
        assert saver.stop_requested == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)


# 3. An error for every bad input ---------------------------------------------------

@pytest.mark.parametrize("flags, names", [
    (["--backbone", "nope_net"], "nope_net"),
    (["--image-size", "4"], "image_size=4"),
    (["--unfreeze", "regex:["], "regex:["),
    (["--unfreeze", "blah"], "blah"),
    (["--weights", "/nonexistent/w.h5"], "/nonexistent/w.h5"),
    (["--data", "/nonexistent/photos"], "/nonexistent/photos"),
    (["--recipe", "/nonexistent/r.json"], "/nonexistent/r.json"),
])
def test_bad_train_arguments_exit_2_naming_the_value_before_any_work(tmp_path, capsys,
                                                                      flags, names):
    folder = make_image_folder(tmp_path / "images", per_class=2, size=16)
    args = ["train", "--data", folder, "--backbone", "tiny_test", "--weights", "none",
            "--out", str(tmp_path / "run"), *flags]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "run")  # refused before touching --out


def test_a_corrupt_model_file_exits_2_naming_it_and_debug_shows_the_traceback(tmp_path,
                                                                            capsys):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 this is no zip")
    folder = make_image_folder(tmp_path / "images", per_class=2, size=16)
    assert cli.main(["evaluate", str(bad), "--data", folder]) == 2
    assert str(bad) in capsys.readouterr().err
    with pytest.raises(TransferkitError):
        cli.main(["--debug", "evaluate", str(bad), "--data", folder])
    with pytest.raises(TransferkitError):
        cli.main(["evaluate", str(bad), "--data", folder, "--debug"])


def test_unexpected_errors_are_one_message_exit_1(monkeypatch, capsys):
    from transferkit.cli import backbones

    def boom(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(backbones, "run", boom)  # register() binds it at parse time
    assert cli.main(["backbones"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "backbones"])


def test_tensorflow_input_errors_and_ctrl_c_outside_training(monkeypatch, capsys):
    import tensorflow as tf

    from transferkit.cli import backbones

    def bad_file(args):
        raise tf.errors.InvalidArgumentError(None, None, "Unknown image file format.\nmore")

    monkeypatch.setattr(backbones, "run", bad_file)
    assert cli.main(["backbones"]) == 2
    assert "could not process an input: Unknown image file format." in \
        capsys.readouterr().err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(backbones, "run", interrupted)
    assert cli.main(["backbones"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_predict_refuses_special_files_without_reading_them(tmp_path):
    from transferkit.core.errors import DataError
    from transferkit.data.files import image_dataset

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="pipe.png"):
        image_dataset([str(fifo)], (16, 16))
    os.symlink("/dev/zero", tmp_path / "zero.png")
    with pytest.raises(DataError, match="zero.png"):
        image_dataset([str(tmp_path / "zero.png")], (16, 16))


# 7. No silent overwrite ------------------------------------------------------------

def test_export_and_evaluate_refuse_to_write_into_a_run_directory(trained_run, tmp_path,
                                                                  capsys):
    run, folder = trained_run
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


def test_resume_refuses_other_classes(trained_run):
    run, folder = trained_run  # the last test on this run: it changes the images
    os.rename(os.path.join(folder, "red"), os.path.join(folder, "green"))
    with pytest.raises(ConfigError, match="cannot change the classes"):
        train(RecipeConfig.from_keys(data=folder, **TINY), run, resume=True, verbose=0)


# 4. What the scan accepts, training decodes ----------------------------------------

def _hostile_folder(root):
    """A two-class folder with a FIFO, a link to /dev/zero, a link leaving the folder,
    an ICO (a format Pillow knows but is not allowed to parse) and a text file .jpg."""
    folder = make_image_folder(root / "data", per_class=3, size=16)
    outside = make_image_folder(root / "outside", classes=("red",), per_class=1, size=16,
                                seed=1)
    os.mkfifo(os.path.join(folder, "red", "pipe.jpg"))
    os.symlink("/dev/zero", os.path.join(folder, "red", "zero.png"))
    os.symlink(os.path.join(outside, "red", "0.png"), os.path.join(folder, "blue", "x.png"))
    from PIL import Image

    Image.new("RGB", (16, 16)).save(os.path.join(folder, "blue", "icon.ico"))
    with open(os.path.join(folder, "blue", "notes.jpg"), "w") as f:
        f.write("not an image")
    return folder


def test_the_scan_skips_special_files_outside_links_and_unallowed_formats(tmp_path):
    from transferkit.data.scan import scan

    folder = _hostile_folder(tmp_path)
    report = scan(folder, normalized_dir=tmp_path / "norm")
    kinds = {os.path.basename(p.path): p.kind for p in report.problems if p.path}
    assert kinds["pipe.jpg"] == "not_regular" and "FIFO" in str(report.problems)
    assert kinds["zero.png"] == "outside_link" and kinds["x.png"] == "outside_link"
    assert kinds["icon.ico"] == "not_image" and kinds["notes.jpg"] == "not_image"
    assert len(report.decode_paths) == 6
    followed = scan(folder, normalized_dir=tmp_path / "norm", follow_links=True)
    kinds = {os.path.basename(p.path): p.kind for p in followed.problems if p.path}
    assert kinds["zero.png"] == "not_regular"  # a device: refused, not read forever
    assert len(followed.decode_paths) == 7  # the outside image, when asked
    assert cli.main(["scan", folder, "--follow-links"]) == 0
    assert cli.main(["scan", folder, "--workers", "0"]) == 2


def _linked_class_folder(tmp_path):
    """Classes red and blue, plus green: a link to a folder outside the data folder."""
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    outside = make_image_folder(tmp_path / "elsewhere", classes=("green",), per_class=4,
                                size=16)
    os.symlink(os.path.join(outside, "green"), os.path.join(folder, "green"))
    return folder


@pytest.mark.parametrize("scan", [True, False])
def test_links_leaving_the_data_folder_are_followed_only_when_asked(tmp_path, capsys,
                                                                   scan):
    from transferkit.data.load import load_data

    folder = _linked_class_folder(tmp_path)
    data = load_data(folder, image_size=16, batch_size=4, val_split=0.0, scan=scan)
    assert data.class_names == ("blue", "red") and len(data.train_files) == 8
    out = capsys.readouterr().out
    assert "green" in out and "outside" in out  # reported, not silently dropped
    data = load_data(folder, image_size=16, batch_size=4, val_split=0.0, scan=scan,
                     follow_links=True)
    assert data.class_names == ("blue", "green", "red") and len(data.train_files) == 12


def test_train_and_recipes_take_follow_links(tmp_path):
    from transferkit.cli.main import build_parser
    from transferkit.cli.train import recipe_from_args
    from transferkit.training.recipe import recipe_from_dict

    assert RecipeConfig().data.follow_links is False
    assert recipe_from_dict({"follow_links": True}).data.follow_links is True
    with pytest.raises(ConfigError, match="follow_link.*Valid keys"):
        recipe_from_dict({"follow_link": True})  # unknown keys are still refused
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o",
                                      "--follow-links"])
    assert recipe_from_args(args).data.follow_links is True
    folder = _linked_class_folder(tmp_path)
    run = str(tmp_path / "run")
    result = train(RecipeConfig.from_keys(data=folder, val_split=0.0, follow_links=True,
                                           **dict(TINY, head_epochs=1, finetune_epochs=0)), run,
                   verbose=0)
    assert result.class_names == ("blue", "green", "red")


def test_a_file_tf_cannot_decode_is_normalised_by_the_scan(tmp_path, monkeypatch):
    import importlib

    from transferkit.data.pipeline import decode_image

    scan_module = importlib.import_module("transferkit.data.scan")  # not data.scan()

    folder = make_image_folder(tmp_path / "data", per_class=2, size=16)
    odd = os.path.join(folder, "red", "0.png")
    odd_bytes = open(odd, "rb").read()
    real = scan_module.tf_decodes
    # Stands in for a file Pillow reads and TF refuses (which varies by TF build).
    monkeypatch.setattr(scan_module, "tf_decodes",
                        lambda data: data != odd_bytes and real(data))
    report = scan_module.scan(folder, normalized_dir=tmp_path / "norm")
    assert report.decode_paths[odd] != odd and "tf_undecodable" in report.converted
    assert decode_image(report.decode_paths[odd], (16, 16)).shape == (16, 16, 3)


def test_training_batches_survive_a_file_that_fails_to_decode(tmp_path):
    from transferkit.data.pipeline import make_dataset

    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    paths = sorted(str(p) for p in (tmp_path / "data").glob("*/*.png"))[:7]
    with open(paths[3], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken after the scan")
    labels = np.eye(2)[[0] * 4 + [1] * 3]
    ds = make_dataset(paths, labels, image_size=16, batch_size=3, training=True, seed=0)
    assert int(ds.cardinality()) == 3  # 7 files in batches of 3
    for _ in range(2):  # each epoch keeps its 3 batches: 6 good files, topped up
        sizes = [int(x.shape[0]) for x, _ in ds]
        assert len(sizes) == 3 and sizes[:2] == [3, 3]
    assert folder


def _truncate(path):
    with open(path, "rb") as f:
        head = f.read(40)  # a PNG signature and a cut-off header: decoding fails
    with open(path, "wb") as f:
        f.write(head)


@pytest.mark.slow
@pytest.mark.parametrize("split,cache", [("train", False), ("train", True), ("val", False)])
def test_a_file_broken_after_the_scan_is_named_skipped_and_counted(tmp_path, monkeypatch,
                                                                  capsys, split, cache):
    from transferkit.app import train as run_module

    folder = make_image_folder(tmp_path / "data", per_class=5, size=16)
    real, broken = run_module.load_data, []

    def load_then_break_one(*args, **kwargs):  # after the scan, before training
        data = real(*args, **kwargs)
        broken.append(getattr(data, f"{split}_files")[1])
        _truncate(broken[0])
        return data

    monkeypatch.setattr(run_module, "load_data", load_then_break_one)
    out = str(tmp_path / "run")
    result = train(RecipeConfig.from_keys(data=folder, **dict(TINY, cache_features=cache)), out,
                   verbose=0)
    assert list(result.skipped_files) == broken
    printed = capsys.readouterr().out
    assert "1 file(s) failed to read or decode" in printed and broken[0] in printed
    with open(os.path.join(out, "run.json")) as f:
        assert list(json.load(f)["skipped_files"]) == broken
    assert os.path.isfile(os.path.join(out, "model.keras")) and result.metrics["val"]


def test_a_run_without_failures_names_no_file(trained_run):
    with open(os.path.join(trained_run[0], "run.json")) as f:
        assert "skipped_files" not in json.load(f)


@pytest.mark.slow
def test_no_scan_names_a_truncated_file_at_training_time_and_exits_0(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "data", per_class=5, size=16)
    victim = os.path.join(folder, "red", "2.png")
    _truncate(victim)  # its first bytes are a PNG's: the --no-scan listing keeps it
    code = cli.main(["train", "--data", folder, "--out", str(tmp_path / "run"),
                     "--no-scan", "--backbone", "tiny_test", "--weights", "none",
                     "--image-size", "16", "--batch-size", "4", "--head-epochs", "1",
                     "--finetune-epochs", "1", "--augment", "none", "--no-report"])
    captured = capsys.readouterr()
    assert code == 0
    assert victim in captured.out + captured.err and "1 file(s)" in captured.out + captured.err


def test_no_scan_lists_only_files_tf_decodes_and_names_the_others(tmp_path, capsys):
    from transferkit.data.load import load_data

    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    from PIL import Image

    Image.new("RGB", (16, 16)).save(os.path.join(folder, "red", "scan.tiff"))
    with open(os.path.join(folder, "blue", "text.jpg"), "w") as f:
        f.write("hello")
    data = load_data(folder, image_size=16, batch_size=4, scan=False, val_split=0.0)
    out = capsys.readouterr().out
    assert "scan.tiff" in out and "text.jpg" in out and "skipped 2 of 10" in out
    assert len(data.train_files) == 8


# 5. Reports for any class name -----------------------------------------------------

HOSTILE_NAMES = ("$\\notacommand{x}$ 5", "<b>bold<b> & \"q\" 'x'", "猫 кот ψ", "a b$")


def test_reports_render_and_escape_any_class_name(tmp_path):
    from transferkit.data.load import load_data
    from transferkit.evaluation.report import write_report

    folder = make_image_folder(tmp_path / "images", classes=HOSTILE_NAMES, per_class=3,
                               size=16)
    data = load_data(folder, image_size=16, batch_size=4, val_split=0.34, verbose=False)
    model = build_model("tiny_test", len(HOSTILE_NAMES), weights=None, input_shape=16)
    history = [{"epoch": 1, "phase": "head", "loss": 1.0, "val_loss": 1.1}]
    page = open(write_report(str(tmp_path / "run"), model, data, history)).read()
    assert "<b>bold" not in page
    assert "&lt;b&gt;bold&lt;b&gt; &amp; &quot;q&quot; &#x27;x&#x27;" in page
    assert "猫 кот ψ" in page
    for name in ("confusion_matrix.png", "per_class.png", "worst.png", "augmented.png"):
        assert os.path.getsize(tmp_path / "run" / "report" / name) > 1000


# 6. No leak between splits ---------------------------------------------------------

def test_the_same_file_in_two_splits_is_refused_or_removed_from_the_later(tmp_path,
                                                                          capsys):
    import shutil

    from transferkit.core.errors import DataError
    from transferkit.data.load import load_data

    folder = make_image_folder(tmp_path / "train", per_class=4, size=16)
    with pytest.raises(DataError, match="val source.*only files of the train source"):
        load_data({"train": folder, "val": folder}, image_size=16, scan=False)
    # Rows naming the same file in both CSVs (one spelled through a link): removed.
    os.symlink(folder, tmp_path / "alias")
    rows = [f"{c}/{i}.png,{c}" for c in ("red", "blue") for i in range(4)]
    (tmp_path / "train.csv").write_text("\n".join(f"train/{r}" for r in rows[:6]))
    (tmp_path / "val.csv").write_text("\n".join(f"alias/{r}" for r in rows[5:]))
    for scan in (False, True):
        data = load_data({"train": str(tmp_path / "train.csv"),
                          "val": str(tmp_path / "val.csv")}, image_size=16, scan=scan)
        assert "1 file(s) of the val source are also in the train source" in \
            capsys.readouterr().out
        assert len(data.train_files) == 6 and len(data.val_files) == 2
    # The same content under another name: the scan removes the later copy.
    val = make_image_folder(tmp_path / "val", per_class=2, size=16, seed=5)
    shutil.copy(os.path.join(folder, "red", "0.png"), os.path.join(val, "red", "copy.png"))
    data = load_data({"train": folder, "val": val}, image_size=16)
    assert "copy.png" not in " ".join(data.val_files) and len(data.val_files) == 4
    assert any(p.kind == "duplicate" and "split 'train'" in p.reason
               for p in data.scan_report.problems)


def test_resume_accepts_the_same_data_spelled_another_way(trained_run, monkeypatch):
    run, folder = trained_run
    monkeypatch.chdir(os.path.dirname(folder))
    _, changed = claim_run(run_dir(run), RecipeConfig.from_keys(data=os.path.basename(folder), **TINY),
                           resume=True)
    assert "data" not in changed
    foreign = CheckpointManager(os.path.join(run, "checkpoints"), run_id="someone else")
    assert foreign.latest() is None and foreign.others() > 0
