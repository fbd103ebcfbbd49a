"""Each benchmark script runs end to end with --smoke and prints its side-by-side ratios.

Smoke runs use a handful of tiny images, so their figures mean nothing: only that every
code path of the full run still works and still prints its lines is checked here.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = r"[\d.]+"

# script -> patterns its output must contain
EXPECTED = {
    "cache.py": [
        rf"cached, no aug: per-epoch ratio live / cached {NUMBER}x .* over 2 epochs with "
        rf"extraction {NUMBER}x",
        rf"cached, clean \+ 1 \(light aug\): per-epoch ratio live / cached {NUMBER}x",
    ],
    "end_to_end.py": [
        rf"keras guide  total +{NUMBER} s   val acc per epoch: ",
        rf"transferkit  total +{NUMBER} s   val acc per epoch: ",
        # a few noisy val images may leave the headline target out of reach: n/a then
        rf"headline: target = the guide's best .*\n  (wall: guide {NUMBER} s / "
        rf"transferkit {NUMBER} s = {NUMBER}x.*CPU s .*= {NUMBER}x|guide {NUMBER} s; "
        r"transferkit does not reach it .* ratio: n/a)",
        rf"phase 2 per epoch .*: live {NUMBER} s / boundary-cached {NUMBER} s = "
        rf"{NUMBER}x",
        rf"boundary cache: {NUMBER} MiB on disk .* peak RSS",
        rf"transferkit's final model: val accuracy {NUMBER} \(flip TTA (not )?kept: "
        rf"{NUMBER} without, {NUMBER} with\)",
        rf"transferkit's whole run {NUMBER} s / its floor {NUMBER} s \(the model built "
        rf"and one backbone pass per image and view, \d+ passes, in this process\) = "
        rf"{NUMBER}x",
        rf"transferkit's whole run / its floor: {NUMBER} ± {NUMBER}x",
        rf"over 1 seed\(s\) \[0\] .*\n  keras guide  {NUMBER} ± {NUMBER} \({NUMBER}-"
        rf"{NUMBER}\)   wall +{NUMBER} s mean\n  transferkit  {NUMBER} ± {NUMBER} "
        rf"\({NUMBER}-{NUMBER}\)   wall +{NUMBER} s mean",
    ],
    "doctor.py": [rf"source checkpoint .*: flips precision {NUMBER} ± {NUMBER}, recall "
                  rf"{NUMBER} ± {NUMBER} over 1 planting\(s\); leaks found \d+/5; doctor "
                  rf"{NUMBER} s = {NUMBER}x one live phase-1 epoch",
                  r"efficientnet_lite0 with its ImageNet weights .*: flips precision"],
    "open_world.py": [rf"unknown 'ring' vs known test images: AUROC {NUMBER} ± {NUMBER}",
                      rf"add-class 'ring': old classes {NUMBER} ± {NUMBER} -> {NUMBER} ± "
                      rf"{NUMBER}, new recall {NUMBER} ± {NUMBER}; time add-class .* = "
                      rf"{NUMBER}x",
                      r"efficientnet_lite0 with its ImageNet weights \(32 px\), 1 seed"],
    "adversarial.py": [r"\d+ inputs tried, 0 crashes, 0 tracebacks, 0 files lost"],
    "export_formats.py": [
        r"seed 0:\nartifact .*\nsource model.keras .* ok\n",
        *(rf"{fmt} +{NUMBER} +{NUMBER} ± {NUMBER} +{NUMBER} ± {NUMBER} +{NUMBER} +"
          rf"{NUMBER}\n"
          for fmt in ("keras", "savedmodel", "tflite fp32", "tflite fp16",
                      "tflite int8"))],
    "segmentation.py": [rf"mIoU ratio transfer / scratch \(mean of 1 seed\(s\)\): "
                        rf"{NUMBER}x"],
    "localization.py": [
        rf"transfer \(mean of 1 seed\(s\)\): accuracy {NUMBER}, mean_iou {NUMBER}, "
        rf"correct_iou50 {NUMBER}",
        rf"scratch \(mean of 1 seed\(s\)\): accuracy {NUMBER}, mean_iou {NUMBER}"],
    "detection.py": [
        rf"anchors +: {NUMBER}% of all, {NUMBER}% of the smallest third",
        rf"centre sampling : {NUMBER}% of all",
        rf"detection transfer \(mean of 1 seed\(s\)\): mAP {NUMBER} ± {NUMBER} "
        rf"\({NUMBER}-{NUMBER}\), AP50 {NUMBER} ± {NUMBER}",
        rf"mAP ratio transfer / scratch \(mean of 1 seed\(s\)\): {NUMBER}x",
        *(rf"MediaPipe ObjectDetector agreement, images at their {where} \(mean of 1 "
          rf"seed\(s\), IoU >= 0.9\): fp32 {NUMBER} ± {NUMBER} .*, int8 {NUMBER} ± "
          for where in ("own size", "same pixels", "input size")),
        rf"own size whole-pixel truncation IoU>=0.9 {NUMBER}%",
        rf"localization \(mean of 1 seed\(s\)\): accuracy {NUMBER} ± {NUMBER} .*, mean "
        rf"box IoU {NUMBER} ± {NUMBER} .*, predict boxes vs CSV {NUMBER} ± {NUMBER}",
        rf"variant localization \(5 classes, .*\): accuracy {NUMBER}, mean box IoU "
        rf"{NUMBER}",
        rf"variant detection \(4 classes, .*\): mAP {NUMBER}, AP50 {NUMBER}",
        rf"phase 1 per epoch: live {NUMBER} s / cached maps {NUMBER} s = {NUMBER}x"],
    "kill_harness.py": [r"killed at save .*\n", r"1/1 runs survived",
                        r"5 kills, all files loadable: yes, next run completed: yes"],
    "pipeline.py": [
        rf"\(a\) pipeline throughput: tuned {NUMBER} img/s, naive {NUMBER} img/s, ratio "
        rf"{NUMBER}x",
        rf"\(b\) frozen MobileNetV2 .* ratio {NUMBER}",
        rf"peak at 100 / peak at 50 images: {NUMBER}",
        rf"\(d\) skip counting, .* ratio with / without {NUMBER}",
    ],
    "startup.py": [
        rf"  python -c pass +{NUMBER} s\n",
        *(rf"  transferkit {cmd} +{NUMBER} s = {NUMBER}x python -c pass \(\+{NUMBER} s\)"
          for cmd in (r"--help", r"train --help", r"recipes")),
        rf"  import tensorflow +{NUMBER} s = {NUMBER}x python -c pass",
        rf"transferkit --help under 1 s: (yes|no) \({NUMBER} s; {NUMBER}x faster"],
    "stages.py": [
        rf"  start-up +{NUMBER} ± {NUMBER} +\d+% +{NUMBER} ± {NUMBER}",
        rf"  extraction +{NUMBER} ± {NUMBER} +\d+% ",
        rf"floor \(imports, the model, one backbone pass per image and view: \d+ passes\)",
        rf"whole run / floor: wall {NUMBER} ± {NUMBER}x, CPU {NUMBER} ± {NUMBER}x",
        r"the run's own summary \(seed 0\): time: [\d.]+ s: start-up ",
    ],
    "add_class.py": [
        rf"seed 0: add-class {NUMBER} s / train on all 5 {NUMBER} s = {NUMBER}x wall",
        rf"add-class / train = {NUMBER} ± {NUMBER}x wall, {NUMBER} ± {NUMBER}x CPU",
    ],
    "tuning_memory.py": [
        rf"  {mode} +({NUMBER} +)+growth trial 2 -> 2: [+-]{NUMBER} MiB"
        for mode in ("isolated", "cleared", "kept")
    ],
}

# Benchmarks with a real-weights mode (EfficientNet-Lite0's ImageNet weights, offline):
# its smoke run too, checked for the same lines and for the backbone it names.
# end_to_end's README run also sets transferkit's augmentation and LR finder: smoke-run
# those flags here too.
IMAGENET_FLAGS = {"cache.py": ("--imagenet",),
                  "end_to_end.py": ("--imagenet", "--kit-augment", "none", "--lr-auto",
                                    "finetune")}
IMAGENET = {script: EXPECTED[script] + [r"efficientnet_lite0 with its ImageNet weights"]
            for script in IMAGENET_FLAGS}
IMAGENET["end_to_end.py"].append(r"transferkit's augment: none, LR finder: finetune")
# end_to_end's smoke runs with those flags only: its plain run goes through the same
# code with another backbone, and a minute of the CI's slow run is a minute.
REAL_WEIGHTS_ONLY = {"end_to_end.py"}
RUNS = [(script, ()) for script in sorted(EXPECTED) if script not in REAL_WEIGHTS_ONLY] + \
    [(script, flags) for script, flags in sorted(IMAGENET_FLAGS.items())]
# The longest smoke runs (1-2 min each) are tests of a second module,
# test_benchmarks_long.py: the test run hands out whole modules to its two workers
# (--dist loadfile), so each module's share of the smoke runs goes to one of them.
LONG = {"kill_harness.py", "detection.py", "add_class.py", "open_world.py",
        "tuning_memory.py", "startup.py"}
LONG_RUNS = [run for run in RUNS if run[0] in LONG]
SHORT_RUNS = [run for run in RUNS if run[0] not in LONG]


def run_ids(runs):
    return [" ".join((script, *flags)) for script, flags in runs]


def run_smoke(script, flags, tmp_path):
    """Run `script --smoke *flags` as a whole process and check its output's lines."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3",
           "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, os.path.join("benchmarks", script), "--smoke",
                           *flags], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for pattern in (IMAGENET if flags else EXPECTED)[script]:
        assert re.search(pattern, done.stdout), f"no match for {pattern!r} in:\n{output}"


def test_every_benchmark_has_a_smoke_run_here():
    scripts = {n for n in os.listdir(os.path.join(REPO, "benchmarks")) if n.endswith(".py")}
    assert scripts == set(EXPECTED), scripts ^ set(EXPECTED)


def test_the_smoke_runs_are_split_between_the_two_modules():
    assert sorted(SHORT_RUNS + LONG_RUNS) == sorted(RUNS) and LONG <= set(EXPECTED)


# 20-40 s each: marked slow to keep the default run short; CI runs `-m slow` too, so
# every benchmark's smoke run is checked on every landing.
@pytest.mark.slow
@pytest.mark.parametrize("script,flags", SHORT_RUNS, ids=run_ids(SHORT_RUNS))
def test_benchmark_smoke(script, flags, tmp_path):
    run_smoke(script, flags, tmp_path)
