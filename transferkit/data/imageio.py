"""Pillow side of image loading: inspect one file, normalise odd ones to 8-bit RGB.

The tf.data pipeline decodes with `tf.io.decode_image`, which is fast but ignores
EXIF orientation, mis-renders CMYK and 16-bit data and cannot read TIFF. The health
scan therefore opens every file once with Pillow here, and the few odd-but-valid
files are rewritten as plain RGB PNG copies that TF decodes correctly.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferkit.core.files import atomic_path, cache_root

# Formats `tf.io.decode_image` reads by content (checked against TF 2.21).
TF_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})

# Extensions listed when no scan runs, and the format each one promises.
EXTENSION_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
}
IMAGE_EXTENSIONS = frozenset(EXTENSION_FORMATS)

# The only formats Pillow is asked to open: common raster formats with no external
# helpers (EPS would start Ghostscript) and no exotic, rarely exercised parsers.
# MPO is how Pillow names the JPEGs many phone cameras write.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF")


def _open(data: bytes) -> Image.Image:
    """Pillow's open, limited to ALLOWED_FORMATS."""
    Image.init()  # registers every plugin (MPO is not among the preinit ones); once
    return Image.open(io.BytesIO(data),
                      formats=[f for f in ALLOWED_FORMATS if f in Image.OPEN])

# Modes that `decode_image(channels=3)` turns into correct RGB on its own.
_PLAIN_MODES = frozenset({"RGB", "L"})
_ORIENTATION_TAG = 0x0112
MAX_PIXELS = 89_478_485  # Pillow's own default decompression-bomb limit


class ImageRejected(Exception):
    """A file that cannot be used; `kind` is a short problem code."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Inspection:
    """What `inspect_image` found: the format, size and odd traits to convert."""

    format: str
    size: tuple[int, int]
    traits: tuple[str, ...]  # e.g. ("cmyk", "exif_rotated"); empty for plain files
    orientation: int = 1  # EXIF orientation (1: upright)

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) as viewers and the pipeline show it: orientations 5-8 turn
        the image a quarter, so width and height swap."""
        width, height = self.size
        return (height, width) if self.orientation in (5, 6, 7, 8) else (width, height)


def default_normalized_dir() -> Path:
    """Cache folder for normalised copies: "normalized" under `core.files.cache_root()`
    ($TRANSFERKIT_CACHE or ~/.cache/transferkit)."""
    return Path(cache_root("normalized"))


def inspect_image(data: bytes, path: str, *, max_pixels: int, min_side: int) -> Inspection:
    """Decode `data` fully once and list its odd traits; raise ImageRejected if unusable.

    The size guard runs on the header, before any pixel is decoded, so a decompression
    bomb costs a few kilobytes of memory, not gigabytes.
    """
    if not data:
        raise ImageRejected("empty", "file is empty (0 bytes)")
    try:
        img = _open(data)
    except UnidentifiedImageError:
        raise ImageRejected("not_image", "not an image in an allowed format "
                            f"({', '.join(ALLOWED_FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_large", str(exc)) from None
    except Exception as exc:  # malformed headers raise many types
        raise ImageRejected("corrupt", f"unreadable header: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected(
            "too_large", f"{width}x{height} = {width * height} pixels exceeds "
            f"max_pixels={max_pixels} (possible decompression bomb)")
    if min(width, height) < min_side:
        raise ImageRejected("too_small", f"{width}x{height} is below min_side={min_side}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF/palettes
            img.load()  # full decode: truncated or corrupt data fails here
    except Exception as exc:
        raise ImageRejected("corrupt", f"decoding failed: {exc}") from None
    try:
        orientation = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the image stays as stored
        orientation = 1
    return Inspection(img.format or "?", img.size, _traits(img, path, orientation),
                      orientation)


def _traits(img: Image.Image, path: str, orientation: int) -> tuple[str, ...]:
    traits = []
    expected = EXTENSION_FORMATS.get(Path(path).suffix.lower())
    if expected != img.format:
        traits.append("extension_mismatch")
    if img.format not in TF_FORMATS:
        traits.append("unsupported_format")
    mode = img.mode
    if mode == "CMYK":
        traits.append("cmyk")
    elif mode.startswith("I") or mode in ("RGB;16", "F"):
        traits.append("16bit")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        traits.append("alpha")
    elif mode == "P":
        traits.append("palette")
    elif mode == "L":
        traits.append("grayscale")
    elif mode not in _PLAIN_MODES:
        traits.append(f"mode_{mode.lower()}")
    if getattr(img, "n_frames", 1) > 1:
        traits.append("animated")
    if orientation not in (0, 1):
        traits.append("exif_rotated")
    return tuple(traits)


# Magic bytes of the formats `tf.io.decode_image` reads, for listing without a scan.
_TF_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def tf_format_by_magic(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a format TF decodes (JPEG, PNG,
    GIF, BMP, WebP): the cheap check of `--no-scan` listings."""
    return head.startswith(_TF_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def needs_copy(traits: tuple[str, ...]) -> bool:
    """True if TF would decode the file wrongly; plain grayscale is fine as is."""
    return any(t != "grayscale" for t in traits)


def to_rgb(img: Image.Image) -> Image.Image:
    """First frame, EXIF rotation applied, 8-bit RGB; transparency composited on white."""
    img.seek(0)
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        # 16/32-bit grey: rescale instead of clipping, or everything above 255 is white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def write_normalized(data: bytes, digest: str, out_dir: Path) -> str:
    """Write an RGB PNG copy named by content hash (atomic); return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{digest}.png"
    if target.exists():  # same content, same copy: the cache is keyed on the hash
        return str(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = to_rgb(_open(data))
    with atomic_path(target) as tmp:
        img.save(tmp, "PNG")
    return str(target)
