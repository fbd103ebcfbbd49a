"""The run directory alone (`core.rundir.RunDir`): who may write it, what an overwrite
deletes, what a resume may change, its records, and the temp files of a kill."""

import json
import os

import pytest

from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RUN_FILES, RunDir

CONFIG = {"data": "images", "batch_size": 4, "report": True, "strategy": "auto"}
HARMLESS = ("report", "strategy")


def _finished_run(path):
    """A folder as a finished run leaves it: every run file, logs/, report/, a
    checkpoint state in checkpoints/."""
    run = RunDir(path)
    run_id, _ = run.claim(CONFIG)
    for name in RUN_FILES[1:]:
        with open(run.file(name), "w") as f:
            f.write("{}")
    for folder in ("logs", "report", "checkpoints"):
        os.makedirs(run.file(folder), exist_ok=True)
    open(run.file("report/curves.png"), "w").close()
    open(run.file("checkpoints/ckpt-00000001.json"), "w").close()
    return run, run_id


def test_claim_refuses_a_run_unless_resume_or_overwrite(tmp_path):
    run, run_id = _finished_run(tmp_path / "run")
    assert run.holds_run() and run.is_run_dir()
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        run.claim(CONFIG)
    with pytest.raises(ConfigError, match="either `--resume`.*or `--overwrite`"):
        run.claim(CONFIG, resume=True, overwrite=True)
    assert run.claim(CONFIG, resume=True) == (run_id, [])  # same run, nothing changed
    assert os.path.exists(run.model_file)  # a resume deletes nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="should be a directory.*file"):
        RunDir(tmp_path / "file").claim(CONFIG)


def test_overwrite_deletes_only_the_files_train_writes(tmp_path):
    run, run_id = _finished_run(tmp_path / "run")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "lr_find_head.json").write_text("{}")
    cleared = []
    run = RunDir(run.path, clear_checkpoints=cleared.append)
    new_id, _ = run.claim(CONFIG, overwrite=True)
    assert new_id != run_id
    assert cleared == [run.checkpoints]  # the checkpoint code deletes its own files
    assert sorted(os.listdir(run.path)) == ["checkpoints", "lr_find_head.json", "notes.txt",
                                            "run.json"]
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_a_folder_that_is_not_a_run_is_left_alone(tmp_path):
    for name in ("logs", "report"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text("mine")
    (tmp_path / "config.json").write_text('{"mine": 1}')
    run = RunDir(tmp_path)
    assert not run.holds_run() and not run.is_run_dir()
    run.claim(CONFIG, overwrite=True)
    assert (tmp_path / "logs" / "keep.txt").exists()
    assert (tmp_path / "report" / "keep.txt").exists()
    assert run.read_config() == {"mine": 1}


def test_resume_refuses_a_changed_key_naming_it_and_records_harmless_ones(tmp_path):
    run, run_id = _finished_run(tmp_path / "run")
    run.write_config(CONFIG)
    with pytest.raises(ConfigError, match="cannot change 'batch_size'.*batch_size=4, "
                       "given batch_size=8.*Keys a resume may change: report, strategy"):
        run.claim({**CONFIG, "batch_size": 8, "report": False}, resume=True,
                  may_change=HARMLESS)
    assert json.load(open(run.file("run.json")))["resumes"] == []  # nothing recorded
    assert run.claim({**CONFIG, "report": False}, resume=True, may_change=HARMLESS) == (
        run_id, ["report"])
    info = run.read_info()
    assert info["run_id"] == run_id and info["resumes"][-1]["changed"] == {"report": False}


def test_resume_compares_in_the_form_read_config_gives(tmp_path):
    run, _ = _finished_run(tmp_path / "run")
    run.write_config({"nested": {"batch_size": 4}})
    flat = lambda saved: {"batch_size": saved["nested"]["batch_size"]}  # noqa: E731
    assert run.claim({"batch_size": 4}, resume=True, read_config=flat)[1] == []
    with pytest.raises(ConfigError, match="'batch_size'"):
        run.claim({"batch_size": 2}, resume=True, read_config=flat)


def test_a_path_spelled_another_way_is_the_same_setting(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    os.symlink(tmp_path / "images", tmp_path / "alias")
    run = RunDir(tmp_path / "run")
    saved = {"data": str(tmp_path / "images")}
    monkeypatch.chdir(tmp_path)
    assert run.check_resume(saved, {"data": "images"}) == []
    assert run.check_resume(saved, {"data": str(tmp_path / "alias")}) == []
    with pytest.raises(ConfigError, match="'data'"):
        run.check_resume(saved, {"data": "other"})


def test_resume_refuses_other_classes(tmp_path):
    run = RunDir(tmp_path)
    run.check_classes(["a", "b"])  # no class_names.json yet: nothing to compare
    run.write_class_names(("a", "b"))
    run.check_classes(["a", "b"])
    with pytest.raises(ConfigError, match=r"cannot change the classes.*\['b', 'a'\]"):
        run.check_classes(["b", "a"])


def test_history_metrics_and_skipped_files_roundtrip(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_history() == [] and run.read_metrics() is None
    run.claim(CONFIG)
    records = [{"epoch": 1, "phase": "head", "loss": 0.5},
               {"epoch": 2, "phase": "finetune", "loss": 0.25}]
    run.write_history(tuple(records))
    run.write_metrics({"val": {"accuracy": 0.75}})
    assert run.read_history() == records
    assert run.read_metrics() == {"val": {"accuracy": 0.75}}
    run_id = run.read_info()["run_id"]
    run.record_skipped({"images/a/1.png": "truncated"})
    assert run.read_info()["skipped_files"] == {"images/a/1.png": "truncated"}
    assert run.read_info()["run_id"] == run_id  # the rest of run.json stays


def test_temp_files_of_a_kill_are_removed_and_others_kept(tmp_path):
    run = RunDir(tmp_path)
    # Names as `atomic_path` makes them (".<base>.p<pid>.<random>.tmp<ext>"), left by
    # a kill mid-write; a user's dot-file with another base name is not the run's.
    for name in (".model.p123.x1y2.tmp.keras", ".history.p123.ab.tmp.json",
                 ".config.abc.tmp.json", ".mine.tmp.keras"):
        (tmp_path / name).write_text("torn")
    (tmp_path / "report").mkdir()  # a kill while the report's plots were written
    (tmp_path / "report" / ".curves.p999999999.ab.tmp.png").write_text("torn")
    run.remove_temp_files()
    assert sorted(os.listdir(tmp_path)) == [".mine.tmp.keras", "report"]
    assert os.listdir(tmp_path / "report") == []


# Constants equal to a run-directory name that mean something else (module, value).
NOT_FILE_NAMES = {
    ("transferkit/app/train.py", "report"),  # the recipe key `report` a resume may change
}


def test_no_run_directory_file_name_is_written_outside_rundir():
    """RunDir names every file of a run: no string constant of the package (an f-string's
    pieces included) spells one of its names (alone or as a path's first part, e.g.
    "report/x.png"), or the lr_find / worker- patterns, except in core/rundir.py."""
    import ast

    import transferkit
    from transferkit.core import rundir

    names = set(rundir.RUN_FILES) | set(rundir.RUN_DIRS) | {rundir.CHECKPOINTS_DIR}
    prefixes = (rundir.LR_FIND, rundir.WORKER_DIR.split("{")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(transferkit.__file__)))
    found = []
    for folder, _, files in os.walk(os.path.join(root, "transferkit")):
        for name in files:
            path = os.path.join(folder, name)
            module = os.path.relpath(path, root).replace(os.sep, "/")
            if not name.endswith(".py") or module == "transferkit/core/rundir.py" \
                    or "/_vendor/" in module:
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                value = getattr(node, "value", None)
                if isinstance(node, ast.Constant) and isinstance(value, str) and (
                        value.split("/")[0] in names or value.startswith(prefixes)) \
                        and (module, value) not in NOT_FILE_NAMES:
                    found.append(f"{module}:{node.lineno} {value!r}")
    assert not found, found


def test_the_scan_would_catch_a_literal(tmp_path):
    """The names the scan looks for are the ones RunDir writes (not an empty set)."""
    from transferkit.core import rundir

    run = RunDir(tmp_path)
    assert os.path.basename(run.report_file) == rundir.REPORT_FILE == "report.html"
    assert os.path.basename(run.report_dir) in rundir.RUN_DIRS
    assert rundir.lr_find_name("head") == "lr_find_head" and rundir.lr_find_name() == "lr_find"
    assert rundir.lr_find_plot(str(tmp_path), "finetune").endswith("lr_find_finetune.png")
    assert rundir.worker_path("out", 2) == os.path.join("out", "worker-2")
