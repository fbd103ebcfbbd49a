"""`app.train`: one run into a run directory. Who owns the directory (resume,
overwrite, another run's checkpoints), files that fail after the scan, the fixes a run
trains with, the flip-TTA decision at the end of training, what the end of a run reads
back from the caches instead of new backbone passes, and the stage timings a run
records, prints and reports."""

import contextlib
import io
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder, tiny_recipe, trained_listing, truncate
from transferkit.app import train as train_module
from transferkit.app.train import claim_run, finish, prepare, run_dir, train
from transferkit.cli.main import main
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.data.fixes import write_fixes
from transferkit.evaluation import evaluate
from transferkit.evaluation.evaluate import eval_data, flip_decision, load_run, predict
from transferkit.models.builder import build_model
from transferkit.models.saving import read_metadata, save_model
from transferkit.models.tta import tta_of, unwrap_tta, with_tta
from transferkit.training.checkpoint import CheckpointManager
from transferkit.data.config import DataConfig
from transferkit.training.recipe import load_recipe, load_run_data

# The run's keys over the tiny recipe: 16 px, batches of 4, 1 + 1 epochs, live phase 1.
RUN = dict(image_size=16, batch_size=4, finetune_epochs=1, cache_features=False,
           early_stopping_patience=0)


# --- who owns the run directory -------------------------------------------------------

def _save_checkpoint(folder, run_id, model):
    """A checkpoint of run `run_id` in `folder`, as a run that trained one step leaves."""
    state = {"phase": "head", "phase_start_epoch": 0, "epoch": 1, "step": 0,
             "global_step": 1, "phase_complete": False, "optimizer_iterations": 0,
             "history": []}
    return CheckpointManager(folder, run_id=run_id).save(model, state)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("tiny_test", 2, weights=None, image_size=16)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny run (its images folder is its own: the last test renames a class)."""
    root = tmp_path_factory.mktemp("run")
    folder = make_image_folder(root / "images", per_class=4, size=16)
    run = str(root / "run")
    train(tiny_recipe(folder, **RUN), run, verbose=0)
    return run, folder


def test_a_new_run_into_a_run_directory_is_refused_unless_resume_or_overwrite(
        trained_run, tmp_path):
    run, folder = trained_run
    recipe = tiny_recipe(folder, **RUN)
    run_id = json.load(open(os.path.join(run, "run.json")))["run_id"]
    states = CheckpointManager(os.path.join(run, "checkpoints")).states()
    assert states and all(s["run_id"] == run_id for s in states)
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        train(recipe, run, verbose=0)
    # A resume may not change what the run means, and says which key it refused.
    with pytest.raises(ConfigError, match="'batch_size'.*batch_size=4.*batch_size=2"):
        train(tiny_recipe(folder, **{**RUN, "batch_size": 2}), run, resume=True)
    # A harmless change is allowed and recorded in config.json and run.json.
    train(tiny_recipe(folder, **{**RUN, "report": True}), run, resume=True,
          verbose=0)
    assert load_recipe(os.path.join(run, "config.json")).runtime.report is True
    assert json.load(open(os.path.join(run, "run.json")))["resumes"][-1]["changed"] == {
        "report": True}
    assert json.load(open(os.path.join(run, "run.json")))["run_id"] == run_id


def test_overwrite_starts_a_new_run_and_deletes_only_the_runs_files(tmp_path, tiny_model):
    run = tmp_path / "run"
    run_id, _ = claim_run(run_dir(run), tiny_recipe(**RUN))
    _save_checkpoint(run / "checkpoints", run_id, tiny_model)
    (run / "report").mkdir()
    (run / "report" / "worst.png").write_text("old plot")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_run(run_dir(run), tiny_recipe(**RUN))
    new_id, _ = claim_run(run_dir(run), tiny_recipe(**RUN), overwrite=True)
    assert new_id != run_id
    assert sorted(os.listdir(run)) == ["notes.txt", "run.json"]


def test_claim_run_refuses_resume_and_overwrite_together_and_a_file_as_out(tmp_path):
    recipe = tiny_recipe(**RUN)
    with pytest.raises(ConfigError, match="either `--resume`.*or `--overwrite`"):
        train(recipe, str(tmp_path / "r"), resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="should be a directory"):
        claim_run(run_dir(tmp_path / "file"), recipe)


def test_overwrite_leaves_a_folder_that_is_not_a_run_alone(tmp_path):
    for name in ("logs", "report"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text("mine")
    claim_run(run_dir(tmp_path), tiny_recipe(**RUN), overwrite=True)
    assert (tmp_path / "logs" / "keep.txt").exists()
    assert (tmp_path / "report" / "keep.txt").exists()


def test_temp_files_a_kill_left_in_the_run_folder_are_cleaned(tmp_path):
    (tmp_path / ".model.x1y2.tmp.keras").write_text("torn")
    (tmp_path / ".config.abc.tmp.json").write_text("torn")
    (tmp_path / ".mine.tmp.keras").write_text("not ours")
    (tmp_path / "report").mkdir()  # a kill while the report's plots were written
    (tmp_path / "report" / ".curves.p999999999.ab.tmp.png").write_text("torn")
    claim_run(run_dir(tmp_path), tiny_recipe(**RUN))
    assert sorted(os.listdir(tmp_path)) == [".mine.tmp.keras", "report", "run.json"]
    assert os.listdir(tmp_path / "report") == []


def test_resume_accepts_the_same_data_spelled_another_way(trained_run, monkeypatch):
    run, folder = trained_run
    monkeypatch.chdir(os.path.dirname(folder))
    _, changed = claim_run(run_dir(run), tiny_recipe(os.path.basename(folder), **RUN),
                           resume=True)
    assert "data" not in changed
    foreign = CheckpointManager(os.path.join(run, "checkpoints"), run_id="someone else")
    assert foreign.latest() is None and foreign.others() > 0


# --- files that fail after the scan -------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("split,cache", [("train", False), ("train", True), ("val", False)])
def test_a_file_broken_after_the_scan_is_named_skipped_and_counted(tmp_path, monkeypatch,
                                                                  capsys, split, cache):
    from transferkit.data import load as load_module

    folder = make_image_folder(tmp_path / "data", per_class=5, size=16)
    real, broken = load_module.load_data, []

    def load_then_break_one(*args, **kwargs):  # after the scan, before training
        data = real(*args, **kwargs)
        broken.append(getattr(data, f"{split}_files")[1])
        truncate(broken[0])
        return data

    # load_run_data imports load_data from data.load when it runs, so it gets this one
    monkeypatch.setattr(load_module, "load_data", load_then_break_one)
    out = str(tmp_path / "run")
    result = train(tiny_recipe(folder, **dict(RUN, cache_features=cache)), out, verbose=0)
    assert list(result.skipped_files) == broken
    printed = capsys.readouterr().out
    assert "1 file(s) failed to read or decode" in printed and broken[0] in printed
    with open(os.path.join(out, "run.json")) as f:
        assert list(json.load(f)["skipped_files"]) == broken
    assert os.path.isfile(os.path.join(out, "model.keras")) and result.metrics["val"]


def test_a_run_without_failures_names_no_file(trained_run):
    with open(os.path.join(trained_run[0], "run.json")) as f:
        assert "skipped_files" not in json.load(f)


# --- fixes: what the doctor's review decided ------------------------------------------

def test_train_records_the_fixes_and_resume_refuses_a_changed_file(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=6, size=32)
    fixes = tmp_path / "fixes.csv"
    write_fixes(fixes, [(os.path.join(data, "blue", "1.png"), "exclude", "")])
    recipe = tiny_recipe(data, finetune_epochs=1, batch_size=4, fixes=str(fixes))
    out = str(tmp_path / "run")
    train(recipe, out, verbose=0)
    with open(os.path.join(out, "run.json")) as f:
        record = json.load(f)["fixes"]
    assert record["exclude"] == 1 and len(record["sha256"]) == 64
    write_fixes(fixes, [(os.path.join(data, "blue", "2.png"), "exclude", "")])
    with pytest.raises(ConfigError, match="--resume cannot change the fixes file"):
        train(recipe, out, verbose=0, resume=True)


def test_train_learns_from_the_fixed_listing(tmp_path, monkeypatch):
    """With a fixes file the training split loses the excluded file and has the
    relabelled one under its new class; every other file trains as without it (the
    files and labels fed to the training split's pipeline, with and without fixes)."""
    data = make_image_folder(tmp_path / "d", per_class=6, size=16)
    red0, blue1 = os.path.join(data, "red", "0.png"), os.path.join(data, "blue", "1.png")
    fixes = tmp_path / "fixes.csv"
    write_fixes(fixes, [(red0, "relabel", "blue"), (blue1, "exclude", ""),
                        (os.path.join(data, "red", "2.png"), "keep", "")])
    keys = dict(image_size=16, val_split=0.0)  # every file in the training split
    plain = trained_listing(monkeypatch, tiny_recipe(data, **keys), tmp_path / "plain")
    fixed = trained_listing(monkeypatch, tiny_recipe(data, fixes=str(fixes), **keys),
                            tmp_path / "fixed")
    assert len(plain) == 12 and (plain[red0], plain[blue1]) == ("red", "blue")
    assert blue1 not in fixed and fixed[red0] == "blue"
    assert {p: c for p, c in fixed.items() if p != red0} == {
        p: c for p, c in plain.items() if p not in (red0, blue1)}


# --- flip TTA, decided on validation at the end of training ---------------------------
#
# The models here are hand-set (no training), so whether the mirror helps is known in
# advance: one reads only the left half of the image. Scores are checked against numpy
# computations of the same model on the decoded image files.

SIZE, SCALE = 32, 0.05


def _folder(root, kind, per_class=10):
    """"sides": class left/right = which half is bright (the mirror swaps classes);
    "patch": class red/blue = colour of a patch on one half, alternately left and right,
    with a faint patch of the other colour on the other half (the mirror keeps the
    class; a model reading the left half only is misled on half of the images)."""
    rng = np.random.default_rng(0)
    classes = ("left", "right") if kind == "sides" else ("blue", "red")
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            pixels = rng.integers(0, 60, (SIZE, SIZE, 3)).astype("uint8")
            half = c if kind == "sides" else i % 2  # 0: left half, 1: right half
            cols = slice(0, SIZE // 2) if half == 0 else slice(SIZE // 2, SIZE)
            if kind == "sides":
                pixels[:, cols] += 180
            else:  # and a faint patch of the other colour on the other half
                other = slice(SIZE // 2, SIZE) if half == 0 else slice(0, SIZE // 2)
                pixels[:, cols, 0 if name == "red" else 2] += 180
                pixels[:, other, 2 if name == "red" else 0] += 40
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    return str(root)


def _weights(kind):
    """Dense weights [3, 2] and bias on the mean RGB of the pooled region."""
    if kind == "sides":  # left bright: sum of the means above 360 -> class "left"
        return np.array([[SCALE, -SCALE]] * 3), np.array([-360 * SCALE, 360 * SCALE])
    return (np.array([[-SCALE, SCALE], [0, 0], [SCALE, -SCALE]]),  # blue, red
            np.zeros(2))


def _model(kind, half=True):
    """Softmax over 2 classes from the mean colour of the left half (or whole image)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Cropping2D(((0, 0), (0, SIZE // 2)))(inputs) if half else inputs
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(x)
    dense.set_weights([w.astype("float32") for w in _weights(kind)])
    return keras.Model(inputs, outputs, name="hand_set")


def _numpy_probs(kind, images, half=True):
    """The same model in numpy, on [N, H, W, 3] images."""
    region = images[:, :, :SIZE // 2] if half else images
    w, b = _weights(kind)
    logits = region.mean(axis=(1, 2)) @ w + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _finish(tmp_path, kind, half=True, **keys):
    folder = _folder(tmp_path / "data", kind)
    recipe = tiny_recipe(folder, image_size=SIZE, val_split=0.5, novelty=False, **keys)
    job = prepare(recipe, str(tmp_path / "run"))
    return folder, finish(job, _model(kind, half), [])


def _val_images(run, folder):
    files = eval_data(load_run(run), folder, split="val").files
    return files, np.stack([np.asarray(Image.open(f).convert("RGB"), np.float64)
                            for f in files])


def _accuracy(probs, files, names=("blue", "red")):
    truth = [os.path.basename(os.path.dirname(f)) for f in files]
    return np.mean([names[p] == t for p, t in zip(probs.argmax(axis=1), truth)])


def test_flip_is_kept_where_it_helps_and_every_command_uses_it(tmp_path, capsys):
    folder, result = _finish(tmp_path, "patch")
    run = result.out_dir
    decision = result.tta
    assert decision["tta"] == "flip" and decision["metric"] == "accuracy"
    # Independently: the numpy model on the val files, and on their mirrors.
    files, images = _val_images(run, folder)
    plain = _numpy_probs("patch", images)
    both = (plain + _numpy_probs("patch", images[:, :, ::-1])) / 2
    assert decision["plain"]["accuracy"] == pytest.approx(_accuracy(plain, files))
    assert decision["flip"]["accuracy"] == pytest.approx(_accuracy(both, files))
    assert decision["plain"]["accuracy"] < decision["flip"]["accuracy"] == 1.0
    # Stored: the model file is the wrapped model, its metadata, run.json, metrics.json.
    model_file = os.path.join(run, "model.keras")
    assert tta_of(load_run(run).model) == "flip"
    assert read_metadata(model_file)["tta"] == decision
    assert json.load(open(os.path.join(run, "run.json")))["tta"] == decision
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["val"]["tta"] == decision
    assert metrics["val"]["accuracy"] == pytest.approx(decision["flip"]["accuracy"])
    # evaluate and predict, with no flag, give the averaged model's numbers.
    out = tmp_path / "eval"
    assert main(["evaluate", run, "--data", folder, "--split", "val", "--out",
                 str(out)]) == 0
    report = json.load(open(out / "evaluation.json"))
    assert report["accuracy"] == pytest.approx(decision["flip"]["accuracy"])
    assert report["nll"] == pytest.approx(decision["flip"]["loss"], rel=1e-4)
    rows = predict(run, list(files))
    np.testing.assert_allclose([[s["probability"] for s in sorted(
        r["scores"], key=lambda s: s["class"])] for r in rows], both, atol=1e-4)
    # --tta flip again is a no-op; --tta none scores the plain model.
    capsys.readouterr()
    assert main(["evaluate", run, "--data", folder, "--split", "val", "--tta"]) == 0
    assert "already averages flip TTA" in capsys.readouterr().err
    assert main(["evaluate", run, "--data", folder, "--split", "val", "--tta", "none",
                 "--out", str(tmp_path / "plain")]) == 0
    plain_report = json.load(open(tmp_path / "plain" / "evaluation.json"))
    assert plain_report["accuracy"] == pytest.approx(decision["plain"]["accuracy"])


def test_flip_is_not_kept_where_the_mirror_swaps_classes(tmp_path):
    folder, result = _finish(tmp_path, "sides")
    decision = result.tta
    assert decision["tta"] is None
    assert decision["flip"]["loss"] > decision["plain"]["loss"]  # ~log 2 against ~0
    assert decision["plain"]["accuracy"] == 1.0
    assert tta_of(load_run(result.out_dir).model) is None
    assert read_metadata(os.path.join(result.out_dir, "model.keras"))["tta"] == decision


def test_a_tie_keeps_the_plain_model_and_auto_tta_off_skips_the_decision(tmp_path):
    # The whole-image mean is the same for an image and its mirror: a tie.
    _, result = _finish(tmp_path / "tie", "patch", half=False)
    assert result.tta["tta"] is None
    assert result.tta["flip"]["accuracy"] == result.tta["plain"]["accuracy"]
    assert tta_of(load_run(result.out_dir).model) is None
    _, result = _finish(tmp_path / "off", "patch", auto_tta=False)
    assert result.tta == {"tta": None, "reason": "auto_tta is off"}
    assert tta_of(load_run(result.out_dir).model) is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:weights=none")
def test_a_trained_run_records_its_decision_and_trains_again_from_a_wrapped_model(
        tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=8, size=SIZE)
    keys = dict(image_size=SIZE, head_epochs=0, finetune_epochs=1, unfreeze="all")
    result = train(tiny_recipe(folder, **keys), tmp_path / "a", verbose=0)
    assert result.tta["tta"] in ("flip", None) and "plain" in result.tta
    assert tta_of(load_run(result.out_dir).model) == result.tta["tta"]
    # A run's model.keras that kept flip TTA is a starting point for another run: its
    # backbone is found inside the wrapper.
    plain = unwrap_tta(load_run(result.out_dir).model)
    wrapped = save_model(with_tta(plain, "flip"), str(tmp_path / "wrapped.keras"))
    again = train(tiny_recipe(folder, **{**keys, "weights": wrapped, "finetune_epochs": 0,
                                         "auto_tta": False}), tmp_path / "b", verbose=0)
    for a, b in zip(plain.get_layer("backbone").weights,
                    again.model.get_layer("backbone").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- the end of a run reads back from the caches; stage timings -----------------------

STAGES = ("scan", "build", "extraction", "phase 1", "phase 2", "tta", "novelty", "save",
          "report")


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    """One run with the defaults but what a tiny offline run needs (both caches, the
    recipe's augmentation, the flip decision, the novelty score, the report), counting
    passes over val: (recipe, RunResult, its output, the passes)."""
    root = tmp_path_factory.mktemp("train")
    folder = make_image_folder(root / "images")
    recipe = tiny_recipe(folder, val_split=0.5, head_epochs=3, finetune_epochs=2,
                         augment=DataConfig().augment, report=True)
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
def test_the_end_of_a_run_reads_val_and_its_mirror_from_the_caches(cached_run):
    recipe, result, _, passes = cached_run
    assert result.warnings == ()
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
def test_a_run_records_prints_and_reports_its_stage_timings(cached_run):
    _, result, out, _ = cached_run
    record = RunDir(result.out_dir).read_info()["stages"]
    assert set(STAGES) <= set(record["stages"])
    assert record["background"]["report"]["wall"] > 0  # drawn while the model was saved
    # The stages (and what none claimed, "other") add up to the whole.
    assert sum(v["wall"] for v in record["stages"].values()) == pytest.approx(
        record["total"]["wall"], abs=0.01)
    line = next(line for line in out.splitlines() if line.startswith("time: "))
    assert line.split(" s: ")[0] in (f"time: {record['total']['wall']:.0f}",
                                     f"time: {record['total']['wall']:.1f}")
    page = open(RunDir(result.out_dir).report_file).read()
    section = page[page.index("<h2>Where the time went</h2>"):]
    assert all(f"<th>{name}</th>" in section for name in record["stages"])
    assert "<th>total</th>" in section


# Last of the tests on `trained_run`: it renames a class folder of its images.
def test_resume_refuses_other_classes(trained_run):
    run, folder = trained_run  # it changes the images: the last test on this run
    os.rename(os.path.join(folder, "red"), os.path.join(folder, "green"))
    with pytest.raises(ConfigError, match="cannot change the classes"):
        train(tiny_recipe(folder, **RUN), run, resume=True, verbose=0)
