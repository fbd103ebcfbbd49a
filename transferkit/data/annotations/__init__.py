"""Annotations: images with any number of boxed objects, read from the usual formats.

    from transferkit.data.annotations import read_objects, pad_objects
    paths, labels, problems, names = read_objects("data/shapes/boxes.csv")
    rows = pad_objects(labels, names or sorted({o.label for l in labels
                                                for o in l.objects}))

Sources (`read_objects` tells the format from the source):
  "boxes.csv"  one row per object `path,label,xmin,ymin,xmax,ymax`, the box in pixels
               of the image; paths relative to the CSV; optional header; a row with the
               path alone lists an image without objects ("dir/" holding boxes.csv too)
Boxes are in pixels of the upright image (EXIF rotation applied, as the pipeline shows
it) and stored normalised xyxy by the image's own width and height: the pipeline
resizes every image to the model input without keeping its aspect ratio, so a
normalised box is the same in the image and in the model input.

Nothing opens a listed image before the guarded read (`guarded.image_size`): a FIFO,
device or oversized file is a problem, never a hang.
"""

from transferkit.data.annotations.model import ImageObjects, Obj, drop_unknown
from transferkit.data.annotations.padding import (MAX_BOXES, PAD_CLASS, choose_max_boxes,
                                                  pad_objects)
from transferkit.data.annotations.read import read_objects

__all__ = ["ImageObjects", "MAX_BOXES", "Obj", "PAD_CLASS", "choose_max_boxes",
           "drop_unknown", "pad_objects", "read_objects"]
