"""The target encoder: which locations of the grid predict which object.

Anchor-free and centre-sampled, as FCOS (Tian et al. 2019, with its "center sampling"):
an object belongs to the one pyramid level whose stride suits its size (its side
sqrt(w * h) nearest `CELLS_PER_OBJECT` cells of that level, on a log scale), and there
the locations whose centre lies inside the box and within `RADIUS` cells of the box
centre are its positives, the cell holding the box centre always among them (so
objects smaller than a cell are found too). A location claimed by two objects goes to
the smaller. Pure TF ops on one image: it runs in the tf.data pipeline
(`Task.encode_label`), on CPU threads, before the feature cache stores the targets.

Objects come as rows (class id, xmin, ymin, xmax, ymax), normalised xyxy, padded to a
fixed count with class id -1 (`data.annotations.pad_objects`). Targets are [L, C + 4]:
per location the one-hot class (all zero: background) and the object's box.
"""

import numpy as np
import tensorflow as tf

RADIUS = 1.5  # cells around the object's centre that may be positive (FCOS: 1.5)
CELLS_PER_OBJECT = 4.0  # an object of ~4 cells' side is at home on a level


def object_levels(objects, grid):
    """The level index of each object row [M] (int32): the one whose stride puts the
    object's side nearest CELLS_PER_OBJECT cells."""
    height, width = grid.image
    w = (objects[:, 3] - objects[:, 1]) * width
    h = (objects[:, 4] - objects[:, 2]) * height
    side = tf.sqrt(tf.maximum(w * h, 1e-6))
    strides = tf.constant(grid.strides, tf.float32)
    distance = tf.abs(tf.math.log(side[:, None] / (CELLS_PER_OBJECT * strides[None])))
    return tf.argmin(distance, axis=1, output_type=tf.int32)


def assign(objects, grid, num_classes):
    """Dense targets float32 [L, C + 4] of one image's `objects` [M, 5] on `grid`."""
    objects = tf.cast(tf.convert_to_tensor(objects), tf.float32)
    ids, boxes = tf.cast(tf.round(objects[:, 0]), tf.int32), objects[:, 1:5]
    valid = (ids >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    centres = tf.constant(grid.centres())  # [L, 2]
    cells = tf.constant(grid.cell_sizes())  # [L, 2]
    levels = tf.constant(grid.level_ids())  # [L]
    cx, cy = centres[:, :1], centres[:, 1:]  # [L, 1]
    ox = (boxes[None, :, 0] + boxes[None, :, 2]) / 2  # [1, M]
    oy = (boxes[None, :, 1] + boxes[None, :, 3]) / 2
    dx, dy = tf.abs(cx - ox), tf.abs(cy - oy)  # [L, M]
    inside = ((cx > boxes[None, :, 0]) & (cx < boxes[None, :, 2])
              & (cy > boxes[None, :, 1]) & (cy < boxes[None, :, 3]))
    near = (dx <= RADIUS * cells[:, :1]) & (dy <= RADIUS * cells[:, 1:])
    # The cell holding the centre; on a shared edge both neighbours take it.
    home = (dx <= cells[:, :1] / 2) & (dy <= cells[:, 1:] / 2)
    on_level = levels[:, None] == object_levels(objects, grid)[None]
    positive = valid[None] & on_level & ((inside & near) | home)  # [L, M]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cost = tf.where(positive, area[None], np.inf)
    winner = tf.argmin(cost, axis=1, output_type=tf.int32)  # [L]
    found = tf.reduce_any(positive, axis=1)[:, None]
    classes = tf.one_hot(tf.gather(tf.maximum(ids, 0), winner), num_classes)
    return tf.where(found, tf.concat([classes, tf.gather(boxes, winner)], axis=1), 0.0)


def encode(objects, grid, num_classes):
    """One image's training target float32 [M + L, C + 4]: its object rows first
    (class id, box, zeros; what scoring reads), then the dense targets (`assign`; what
    the loss reads). grid None: the object rows alone (scoring needs no grid)."""
    objects = tf.cast(tf.convert_to_tensor(objects), tf.float32)
    rows = tf.pad(objects, [[0, 0], [0, num_classes + 4 - 5]])
    if grid is None:
        return rows
    return tf.concat([rows, assign(objects, grid, num_classes)], axis=0)
