"""Guarded reads of annotation files and of the images they list, before the scan.

Annotation readers need two things from files a listing names: the annotation file's
own text, and an image's upright size (to normalise pixel boxes). Both go through the
data package's one guarded opener (`data.listing`: a non-blocking open of regular files
only, a byte limit, the allowed formats and pixel limits, a full decode), so a FIFO or
a link to /dev/zero named in an annotation file is reported, never waited on or read
forever.
"""

from __future__ import annotations

from transferkit.core.errors import DataError
from transferkit.core.files import read_regular_file
from transferkit.data import imageio
from transferkit.data.listing import check_listed_image, decode_listing
from transferkit.data.scan import Problem

ANNOTATION_MAX_BYTES = 2**30  # COCO's train2017 instances file is ~450 MB


def read_text(path, what: str, limit: int = ANNOTATION_MAX_BYTES) -> str:
    """The text of annotation file `path` (UTF-8, a BOM allowed), read as a regular
    file of at most `limit` bytes (larger than a CSV listing's: COCO files are big);
    DataError naming the file, the line and `what` it should be."""
    try:
        data = read_regular_file(str(path), limit)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataError(f"Cannot read the {what} {path}: {reason}") from None
    return decode_listing(data, path, what)


def image_size(path: str, max_pixels: int = imageio.MAX_PIXELS):
    """((width, height) of the upright image, None) or (None, the scan's Problem):
    the size the pipeline decodes `path` at (EXIF rotation applied), after the
    listing guard's checks (`data.listing.check_listed_image`)."""
    found = check_listed_image(path, max_pixels=max_pixels)
    if isinstance(found, Problem):
        return None, found
    return found.upright_size, None
