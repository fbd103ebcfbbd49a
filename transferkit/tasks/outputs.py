"""What a task declares about its exported output, for the deploy package to write.

A `Task` says what its .tflite output tensor is (`Task.tflite_output`); the deploy
package (`deploy.tflite_metadata`) turns that into MediaPipe/TFLite model metadata.
The declaration lives here, with the tasks, so tasks never import deploy code.

A "detections" file has four outputs, the ones MediaPipe Tasks' ObjectDetector reads
(its order and names, `DETECTION_OUTPUTS`): locations [1, N, 4], categories [1, N],
scores [1, N] and the number of detections [1], all float32; the task computes them in
the graph (`Task.tflite_detections`). `detections_as_outputs` reads them back in the
dense layout [B, N, C + 4] of the model's own output (one location per detection), so
predict, evaluate and `export --check` score a file through the task's usual
post-processing, which gives back exactly the file's detections.
"""

import dataclasses

import numpy as np

from transferkit.core.errors import TransferkitError, check_choice

OUTPUT_KINDS = ("scores", "mask", "values", "detections")

# A "detections" file's outputs in MediaPipe's order: the names in its signature (what
# `deploy.tflite_metadata` orders the graph's outputs by), and in its metadata the
# names MediaPipe's ObjectDetector looks the tensors up by.
DETECTION_OUTPUTS = ("location", "category", "score", "number_of_detections")
DETECTION_METADATA_NAMES = ("location", "category", "score", "number of detections")
# The MediaPipe Tasks API that runs a file of each output kind (others: none does).
MEDIAPIPE_APIS = {"scores": "ImageClassifier", "mask": "ImageSegmenter",
                  "detections": "ObjectDetector"}


@dataclasses.dataclass(frozen=True)
class TfliteOutput:
    """What a model's output tensor is, for its metadata (a Task says: `tflite_output`).

    kind: "scores" (per-class scores [1, N] in 0..1: a classifier), "mask" (per-pixel
        class scores [1, H, W, C]: a segmenter), "detections" (the four outputs of
        `DETECTION_OUTPUTS`, computed by `Task.tflite_detections`: a detector) or
        "values" (anything else).
    description: one sentence a person reading the metadata needs.
    labels: the class names (a TENSOR_AXIS_LABELS file along the last axis, one per
        line; for "detections" a TENSOR_VALUE_LABELS file the category values index);
        None: no labels file.
    score_threshold: for "scores" and "detections", the score a class or detection
        needs to be reported (a ScoreThresholdingOptions process unit, which MediaPipe
        applies; None: none).
    float_layers: names of the model's layers an int8 file keeps in float32, with
        every operation after them (the post-processing always is): where int8 would
        move what the file reports, e.g. a dense head's box predictor, whose location
        int8 changes where neighbouring locations' scores tie (default: none).
    """

    kind: str
    description: str
    labels: tuple = None
    score_threshold: float = None
    float_layers: tuple = ()

    def __post_init__(self):
        check_choice("kind", self.kind, OUTPUT_KINDS)

    @property
    def mediapipe_api(self):
        """The MediaPipe Tasks API that runs a file with this output (None: none)."""
        return MEDIAPIPE_APIS.get(self.kind)

    @property
    def batch(self):
        """The batch size the file is built for: 1 for "detections" (MediaPipe reads
        [1, N, ...] outputs, and the post-processing is per image), else None (any)."""
        return 1 if self.kind == "detections" else None


def detections_as_outputs(found, num_classes):
    """A "detections" file's outputs ({name of DETECTION_OUTPUTS: array}, batch first)
    as [B, N, num_classes + 4] rows of the dense layout: row i of an image holds its
    detection i, the score at its class (0 elsewhere) and its box; rows past the
    number of detections are 0. Best class per row, score threshold and non-max
    suppression then keep every detection as it is (their scores pass the threshold
    they were kept at, and boxes that survived NMS do not suppress each other)."""
    boxes = np.asarray(found["location"], np.float32)
    classes = np.rint(np.asarray(found["category"], np.float32)).astype(np.int64)
    scores = np.asarray(found["score"], np.float32)
    counts = np.asarray(found["number_of_detections"], np.float32).reshape(-1)
    num_classes = int(num_classes)
    batch, rows = scores.shape
    out = np.zeros((batch, rows, num_classes + 4), np.float32)
    for i, count in enumerate(np.rint(counts).astype(np.int64)):
        n = int(min(max(count, 0), rows))
        ids = classes[i, :n]
        if n and not 0 <= ids.min() <= ids.max() < num_classes:
            raise TransferkitError(f"A detection's category {int(ids.max())} is outside "
                                   f"0..{num_classes - 1} (the file's {num_classes} labels).")
        out[i, np.arange(n), ids] = scores[i, :n]
        out[i, :n, -4:] = boxes[i, :n]
    return out
