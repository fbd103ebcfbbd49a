"""Post-processing: a dense head's [B, L, C + 4] outputs -> the detections.

    {"boxes": [B, N, 4] normalised xyxy, "classes": [B, N] int32 class ids,
     "scores": [B, N] float32, "count": [B] int32}

N = max_detections; rows past an image's `count` are padding (boxes and scores 0,
class -1), sorted by score. Per location the best class is its prediction (its score
the location's score); locations under `score_threshold` are dropped, and
non-maximum suppression per class (`iou_threshold`) keeps the best of overlapping
boxes. The boxes are already decoded in the model (`head.GridBoxes`); here they are
clipped to the image. Graph ops only: `tf.image.non_max_suppression_with_scores`
converts to TFLite's builtin NON_MAX_SUPPRESSION_V5 (`combined_non_max_suppression`
would need Flex ops), so the same function serves predict, evaluate, the SavedModel
and a .tflite file (batch 1: `detect_one`).
"""

import tensorflow as tf

# Class-aware NMS in one call: each class's boxes moved this far apart (normalised
# boxes span at most 1), so boxes of different classes never overlap.
CLASS_OFFSET = 2.0
# Per location index, subtracted from the scores NMS ranks by (not those reported):
# above float32's spacing of scores in [0.25, 1), far under any score difference that
# matters (1e-4 over a thousand locations).
TIE_BREAK = 1e-7


def detect_one(outputs, *, score_threshold, max_detections, iou_threshold=0.5):
    """One image's detections from its outputs [L, C + 4]: boxes [N, 4], classes [N],
    scores [N], count [] (see the module docstring)."""
    outputs = tf.cast(outputs, tf.float32)
    classes_all = outputs[:, :-4]
    boxes = tf.clip_by_value(outputs[:, -4:], 0.0, 1.0)
    scores = tf.reduce_max(classes_all, axis=1)
    classes = tf.argmax(classes_all, axis=1, output_type=tf.int32)
    shifted = boxes + CLASS_OFFSET * tf.cast(classes, tf.float32)[:, None]
    # Exact ties (the locations of a flat region score alike) broken by location, so
    # TF's and TFLite's NMS kernels, which order tied scores differently, keep the
    # same boxes; the threshold is applied to the scores themselves.
    ranked = tf.where(scores > score_threshold,
                      scores - TIE_BREAK * tf.range(tf.shape(scores)[0], dtype=tf.float32),
                      -1.0)
    # NMS takes (y1, x1, y2, x2); IoU is the same for x and y swapped. Padded to
    # max_detections with the count beside: TFLite's kernel always pads, and the
    # converter takes the length of an unpadded result for max_detections, so counting
    # the kept rows with tf.shape would report max_detections in a .tflite file.
    keep, _, count = tf.raw_ops.NonMaxSuppressionV5(
        boxes=shifted, scores=ranked, max_output_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=-0.5, soft_nms_sigma=0.0,
        pad_to_max_output_size=True)
    valid = tf.range(max_detections) < count
    return {"boxes": tf.where(valid[:, None], tf.gather(boxes, keep), 0.0),
            "classes": tf.where(valid, tf.gather(classes, keep), -1),
            "scores": tf.where(valid, tf.gather(scores, keep), 0.0),
            "count": count}


def postprocess(outputs, *, score_threshold, max_detections, iou_threshold=0.5):
    """The detections of a batch of outputs [B, L, C + 4] (see the module docstring)."""
    outputs = tf.convert_to_tensor(outputs, tf.float32)
    n = int(max_detections)
    signature = {"boxes": tf.TensorSpec([n, 4], tf.float32),
                 "classes": tf.TensorSpec([n], tf.int32),
                 "scores": tf.TensorSpec([n], tf.float32),
                 "count": tf.TensorSpec([], tf.int32)}
    return tf.map_fn(lambda row: detect_one(row, score_threshold=score_threshold,
                                            max_detections=n,
                                            iou_threshold=iou_threshold),
                     outputs, fn_output_signature=signature)
