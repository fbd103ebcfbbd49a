"""Dense box prediction on a backbone's feature pyramid, in four separate pieces over
one grid of locations (as detection libraries split FCOS, CenterNet and RetinaNet):

    config.py       `DetectionConfig`: head width, score threshold, max detections, NMS
    grid.py         `Grid`, `feature_grid`: where the locations are (spec + input size)
    head.py         `build_detector`: per location class scores and a decoded box
    targets.py      the target encoder: which locations predict which object (tf.data)
    loss.py         `DetectionLoss`: focal classification + CIoU box regression
    postprocess.py  `postprocess`: best class per location, threshold, per-class NMS

`tasks.Detection` and `tasks.Localization` (one box per image) put them together.
"""

from transferkit.models.detection.config import EVAL_SCORE_THRESHOLD, DetectionConfig
from transferkit.models.detection.grid import Grid, feature_grid
from transferkit.models.detection.head import OUTPUT, build_detector
from transferkit.models.detection.loss import DetectionLoss, paired_iou, positive_iou
from transferkit.models.detection.postprocess import detect_one, postprocess
from transferkit.models.detection.targets import assign, encode

__all__ = ["DetectionConfig", "DetectionLoss", "EVAL_SCORE_THRESHOLD", "Grid", "OUTPUT", "assign", "build_detector", "detect_one",
           "encode", "feature_grid", "paired_iou", "positive_iou", "postprocess"]
