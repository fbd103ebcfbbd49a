"""Guarded reads of listed files, before the health scan has seen them.

Annotation readers need two things from files a listing names: the annotation file's
own bytes, and an image's upright size (to normalise pixel boxes). Both go through
`scan.read_regular_file` (non-blocking open, regular files only, a byte limit), so a
FIFO or a link to /dev/zero named in a CSV is reported, never waited on or read
forever; image headers are parsed only in `imageio.ALLOWED_FORMATS` and the pixel
limit is checked before any pixel is decoded.

`image_size` is the one place annotation readers open images: swap it for the data
package's shared guarded opener when there is one.
"""

from __future__ import annotations

import warnings

from PIL import Image

from transferkit.core.errors import DataError
from transferkit.data import imageio
from transferkit.data.scan import SKIPPED, Problem, _os_problem, read_regular_file

ANNOTATION_MAX_BYTES = 2**30  # COCO's train2017 instances file is ~450 MB
ORIENTATION_TAG = 0x0112  # EXIF orientation; 5-8 turn the image a quarter


def read_text(path, what: str, limit: int = ANNOTATION_MAX_BYTES) -> str:
    """The text of annotation file `path` (UTF-8, a BOM allowed), read as a regular
    file of at most `limit` bytes; DataError naming the file and `what` it should be."""
    try:
        data = read_regular_file(str(path), limit)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataError(f"Cannot read the {what} {path}: {reason}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"The {what} {path} is not UTF-8 text (byte {exc.start}: "
                        f"{data[exc.start:exc.start + 4]!r}).") from None


def image_size(path: str, max_pixels: int = imageio.MAX_PIXELS):
    """((width, height) of the upright image, None) or (None, the scan's Problem):
    the size the pipeline decodes `path` at (EXIF rotation applied, as the scan's
    normalised copy is), from a guarded read."""
    try:
        data = read_regular_file(path)
    except OSError as exc:
        return None, _os_problem(path, exc)
    except ValueError as exc:  # e.g. a NUL character in the path
        return None, Problem(path, "unreadable", str(exc), SKIPPED)
    if not data:
        return None, Problem(path, "empty", "file is empty (0 bytes)", SKIPPED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF data
            img = imageio._open(data)
            width, height = img.size
            if width * height > max_pixels:
                return None, Problem(path, "too_large", f"{width}x{height} pixels exceeds "
                                     f"max_pixels={max_pixels}", SKIPPED)
            turned = img.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
    except Image.UnidentifiedImageError:
        return None, Problem(path, "not_image", "not an image in an allowed format ("
                             f"{', '.join(imageio.ALLOWED_FORMATS)})", SKIPPED)
    except Image.DecompressionBombError as exc:
        return None, Problem(path, "too_large", str(exc), SKIPPED)
    except Exception as exc:  # malformed headers raise many types
        return None, Problem(path, "corrupt", f"unreadable header: {exc}", SKIPPED)
    return ((height, width) if turned else (width, height)), None
