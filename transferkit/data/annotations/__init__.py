"""Annotations: images with any number of boxed objects, read from the usual formats.

    from transferkit.data.annotations import read_objects, pad_objects
    paths, labels, problems, names = read_objects("data/shapes/boxes.csv")
    rows = pad_objects(labels, names or sorted({o.label for l in labels
                                                for o in l.objects}))

Sources (`read_objects` tells the format from the source):
  "boxes.csv"   one row per object `path,label,xmin,ymin,xmax,ymax`, the box in
                pixels; paths relative to the CSV; optional header; a row with the path
                alone lists an image without objects (`table`). Also .tsv and .txt.
  "x.json"      COCO instances: images, annotations with bbox [x, y, w, h] in pixels,
                categories; crowd annotations left out (`coco`)
  "data.yaml"   YOLO: labels/*.txt rows `class cx cy w h` normalised, names in the yaml;
                its 'train' split (`split_sources` gives every split, `YoloSplit` one)
  "dir/"        a folder holding boxes.csv, a data.yaml, images/ and labels/ (YOLO), one
                COCO .json (or one in annotations/), or else Pascal VOC XML files at
                any depth (`voc`, parsed with defusedxml): tried in that order
Boxes are in pixels of the upright image (EXIF rotation applied, as the pipeline shows
it) and stored normalised xyxy by the image's own width and height: the pipeline
resizes every image to the model input without keeping its aspect ratio, so a
normalised box is the same in the image and in the model input.

Nothing opens a listed image before the guarded read (`guarded.image_size`): a FIFO,
device or oversized file is a problem, never a hang.
"""

from transferkit.data.annotations.model import ImageObjects, Obj, drop_unknown
from transferkit.data.annotations.padding import (MAX_BOXES, PAD_CLASS, check_rows,
                                                  choose_max_boxes, pad_objects)
from transferkit.data.annotations.read import read_objects, sniff, split_sources
from transferkit.data.annotations.yolo import YoloSplit

__all__ = ["ImageObjects", "MAX_BOXES", "Obj", "PAD_CLASS", "YoloSplit", "check_rows",
           "choose_max_boxes", "drop_unknown", "pad_objects", "read_objects", "sniff",
           "split_sources"]
