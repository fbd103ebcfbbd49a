"""A plain MediaPipe Tasks client, run as a script by tests/deploy/test_mediapipe.py: it loads
exported .tflite files as they are (no labels, no options from transferkit) and prints
what MediaPipe makes of image files, as JSON.

    python mediapipe_client.py JOBS.json   # [{"model", "kind", "images", "masks"}, ...]

kind "classifier": vision.ImageClassifier, every category (name, score) per image of
head 0, and the further heads' names and categories (a novelty output).
kind "segmenter": vision.ImageSegmenter's category mask per image, saved as .npy at the
job's "masks" paths, and the segmenter's labels.
kind "detector": vision.ObjectDetector's detections per image (category name, score,
box in pixels), with the options it reads from the file (score threshold, labels).
Only mediapipe, numpy and the standard library are imported: TensorFlow and transferkit
are blocked, so this proves a client without them loads the files.
"""

import json
import sys

sys.modules["tensorflow"] = None  # mediapipe uses TF when present; a client may lack it
sys.modules["transferkit"] = None

import mediapipe as mp  # noqa: E402
import numpy as np  # noqa: E402
from mediapipe.tasks.python import vision  # noqa: E402
from mediapipe.tasks.python.core.base_options import BaseOptions  # noqa: E402


def classify(job):
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=job["model"]))
    rows, heads, more = [], [], []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in job["images"]:
            result = classifier.classify(mp.Image.create_from_file(path))
            rows.append([[c.category_name, c.score]
                         for c in result.classifications[0].categories])
            heads = [h.head_name for h in result.classifications]
            more.append([[[c.category_name, c.score] for c in h.categories]
                         for h in result.classifications[1:]])
    return {"categories": rows, "heads": heads, "more_heads": more}


def segment(job):
    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=job["model"]),
        output_category_mask=True, output_confidence_masks=False)
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        for path, out in zip(job["images"], job["masks"]):
            result = segmenter.segment(mp.Image.create_from_file(path))
            np.save(out, np.asarray(result.category_mask.numpy_view()).squeeze())
        return {"labels": list(segmenter.labels)}


def detect(job):
    """Every detection MediaPipe reports per image: (category name, score, box as
    [xmin, ymin, xmax, ymax] in the image's pixels)."""
    options = vision.ObjectDetectorOptions(
        base_options=BaseOptions(model_asset_path=job["model"]))
    rows = []
    with vision.ObjectDetector.create_from_options(options) as detector:
        for path in job["images"]:
            result = detector.detect(mp.Image.create_from_file(path))
            rows.append([[d.categories[0].category_name, d.categories[0].score,
                          [d.bounding_box.origin_x, d.bounding_box.origin_y,
                           d.bounding_box.origin_x + d.bounding_box.width,
                           d.bounding_box.origin_y + d.bounding_box.height]]
                         for d in result.detections])
    return {"detections": rows}


KINDS = {"classifier": classify, "segmenter": segment, "detector": detect}


def main(jobs_file):
    with open(jobs_file) as f:
        jobs = json.load(f)
    results = [KINDS[job["kind"]](job) for job in jobs]
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
