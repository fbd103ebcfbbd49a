"""Detections scored the standard way: COCO mAP@[.5:.95], AP50, AP75 and per-class AP
(pycocotools' own COCOeval), and a greedy match at one score threshold for precision,
recall and each image's errors.

Detections and objects are per image: (boxes [n, 4] normalised xyxy, class ids [n],
scores [n]) and (boxes [m, 4], class ids [m]). IoU does not change when both axes are
scaled, so normalised boxes score as pixel boxes would; they are handed to COCOeval
on a 1000 x 1000 canvas (only its "all" area range is reported).
"""

import contextlib
import io

import numpy as np

from transferkit.tasks.boxes import iou_matrix

CANVAS = 1000.0
IOU_50 = 0.5


def _xywh(boxes):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * CANVAS
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_eval(detections, objects, num_classes):
    """{"map", "ap50", "ap75", "per_class": {id: {"ap", "ap50", "support"}},
    "pr_curve": {"recall": [101], "precision": {id: [101]}}} by COCOeval (maxDets
    100). Classes without objects get AP nan; no objects at all: every AP nan."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, ((boxes, ids), (d_boxes, d_ids, d_scores)) in enumerate(zip(objects,
                                                                        detections)):
        images.append({"id": i, "width": CANVAS, "height": CANVAS})
        for box, cid in zip(_xywh(boxes), ids):
            annotations.append({"id": len(annotations) + 1, "image_id": i,
                                "category_id": int(cid) + 1, "bbox": box.tolist(),
                                "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, cid, score in zip(_xywh(d_boxes), d_ids, d_scores):
            results.append({"image_id": i, "category_id": int(cid) + 1,
                            "bbox": box.tolist(), "score": float(score)})
    support = np.bincount([a["category_id"] - 1 for a in annotations],
                          minlength=num_classes)
    recall = np.linspace(0.0, 1.0, 101)
    empty = {"map": np.nan, "ap50": np.nan, "ap75": np.nan,
             "per_class": {k: {"ap": np.nan, "ap50": np.nan, "support": int(support[k])}
                           for k in range(num_classes)},
             "pr_curve": {"recall": recall.tolist(), "precision": {}}}
    if not annotations:
        return empty
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations,
                     "categories": [{"id": k + 1} for k in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints as it goes
        truth.createIndex()
        if not results:  # loadRes refuses an empty list; nothing found: AP 0
            return {**empty, "map": 0.0, "ap50": 0.0, "ap75": 0.0, "per_class": {
                k: {"ap": 0.0 if support[k] else np.nan,
                    "ap50": 0.0 if support[k] else np.nan, "support": int(support[k])}
                for k in range(num_classes)}}
        found = truth.loadRes(results)
        evaluator = COCOeval(truth, found, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [IoU, recall, class]

    def ap(values):
        values = values[values > -1]
        return float(values.mean()) if values.size else np.nan

    stats = evaluator.stats
    return {"map": float(stats[0]), "ap50": float(stats[1]), "ap75": float(stats[2]),
            "per_class": {k: {"ap": ap(precision[:, :, k]), "ap50": ap(precision[0, :, k]),
                              "support": int(support[k])} for k in range(num_classes)},
            "pr_curve": {"recall": recall.tolist(), "precision": {
                k: np.clip(precision[0, :, k], 0, None).tolist()
                for k in range(num_classes) if support[k]}}}


def match(detections, objects, iou=IOU_50):
    """Greedy matching of one image's detections (best score first) to its objects
    of the same class at IoU >= `iou`: (matched flag per detection, per object)."""
    d_boxes, d_ids, d_scores = detections
    boxes, ids = objects
    hit_d = np.zeros(len(d_ids), bool)
    hit_o = np.zeros(len(ids), bool)
    if not len(d_ids) or not len(ids):
        return hit_d, hit_o
    ious = iou_matrix(d_boxes, boxes)
    ious[np.asarray(d_ids)[:, None] != np.asarray(ids)[None]] = 0.0
    for d in np.argsort(-np.asarray(d_scores), kind="stable"):
        candidates = np.where(~hit_o & (ious[d] >= iou), ious[d], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= iou:
            hit_d[d], hit_o[best] = True, True
    return hit_d, hit_o
