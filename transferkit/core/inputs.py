"""The input a model takes: one `InputSpec`, parsed by one function.

A model's image size is resolved once (from the recipe and the backbone spec, by
`models.builder.resolve_input`), stored in the saved model's metadata and read back
by every command, so training, evaluation, prediction and export decode images to the
same size.
"""

import dataclasses

import numpy as np

from transferkit.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Images a model takes: raw RGB 0-255 float32 of `height` x `width` x `channels`."""

    height: int
    width: int
    channels: int = 3

    @property
    def size(self):
        """(height, width)."""
        return (self.height, self.width)

    @property
    def shape(self):
        return (self.height, self.width, self.channels)

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values):
        """From `to_json` output, or the older plain `image_size` (an int or a pair)."""
        if isinstance(values, dict):
            return cls(int(values["height"]), int(values["width"]),
                       int(values.get("channels", 3)))
        return cls(*parse_size(values))


def parse_size(value, argument="image_size"):
    """(height, width) from a positive int or a pair of them.

    Raises ConfigError naming `argument` and echoing the value otherwise.
    """
    size = (value, value) if _is_int(value) else value
    try:
        size = tuple(size)
    except TypeError:
        size = ()
    if len(size) != 2 or not all(_is_int(s) and s > 0 for s in size):
        raise ConfigError(f"The `{argument}` argument should be a positive int or "
                          f"(height, width). Received: {argument}={value!r}")
    return int(size[0]), int(size[1])


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
