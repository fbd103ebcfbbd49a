"""The grid of locations a dense head predicts at: decided once, from the backbone's
spec and the input size, and shared by the model, the target encoder and the loss.

A level of stride s on an H x W input has ceil(H / s) x ceil(W / s) locations (what a
"same"-padded network's map at that stride has; the model resizes any other map to
it). Location (i, j) sits at the centre of its cell, ((j + 0.5) s, (i + 0.5) s) in
pixels; normalised coordinates divide by the input's width and height. Locations are
numbered level by level, shallow (fine) first, row-major inside a level: the order of
the model's output rows.
"""

import dataclasses
import math

import numpy as np

from transferkit.core.errors import ConfigError
from transferkit.models.registry import get_spec


@dataclasses.dataclass(frozen=True)
class Grid:
    """The locations of a dense head: `image` (height, width) of the model input, and
    `levels`, one (height, width, stride) per feature level, fine to coarse."""

    image: tuple
    levels: tuple

    def __post_init__(self):
        object.__setattr__(self, "image", tuple(int(v) for v in self.image))
        object.__setattr__(self, "levels", tuple(tuple(int(v) for v in level)
                                                 for level in self.levels))
        if not self.levels or any(min(level) < 1 for level in self.levels):
            raise ConfigError(f"A Grid needs one or more levels of positive sizes and "
                              f"strides. Received: levels={self.levels}")

    @property
    def size(self):
        """Locations in all (the model's output rows)."""
        return sum(h * w for h, w, _ in self.levels)

    @property
    def strides(self):
        return tuple(s for _, _, s in self.levels)

    def centres(self):
        """Normalised (x, y) of every location's centre, float32 [size, 2]."""
        height, width = self.image
        out = []
        for h, w, s in self.levels:
            ys, xs = np.meshgrid((np.arange(h) + 0.5) * s / height,
                                 (np.arange(w) + 0.5) * s / width, indexing="ij")
            out.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
        return np.concatenate(out).astype(np.float32)

    def level_ids(self):
        """Each location's level index, int32 [size]."""
        return np.concatenate([np.full(h * w, i, np.int32)
                               for i, (h, w, _) in enumerate(self.levels)])

    def cell_sizes(self):
        """Each location's cell (width, height) normalised, float32 [size, 2]."""
        height, width = self.image
        return np.concatenate([np.tile([[s / width, s / height]], (h * w, 1))
                               for h, w, s in self.levels]).astype(np.float32)

    def to_json(self):
        return {"image": list(self.image), "levels": [list(level) for level in self.levels]}

    @classmethod
    def from_json(cls, data):
        return cls(tuple(data["image"]), tuple(tuple(level) for level in data["levels"]))


def pyramid_of(backbone):
    """The (layer name or None, stride) pairs of a backbone's feature pyramid
    (`BackboneSpec.pyramid`); raises ConfigError for a backbone without one."""
    spec = get_spec(backbone)
    if not spec.pyramid:
        raise ConfigError(f"Backbone {spec.name!r} has no feature maps for a dense head "
                          "(its `BackboneSpec.pyramid` is empty: it outputs a vector). "
                          "Pick a convolutional backbone (`transferkit backbones`).")
    return spec.pyramid


def feature_grid(backbone, image_size):
    """The `Grid` of a dense head on `backbone` (a name or BackboneSpec) for input
    `image_size` (an InputSpec or (height, width))."""
    height, width = getattr(image_size, "size", None) or tuple(image_size)
    levels = tuple((math.ceil(height / s), math.ceil(width / s), s)
                   for _, s in pyramid_of(backbone))
    return Grid((height, width), levels)
