"""Adversarial inputs: hostile and odd files, folders, arguments and run directories,
run through the `transferkit` commands; prints "N inputs tried, C crashes, T
tracebacks, L files lost" (goal: C = T = L = 0).

    python benchmarks/adversarial.py --smoke       # one worker process, ~15 s
    python benchmarks/adversarial.py               # one subprocess per input

The corpus (all generated here, in a temp folder):
- a data folder with a FIFO, a link to /dev/zero, a link leaving the folder, a link
  loop, a dangling link, an ICO and a PostScript file (formats Pillow knows but is not
  allowed to parse), text named .jpg, an empty file, a truncated JPEG, a
  decompression-bomb PNG header, 1-bit BMP, CMYK JPEG, 16-bit PNG, TIFF, an animated
  GIF, hidden files, and class folders named with `$...$` math, HTML markup and
  quotes, spaces and non-Latin scripts;
- bad arguments of every command (unknown names, out-of-range numbers, invalid
  regular expressions, missing files, a FIFO or a folder where a file belongs);
- bad files handed to commands: corrupt and empty `.keras`, a zip that is no model,
  recipes that are not JSON, not an object, with unknown keys or `trusted`, a CSV
  with a bad row or missing files, the same files in train and val;
- run directories: a new run into a finished run, a resume changing batch size,
  `--resume --overwrite`, a torn newest checkpoint, a checkpoint state whose paths
  leave the folder, `export`/`evaluate --out` into the run, temp files left by kills;
- the edges of later features (issue 30, `make_edge_corpus`, one input per class): a
  boxes CSV naming a FIFO; an unknown-data folder of files that do not decode; a
  .tflite sidecar with a value of the wrong type and a model whose novelty member was
  tampered with; fixes files with bad bytes, a NUL, an oversized field, and rows
  naming files outside the data; two images per class for the doctor; a new class
  differing from the run's only in case, and add-class into a run.

A crash is an exit code other than 0 (done) or 2 (refused with one message), or a
hang; a traceback is "Traceback (most recent call last)" on stderr; a file is lost
when a data file, a file of the person's (outside or inside the run folder) or the
file a hostile checkpoint state points at is changed or gone, or when the run's
model.keras no longer loads at the end.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACEBACK = "Traceback (most recent call last)"
CLASSES = ("$\\frac{a}{b}$ 5", "<b>x<b> & \"q\" 'x'", "猫 кот", "plain")


def _rgb(size=24, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype("uint8"))


def _bomb_png():
    buf = io.BytesIO()
    Image.new("L", (10, 10)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def make_corpus(root):
    """The hostile data folder, files and recipes; returns a dict of their paths."""
    data = os.path.join(root, "data")
    for i, name in enumerate(CLASSES):
        os.makedirs(os.path.join(data, name))
        for j in range(4):
            img = np.full((24, 24, 3), 40, "uint8")
            img[..., i % 3] = 200 + j
            Image.fromarray(img).save(os.path.join(data, name, f"ok {j}.png"))
    odd = os.path.join(data, "plain")
    outside = os.path.join(root, "outside.png")
    _rgb(seed=9).save(outside)
    os.mkfifo(os.path.join(odd, "fifo.jpg"))
    os.symlink("/dev/zero", os.path.join(odd, "zero.png"))
    os.symlink(outside, os.path.join(odd, "outside.png"))
    os.symlink(os.path.join(odd, "loop_b.jpg"), os.path.join(odd, "loop_a.jpg"))
    os.symlink(os.path.join(odd, "loop_a.jpg"), os.path.join(odd, "loop_b.jpg"))
    os.symlink(os.path.join(root, "missing.jpg"), os.path.join(odd, "dangling.jpg"))
    os.symlink(root, os.path.join(odd, "up"))  # a folder link out (and a loop)
    _rgb().save(os.path.join(odd, "icon.ico"))
    with open(os.path.join(odd, "page.jpg"), "w") as f:
        f.write("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with open(os.path.join(odd, "notes.jpg"), "w") as f:
        f.write("not an image")
    open(os.path.join(odd, "empty.png"), "w").close()
    buf = io.BytesIO()
    _rgb(48).save(buf, "JPEG")
    with open(os.path.join(odd, "truncated.jpg"), "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    with open(os.path.join(odd, "bomb.png"), "wb") as f:
        f.write(_bomb_png())
    _rgb(seed=1).convert("1").save(os.path.join(odd, "mono.bmp"))
    _rgb(seed=2).convert("CMYK").save(os.path.join(odd, "cmyk.jpg"))
    deep = (np.random.default_rng(3).random((24, 24)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(os.path.join(odd, "deep.png"))
    _rgb(seed=4).save(os.path.join(odd, "scan.tiff"))
    frames = [_rgb(seed=5 + k).convert("P") for k in range(2)]
    frames[0].save(os.path.join(odd, "anim.gif"), save_all=True, append_images=frames[1:])
    with open(os.path.join(odd, ".hidden.jpg"), "w") as f:
        f.write("hidden")

    files = {"data": data, "outside": outside, "odd": odd}
    files["bad_keras"] = _write(root, "corrupt.keras", b"PK\x03\x04 not really a zip")
    files["empty_keras"] = _write(root, "empty.keras", b"")
    with zipfile.ZipFile(os.path.join(root, "nomodel.keras"), "w") as archive:
        archive.writestr("hello.txt", "no model here")
    files["zip_keras"] = os.path.join(root, "nomodel.keras")
    files["recipe_text"] = _write(root, "recipe_text.json", b"{not json")
    files["recipe_list"] = _write(root, "recipe_list.json", b"[1, 2]")
    files["recipe_unknown"] = _write(root, "recipe_unknown.json", b'{"head_epoch": 1}')
    files["recipe_trusted"] = _write(root, "recipe_trusted.json", b'{"trusted": true}')
    files["recipe_types"] = _write(root, "recipe_types.json", b'{"head_epochs": "5"}')
    files["csv_bad"] = _write(root, "bad.csv", b"path,label\nonly-a-path\n")
    files["csv_missing"] = _write(root, "missing.csv", b"nope/1.png,a\nnope/2.png,b\n")
    files["fifo"] = os.path.join(odd, "fifo.jpg")
    files["notes"] = _write(root, "notes.txt", b"the person's own file")
    return files


def make_edge_corpus(root):
    """The hostile files of the edges of later features (issue 30): {name: path}."""
    edge = os.path.join(root, "edge")
    files = {}
    # A listing naming a special file: a boxes CSV whose last row is a FIFO.
    boxes = os.path.join(edge, "boxes")
    os.makedirs(boxes)
    rows = ["path,label,xmin,ymin,xmax,ymax"]
    for i in range(8):
        _rgb(24, seed=20 + i).save(os.path.join(boxes, f"{i}.png"))
        rows.append(f"{i}.png,{'ab'[i % 2]},2,2,{12 + i},{14 + i}")
    os.mkfifo(os.path.join(boxes, "fifo.png"))
    rows.append("fifo.png,a,2,2,12,12")
    files["boxes_fifo"] = _write(boxes, "boxes.csv", "\n".join(rows).encode())
    # A check that could run first: image-named files that do not decode.
    bad = os.path.join(edge, "unknown_bad")
    os.makedirs(bad)
    for i in range(3):
        _write(bad, f"{i}.jpg", b"\xff\xd8\xff not a jpeg")
    files["unknown_bad"] = bad
    # Values beside a model: a sidecar value of the wrong type (the .tflite is never run).
    files["tflite"] = _write(edge, "model.tflite", b"TFL3 never run: the sidecar is bad")
    _write(edge, "model.tflite.json", json.dumps({
        "class_names": ["a", "b"], "task": "multiclass",
        "input": {"height": "24", "width": 24}}).encode())
    # The fixes reader: bad bytes, a NUL, an oversized field; rows outside the data.
    image = os.path.join(root, "data", "plain", "ok 0.png").encode()
    header = b"path,action,label\n" + image + b",exclude,\n"
    files["fixes_bytes"] = _write(edge, "fixes_bytes.csv", header + b"\xe9t\xe9,exclude,\n")
    files["fixes_nul"] = _write(edge, "fixes_nul.csv", header + image + b",relabel,p\x00\n")
    files["fixes_field"] = _write(edge, "fixes_field.csv",
                                  header + image + b",relabel," + b"x" * 200_000 + b"\n")
    files["fixes_outside"] = _write(edge, "fixes_outside.csv", header + os.path.join(
        root, "outside.png").encode() + b",exclude,\n")
    # A method with a minimum: two images per class for the doctor's folds.
    small = os.path.join(edge, "small")
    for c, name in enumerate(("a", "b")):
        os.makedirs(os.path.join(small, name))
        for i in range(2):
            _rgb(24, seed=40 + 2 * c + i).save(os.path.join(small, name, f"{i}.png"))
    files["small"] = small
    # Names differing only in case: "PLAIN" beside the run's "plain"; a proper new one.
    for folder, name in (("case", "PLAIN"), ("new_class", "extra")):
        os.makedirs(os.path.join(edge, folder, name))
        for i in range(3):
            _rgb(24, seed=50 + i).save(os.path.join(edge, folder, name, f"{i}.png"))
        files[folder] = os.path.join(edge, folder)
    return files


def tamper_novelty(root):
    """A copy of the run's model.keras claiming a novelty score whose member is a
    pickled object array (never unpickled: it must be refused, naming the file)."""
    source, target = os.path.join(root, "run", "model.keras"), os.path.join(root,
                                                                             "tampered.keras")
    with zipfile.ZipFile(source) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    meta = json.loads(members.get("transferkit.json", b"{}"))
    meta["novelty"] = {"detector": "mahalanobis", "threshold": 1.0, "false_rejection": 0.05,
                       "auroc": {"mahalanobis": 0.9}, "criterion": "synthetic"}
    members["transferkit.json"] = json.dumps(meta).encode()
    buffer = io.BytesIO()
    np.savez(buffer, means=np.array([{"run": "code"}], dtype=object),
             precision=np.eye(2, dtype=np.float32))
    members["novelty.npz"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def edge_inputs(root, f, e):
    """(name, argv, preparation) of the edge corpus `e` (`make_edge_corpus`); the run
    directory root/run must exist (the first inputs train it)."""
    run, data = os.path.join(root, "run"), f["data"]
    new = lambda name: os.path.join(root, name)  # noqa: E731
    # The inputs are tested, not training: no epoch, no optional end step.
    quick = ("--finetune-epochs", "0", "--no-report", "--no-novelty", "--no-auto-tta")
    return [
        ("scan a boxes CSV naming a FIFO", ["scan", e["boxes_fifo"], "--task",
                                           "localization"], None),
        ("train on a boxes CSV naming a FIFO", train_args(
            e["boxes_fifo"], new("r_boxes"), "--task", "localization", *quick), None),
        ("train with an unknown-data folder that does not decode", train_args(
            data, new("r_unknown"), "--unknown-data", e["unknown_bad"]), None),
        ("evaluate a .tflite with a bad sidecar", ["evaluate", e["tflite"], "--data",
                                                   data], None),
        ("predict with a .tflite with a bad sidecar", ["predict", e["tflite"],
                                                       f["outside"]], None),
        ("evaluate a model with a tampered novelty member", [
            "evaluate", new("tampered.keras"), "--data", data], "tamper_novelty"),
        *((f"train with a fixes file with {what}", train_args(
            data, new("r_fixes"), "--fixes", e[key], *quick), None)
          for what, key in (("bad bytes", "fixes_bytes"), ("a NUL", "fixes_nul"),
                            ("an oversized field", "fixes_field"),
                            ("rows outside the data", "fixes_outside"))),
        ("doctor on two images per class", ["doctor", e["small"], "--backbone",
                                            "tiny_test", "--weights", "none",
                                            "--image-size", "16", "--out", new("doc")],
         None),
        ("add-class a class differing only in case", [
            "add-class", run, "--data", e["case"], "--out", new("plus")], None),
        ("add-class into a run", ["add-class", run, "--data", e["new_class"], "--out",
                                  run], None),
    ]


def _write(root, name, data):
    path = os.path.join(root, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def train_args(data, out, *extra):
    # One fine-tuning epoch of the tiny backbone: the inputs, not training, are tested.
    return ["train", "--data", data, "--backbone", "tiny_test", "--weights", "none",
            "--image-size", "16", "--head-epochs", "0", "--finetune-epochs", "1",
            "--unfreeze", "none", "--batch-size", "4", "--augment", "none",
            "--no-cache-features", "--early-stopping-patience", "0", "--out", out, *extra]


def tear_newest(root):
    """Cut the newest checkpoint's weights file in half (a disk that lost its tail)."""
    ckpt = os.path.join(root, "run", "checkpoints")
    names = sorted(n for n in os.listdir(ckpt) if n.endswith(".weights.h5"))
    path = os.path.join(ckpt, names[-1])
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def hostile_state(root):
    """A newest checkpoint state whose file names leave the checkpoint folder."""
    ckpt = os.path.join(root, "run", "checkpoints")
    names = sorted(n for n in os.listdir(ckpt) if n.endswith(".json"))
    with open(os.path.join(ckpt, names[-1])) as fh:
        state = json.load(fh)
    state.update(global_step=99_999_999, weights="../../notes.txt",
                 best_weights="../../outside.png")
    with open(os.path.join(ckpt, "ckpt-99999999.json"), "w") as fh:
        json.dump(state, fh)


def kill_leftovers(root):
    """Temp files as a SIGKILL mid-write leaves them."""
    run = os.path.join(root, "run")
    for name in (".model.abc.tmp.keras", ".config.x.tmp.json"):
        _write(run, name, b"torn")
    _write(os.path.join(run, "checkpoints"), ".ckpt-00000009.zz.tmp.weights.h5", b"torn")


PREPARE = {f.__name__: f for f in (tear_newest, hostile_state, kill_leftovers,
                                   tamper_novelty)}


def inputs(root, f):
    """(name, argv, preparation name or None) for each input."""
    run, data = os.path.join(root, "run"), f["data"]
    new = lambda name: os.path.join(root, name)  # noqa: E731
    return [
        ("scan hostile folder", ["scan", data], None),
        ("train on hostile folder", train_args(data, run), None),
        ("train --no-scan on hostile folder", train_args(data, new("run_noscan"),
                                                         "--no-scan", "--no-report"), None),
        ("train into an existing run", train_args(data, run), None),
        ("resume changing batch size", train_args(data, run, "--resume",
                                                  "--batch-size", "8"), None),
        ("resume and overwrite", train_args(data, run, "--resume", "--overwrite"), None),
        ("resume after a torn newest checkpoint", train_args(data, run, "--resume", "--no-report"),
         "tear_newest"),
        ("resume with a hostile checkpoint state", train_args(data, run, "--resume", "--no-report"),
         "hostile_state"),
        ("resume after kill leftovers", train_args(data, run, "--resume", "--no-report"),
         "kill_leftovers"),
        ("unknown backbone", train_args(data, new("r1"), "--backbone", "resnet5O"), None),
        ("image size too small", train_args(data, new("r1"), "--image-size", "2"), None),
        ("image size not a number", train_args(data, new("r1"), "--image-size", "big"),
         None),
        ("invalid unfreeze regex", train_args(data, new("r1"), "--unfreeze", "regex:(["),
         None),
        ("unknown unfreeze policy", train_args(data, new("r1"), "--unfreeze", "most"), None),
        ("missing weights file", train_args(data, new("r1"), "--weights", new("w.h5")),
         None),
        ("corrupt weights file", train_args(data, new("r1"), "--weights", f["bad_keras"]),
         None),
        ("missing data folder", train_args(new("nodata"), new("r1")), None),
        ("a FIFO as data", train_args(f["fifo"], new("r1")), None),
        ("batch size 0", train_args(data, new("r1"), "--batch-size", "0"), None),
        ("val split 1.5", train_args(data, new("r1"), "--val-split", "1.5"), None),
        ("unknown task", train_args(data, new("r1"), "--task", "detection"), None),
        ("recipe not JSON", train_args(data, new("r1"), "--recipe", f["recipe_text"]),
         None),
        ("recipe a list", train_args(data, new("r1"), "--recipe", f["recipe_list"]), None),
        ("recipe unknown key", train_args(data, new("r1"), "--recipe",
                                          f["recipe_unknown"]), None),
        ("recipe trusted key", train_args(data, new("r1"), "--recipe",
                                          f["recipe_trusted"]), None),
        ("recipe wrong type", train_args(data, new("r1"), "--recipe", f["recipe_types"]),
         None),
        ("csv with a bad row", train_args(f["csv_bad"], new("r1")), None),
        ("csv of missing files", train_args(f["csv_missing"], new("r1")), None),
        ("same folder as train and val", train_args(data, new("r1"), "--val-data", data),
         None),
        ("from-tuning without a sweep", train_args(data, new("r1"), "--from-tuning",
                                                   new("nosweep")), None),
        ("evaluate on hostile folder", ["evaluate", run, "--data", data], None),
        ("evaluate a corrupt .keras", ["evaluate", f["bad_keras"], "--data", data], None),
        ("evaluate an empty .keras", ["evaluate", f["empty_keras"], "--data", data], None),
        ("evaluate a zip that is no model", ["evaluate", f["zip_keras"], "--data", data],
         None),
        ("evaluate a folder without a model", ["evaluate", data, "--data", data], None),
        ("evaluate --out into the run", ["evaluate", run, "--data", data, "--out", run],
         None),
        ("export --out into the run", ["export", run, "--format", "keras", "--out", run],
         None),
        ("export int8 without data", ["export", run, "--format", "tflite", "--quantize",
                                      "int8", "--out", new("x")], None),
        ("predict hostile files", ["predict", run, *sorted(
            os.path.join(f["odd"], n) for n in os.listdir(f["odd"]))], None),
        ("predict a FIFO", ["predict", run, f["fifo"]], None),
        ("predict a folder", ["predict", run, data], None),
        ("predict top-k 0", ["predict", run, f["outside"], "--top-k", "0"], None),
        ("scan a file", ["scan", f["notes"]], None),
        ("scan --json onto a folder", ["scan", data, "--json", data], None),
        ("image size 100000", train_args(data, new("r1"), "--image-size", "100000"), None),
        ("--out below a file", train_args(data, os.path.join(f["notes"], "run")), None),
        ("--out a device", train_args(data, "/dev/null"), None),
        ("head units not numbers", train_args(data, new("r1"), "--head-units", "a,b"),
         None),
        ("predict top-k -3", ["predict", run, f["outside"], "--top-k", "-3"], None),
        ("predict --gradcam onto a file", ["predict", run, f["outside"], "--gradcam",
                                           f["notes"]], None),
        ("evaluate batch size 0", ["evaluate", run, "--data", data, "--batch-size", "0"],
         None),
        ("tune resume of nothing", ["tune", "--out", new("nosweep"), "--resume"], None),
        ("tune unknown backbone", ["tune", "--data", data, "--backbone", "nope",
                                   "--max-trials", "1", "--out", new("t1")], None),
    ]


def snapshot(paths):
    """{path: sha256} of the files under `paths` (files or folders; links not followed)."""
    out = {}
    for top in paths:
        walker = [(os.path.dirname(top), [], [os.path.basename(top)])] \
            if os.path.isfile(top) else os.walk(top)
        for folder, _, names in walker:
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as fh:
                        out[path] = hashlib.sha256(fh.read()).hexdigest()
    return out


def run_worker(root, cases):
    """Run `cases` [(name, argv, preparation)] in this process through `cli.main`; one
    JSON line per case on stdout (exit code, traceback seen, seconds), then whether the
    run's model still loads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from transferkit.cli.main import main as cli_main

    for name, argv, prepare in cases:
        if prepare:
            PREPARE[prepare](root)
        err, out = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli_main(argv)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 2
            except BaseException:  # noqa: BLE001 - what the benchmark counts
                import traceback

                traceback.print_exc()
                code = "exception"
        print(json.dumps({"name": name, "code": code, "traceback": TRACEBACK in
                          err.getvalue(), "stderr": err.getvalue()[-400:],
                          "seconds": time.perf_counter() - start}), flush=True)
    import keras

    try:
        keras.saving.load_model(os.path.join(root, "run", "model.keras"), compile=False)
        loadable = True
    except Exception:  # noqa: BLE001 - a model that does not load is a lost file
        loadable = False
    print(json.dumps({"model_loadable": loadable}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="every input in one worker process (fast); without it each "
                        "input runs in its own `python -m transferkit` subprocess")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per input")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with open(args.worker) as fh:
            spec = json.load(fh)
        run_worker(spec["root"], spec["cases"])
        return 0
    root = tempfile.mkdtemp(prefix="transferkit-adversarial-")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3",
           "TRANSFERKIT_CACHE": os.path.join(root, "cache")}
    try:
        files = make_corpus(root)
        cases = inputs(root, files) + edge_inputs(root, files, make_edge_corpus(root))
        precious = snapshot([files["data"], files["outside"], files["notes"]])
        run_model = os.path.join(root, "run", "model.keras")
        if args.smoke:
            results, loadable = _worker(cases, env, root, args.timeout)
        else:
            results = []
            for name, argv_, prepare in cases:
                if prepare:
                    PREPARE[prepare](root)
                results.append(_subprocess(name, argv_, env, args.timeout))
            loadable = _loads(run_model, env)
        lost = [p for p, digest in precious.items()
                if not os.path.exists(p) or snapshot([p]).get(p) != digest]
        lost += [] if loadable else [run_model]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    crashes = [r for r in results if r["code"] not in (0, 2)]
    tracebacks = [r for r in results if r["traceback"]]
    for r in results:
        print(f"  {r['name']:<56} exit {r['code']!s:<9} {r['seconds']:5.1f} s"
              + ("  TRACEBACK" if r["traceback"] else ""))
    for r in crashes + tracebacks:
        print(f"--- {r['name']}: {r['stderr']}")
    for path in lost:
        print(f"--- lost: {path}")
    print(f"{len(results)} inputs tried, {len(crashes)} crashes, {len(tracebacks)} "
          f"tracebacks, {len(lost)} files lost")
    return 0 if not (crashes or tracebacks or lost) else 1


def _worker(cases, env, root, timeout):
    """(results, model loadable) of the cases run by worker processes: one for all of
    them, and when a case kills its worker (a crash), a new one for the cases after."""
    results, loadable = [], False
    while cases:
        rows, loadable, died = _worker_once(cases, env, root, timeout)
        results += rows
        cases = cases[len(rows):]
        if cases:  # the next case killed or hung the worker: count it, go on without
            results.append({"name": cases[0][0], "code": died[0], "traceback": TRACEBACK
                            in died[1], "stderr": died[1][-400:], "seconds": 0.0})
            cases = cases[1:]
    return results, loadable


def _worker_once(cases, env, root, timeout):
    """Run `cases` in one worker until it ends, dies, or one case takes longer than
    `timeout` seconds (then it is killed: a hang)."""
    spec = os.path.join(root, "cases.json")
    with open(spec, "w") as fh:
        json.dump({"root": root, "cases": cases}, fh)
    errors = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", spec],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=errors,
                            stdin=subprocess.DEVNULL, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] +
                     [lines.put(None)], daemon=True).start()
    rows, loadable, code = [], False, None
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            code = "timeout"
            break
        if line is None:
            break
        if line.startswith("{"):
            row = json.loads(line)
            loadable = loadable or bool(row.get("model_loadable"))
            rows += [row] if "name" in row else []
    proc.wait()
    errors.seek(0)
    stderr = errors.read() if code is None else "hang"
    errors.close()
    return rows, loadable, (code or f"died ({proc.returncode})", stderr)


def _subprocess(name, argv, env, timeout):
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "transferkit", *argv], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"name": name, "code": "timeout", "traceback": False, "stderr": "hang",
                "seconds": timeout}
    return {"name": name, "code": done.returncode, "traceback": TRACEBACK in done.stderr,
            "stderr": done.stderr[-400:], "seconds": time.perf_counter() - start}


def _loads(path, env):
    """Whether the .keras file at `path` loads in safe mode (in a fresh process)."""
    code = ("import sys, keras, transferkit; "
            "keras.saving.load_model(sys.argv[1], compile=False, safe_mode=True)")
    done = subprocess.run([sys.executable, "-c", code, path], env=env, cwd=REPO,
                          capture_output=True, timeout=300)
    return done.returncode == 0


if __name__ == "__main__":
    sys.exit(main())
