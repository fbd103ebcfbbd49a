"""The hostile corpus of the edges of later features (issue 30), run through the
commands: `benchmarks/adversarial.py` builds it (`make_edge_corpus`, one input per
class of failure) and runs it with the rest of its corpus (`--smoke`, in the slow run);
here every edge input runs in-process in the default run. No command may exit 1 (an
"unexpected error, likely a bug"), hang, or print a traceback; each ends as its class
should: reported and skipped, refused naming the file, or done."""

import contextlib
import importlib.util
import io
import json
import os
import signal

import pytest

from transferkit import cli
from transferkit.core.inputs import InputSpec
from transferkit.core.rundir import RunDir
from transferkit.models.builder import build_model
from transferkit.models.bundle import bundle_metadata, save_bundle
from transferkit.training.recipe import RecipeConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "adversarial", os.path.join(REPO, "benchmarks", "adversarial.py"))
adversarial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(adversarial)

# name -> (exit code, text the output must hold, text it must not)
EXPECTED = {
    "scan a boxes CSV naming a FIFO": (0, "fifo.png: a FIFO", None),
    "train on a boxes CSV naming a FIFO": (0, "fifo.png: a FIFO", None),
    "train with an unknown-data folder that does not decode": (2, "no usable image", None),
    "evaluate a .tflite with a bad sidecar": (2, "`input.height`", None),
    "predict with a .tflite with a bad sidecar": (2, "`input.height`", None),
    "evaluate a model with a tampered novelty member": (2, "member novelty.npz", None),
    "train with a fixes file with bad bytes": (2, "line 3", None),
    "train with a fixes file with a NUL": (2, "line 3", None),
    "train with a fixes file with an oversized field": (2, "line 3", None),
    "train with a fixes file with rows outside the data": (0, "not in the data", None),
    "doctor on two images per class": (2, "at least 4 images each", None),
    "add-class a class differing only in case": (2, "differ only in letter case", None),
    "add-class into a run": (2, "already holds a run", "--resume"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hostile"))
    files = adversarial.make_corpus(root)
    edge = adversarial.make_edge_corpus(root)
    # The run the model inputs need, made without training (the benchmark trains it).
    run = RunDir(os.path.join(root, "run"))
    names = sorted(adversarial.CLASSES)
    save_bundle(build_model("tiny_test", len(names), weights=None, image_size=16),
                run.model_file, bundle_metadata(names, "multiclass", InputSpec(16, 16),
                                                backbone="tiny_test"))
    run.write_config(RecipeConfig.from_keys(data=files["data"], backbone="tiny_test",
                                            weights="none", image_size=16).to_dict())
    run.write_class_names(names)
    return root, files, edge


def test_the_edge_corpus_has_an_input_for_every_class():
    assert {name for name, *_ in adversarial.edge_inputs("/r", {"data": "d", "outside": "o"},
                                                         dict.fromkeys(
        ("boxes_fifo", "unknown_bad", "tflite", "fixes_bytes", "fixes_nul", "fixes_field",
         "fixes_outside", "small", "case", "new_class"), "x"))} == set(EXPECTED)


def _run(argv, seconds=120):
    """(exit code, stdout + stderr) of `transferkit argv` in this process; a command
    that blocks (a FIFO opened) is interrupted by SIGALRM and fails the test."""
    def alarm(signum, frame):
        raise TimeoutError(f"transferkit {argv[0]} blocked for {seconds} s")

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue() + err.getvalue()


@pytest.mark.filterwarnings("ignore:weights=none")
def test_no_edge_input_exits_1_hangs_or_prints_a_traceback(corpus):
    root, files, edge = corpus
    for name, argv, prepare in adversarial.edge_inputs(root, files, edge):
        if prepare:
            adversarial.PREPARE[prepare](root)
        code, output = _run(argv)
        want, holds, lacks = EXPECTED[name]
        assert code == want, f"{name}: exit {code}\n{output[-2000:]}"
        assert adversarial.TRACEBACK not in output and "likely a bug" not in output, name
        assert holds in output, f"{name}: no {holds!r} in\n{output[-2000:]}"
        assert lacks is None or lacks not in output, f"{name}: {lacks!r} in\n{output}"
    # Refused inputs wrote nothing; the fixes rows outside the data were not counted.
    assert not os.path.exists(os.path.join(root, "r_unknown"))
    record = json.load(open(os.path.join(root, "r_fixes", "run.json")))["fixes"]
    assert record["exclude"] == 1 and record["not_in_data"] == [
        os.path.realpath(files["outside"])]
    assert os.path.exists(os.path.join(root, "r_boxes", "model.keras"))
