"""What a task declares about its exported output, for the deploy package to write.

A `Task` says what its .tflite output tensor is (`Task.tflite_output`); the deploy
package (`deploy.tflite_metadata`) turns that into MediaPipe/TFLite model metadata.
The declaration lives here, with the tasks, so tasks never import deploy code.
"""

import dataclasses

from transferkit.core.errors import check_choice

OUTPUT_KINDS = ("scores", "mask", "values")


@dataclasses.dataclass(frozen=True)
class TfliteOutput:
    """What a model's output tensor is, for its metadata (a Task says: `tflite_output`).

    kind: "scores" (per-class scores [1, N] in 0..1: a classifier), "mask" (per-pixel
        class scores [1, H, W, C]: a segmenter) or "values" (anything else).
    description: one sentence a person reading the metadata needs.
    labels: the names along the last axis, written as a TENSOR_AXIS_LABELS file (one
        per line); None: no labels file.
    score_threshold: for "scores", the score a class needs to be reported (a
        ScoreThresholding process unit; None: none).
    """

    kind: str
    description: str
    labels: tuple = None
    score_threshold: float = None

    def __post_init__(self):
        check_choice("kind", self.kind, OUTPUT_KINDS)
