"""What a task declares of its .tflite output (`tasks.outputs`), and a detector file's
four outputs read back in the dense layout the task's post-processing takes."""

import numpy as np
import pytest

from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.core.task_registry import get_task
from transferkit.tasks.outputs import (DETECTION_OUTPUTS, TfliteOutput,
                                       detections_as_outputs)


def test_each_output_kind_names_the_mediapipe_api_that_runs_it():
    apis = {kind: TfliteOutput(kind, "x").mediapipe_api
            for kind in ("scores", "mask", "detections", "values")}
    assert apis == {"scores": "ImageClassifier", "mask": "ImageSegmenter",
                    "detections": "ObjectDetector", "values": None}
    assert TfliteOutput("detections", "x").batch == 1  # MediaPipe reads [1, N, ...]
    assert TfliteOutput("scores", "x").batch is None
    with pytest.raises(ConfigError, match="kind"):
        TfliteOutput("boxes", "x")


def test_detection_declares_mediapipes_outputs_and_localization_its_dense_one():
    detection = get_task("detection").tflite_output(["a", "b", "c"], 7)
    assert (detection.kind, detection.labels) == ("detections", ("a", "b", "c"))
    assert detection.score_threshold == get_task("detection").config.score_threshold
    assert detection.float_layers  # the head's predictors stay float in int8
    localization = get_task("localization").tflite_output(["a", "b"], 6)
    # Its predictors stay float too: near-tied locations would swap in int8.
    assert localization.kind == "values" and \
        localization.float_layers == detection.float_layers


def _found(rng, batch=3, rows=6, classes=3):
    """Random detections as a file returns them: per image `count` rows, scores
    above 0.3 best first, boxes apart (so NMS keeps all), padding after."""
    out = {name: [] for name in DETECTION_OUTPUTS}
    for _ in range(batch):
        n = int(rng.integers(0, rows + 1))
        corners = rng.uniform(0, 0.6, (n, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(0.05, 0.4, (n, 2))], 1)
        boxes = np.clip(boxes, 0, 1)
        # Same-class boxes far apart in one axis: separate them by a shift per row.
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * 0.1 + np.arange(n)[:, None] * 0.15
        pad = rows - n
        out["location"].append(np.pad(boxes, [[0, pad], [0, 0]]))
        out["category"].append(np.pad(rng.integers(0, classes, n).astype(float), [0, pad]))
        out["score"].append(np.pad(np.sort(rng.uniform(0.3, 1, n))[::-1], [0, pad]))
        out["number_of_detections"].append([float(n)])
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def test_detections_read_back_as_the_same_detections():
    """The task's post-processing of the dense rows gives back the file's detections,
    at its own threshold and at evaluate's lower one."""
    task = get_task("detection")
    rng = np.random.default_rng(0)
    for _ in range(5):
        found = _found(rng)
        rows = detections_as_outputs(found, 3)
        assert rows.shape == (3, 6, 3 + 4)
        for threshold in (None, 0.05):
            for i, (boxes, ids, scores) in enumerate(task.detections(rows, threshold)):
                n = int(found["number_of_detections"][i, 0])
                np.testing.assert_array_equal(ids, found["category"][i, :n])
                np.testing.assert_allclose(boxes, found["location"][i, :n], atol=1e-7)
                np.testing.assert_allclose(scores, found["score"][i, :n], atol=1e-7)


def test_a_category_outside_the_labels_is_refused():
    found = _found(np.random.default_rng(1), batch=1, rows=2)
    found["number_of_detections"][:] = 2
    found["category"][0, :2] = [0, 3]
    with pytest.raises(TransferkitError, match="category 3 is outside 0..2"):
        detections_as_outputs(found, 3)
