"""`DetectionConfig`: the dense box head and its post-processing, as recipe keys."""

import dataclasses

from transferkit.core.config import setting
from transferkit.core.errors import ConfigError

# Evaluation scores every detection above this (COCO practice: mAP integrates the whole
# precision-recall curve, which a display threshold would cut short).
EVAL_SCORE_THRESHOLD = 0.05
# The CIoU term against the focal term in `DetectionLoss` (the `box_weight` recipe key).
BOX_WEIGHT = 2.0
# A dense box head's default input side against its backbone's (`resolve_input`'s
# scale): EfficientDet-Lite0 runs EfficientNet-Lite0 (224 px) at 320 px, since boxes of
# small objects need more cells than a class does. Measured on the detection benchmark
# (`benchmarks/detection.py --part detection`, docs/detection.md): COCO mAP at 224 px
# below 0.5, at 320 px above it.
INPUT_SCALE = 10 / 7


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
    """The dense head (detection and localization) and what post-processing keeps
    (detection): defaults 64 filters, score >= 0.25, at most 100 per image, NMS at
    IoU 0.5."""

    width: int = setting(64, "detection and localization: filters of the dense head's "
                         "lateral, top-down and tower convolutions", key="detection_width")
    score_threshold: float = setting(
        0.25, "detection: the score a detection needs to be reported by predict, the "
        "SavedModel and TFLite (evaluate scores all above "
        f"{EVAL_SCORE_THRESHOLD} for mAP)")
    max_detections: int = setting(100, "detection: most detections reported per image")
    nms_iou: float = setting(0.5, "detection: non-max suppression drops a box of the "
                             "same class overlapping a better one above this IoU")

    def __post_init__(self):
        if self.width < 1 or self.max_detections < 1 or not 0 <= self.score_threshold < 1 \
                or not 0 < self.nms_iou <= 1:
            raise ConfigError(
                "The detection settings should have detection_width >= 1, "
                "max_detections >= 1, score_threshold in [0, 1) and nms_iou in (0, 1]. "
                f"Received: detection_width={self.width}, max_detections="
                f"{self.max_detections}, score_threshold={self.score_threshold}, "
                f"nms_iou={self.nms_iou}")
