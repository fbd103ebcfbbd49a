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

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, {
    **dict.fromkeys(("BOX_WEIGHT", "EVAL_SCORE_THRESHOLD", "INPUT_SCALE", "DetectionConfig"),
                    f"{__name__}.config"),
    **dict.fromkeys(("Grid", "feature_grid"), f"{__name__}.grid"),
    **dict.fromkeys(("OUTPUT", "build_detector"), f"{__name__}.head"),
    **dict.fromkeys(("DetectionLoss", "paired_iou", "positive_iou"), f"{__name__}.loss"),
    **dict.fromkeys(("detect_one", "postprocess"), f"{__name__}.postprocess"),
    **dict.fromkeys(("assign", "encode"), f"{__name__}.targets")})
