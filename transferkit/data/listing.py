"""The one guarded way to open a file a listing names, and to read a listing itself.

A listing is anything that names image files: a folder of class subfolders, a label
CSV, a boxes CSV or a Pascal VOC folder, a mask listing, an unknown-data folder, and any
format added later (COCO JSON, YOLO text files, ...). Its reader never opens a listed
file itself: it calls

    image = read_listed_image(path)      # ListedImage, or raises ListedFileRejected
    width, height = image.upright_size   # EXIF rotation applied, from the header
    found = check_listed_image(path)     # the same, a scan `Problem` instead of raising

which applies the health scan's checks (`data.scan` runs exactly these) in this order,
before any parser sees a byte of the file:

1. a regular file, opened non-blocking (a FIFO, socket or device is refused without
   blocking), of at most MAX_BYTES (`core.files.read_regular_file`);
2. a format of `imageio.ALLOWED_FORMATS`, at most `max_pixels` pixels and at least
   `min_side` pixels a side, read from the header;
3. decodable: the whole image decodes.

The reader then uses the bytes and facts returned, never the path again. A rejected
file is a `Problem` (path, kind, reason, "skipped") for the scan's report: listed files
are reported and skipped, never allowed to block or end a command.

The listing files themselves are read with `read_listing_bytes` (a regular file, at
most MAX_LISTING_BYTES; for XML, whose parser decodes it) or `read_listing_text` (also
UTF-8 without NUL bytes; errors name the file and line), and CSVs parsed with
`csv_rows` (a CSV error or an oversized field names the line).
"""

from __future__ import annotations

import csv
import errno
import io
import os
from dataclasses import dataclass

from transferkit.core.errors import DataError
from transferkit.core.files import (MAX_BYTES, FileTooLarge, NotRegularFile,
                                    read_regular_file)
from transferkit.data import imageio

SKIPPED, CONVERTED, WARNING = "skipped", "converted", "warning"
MIN_SIDE = 8  # smaller images are refused (the scan's default)
MAX_LISTING_BYTES = 256 * 2**20  # a CSV, XML or text listing larger than this is refused
HEADER_NAMES = ("path", "file", "filename", "image")  # a first cell that marks a header


@dataclass(frozen=True)
class Problem:
    """One finding: `action` is "skipped", "converted" or "warning"."""

    path: str
    kind: str
    reason: str
    action: str


@dataclass(frozen=True)
class ListedImage:
    """A listed image that passed every check: its path, its bytes and what the decode
    found (`imageio.Inspection`: format, stored size, odd traits)."""

    path: str
    data: bytes
    inspection: imageio.Inspection

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) as the pipeline decodes it: EXIF rotation applied."""
        return self.inspection.upright_size


class ListedFileRejected(DataError):
    """A listed file that failed a check; `problem` is the scan's Problem for it."""

    def __init__(self, problem: Problem):
        super().__init__(f"{problem.path}: {problem.reason}")
        self.problem = problem


def read_listed_image(path, *, max_pixels: int = imageio.MAX_PIXELS,
                      min_side: int = MIN_SIDE) -> ListedImage:
    """The checked `ListedImage` at `path` (regular file, byte limit, allowed format,
    pixel limits, decodes; see the module docstring); raises ListedFileRejected, whose
    `problem` names the file and the reason."""
    path = os.fspath(path)
    try:
        data = read_regular_file(path)
    except OSError as exc:
        raise ListedFileRejected(os_problem(path, exc)) from None
    try:
        found = imageio.inspect_image(data, path, max_pixels=max_pixels, min_side=min_side)
    except imageio.ImageRejected as exc:
        raise ListedFileRejected(Problem(path, exc.kind, exc.reason, SKIPPED)) from None
    return ListedImage(path, data, found)


def check_listed_image(path, **limits) -> ListedImage | Problem:
    """`read_listed_image(path, **limits)`, with a rejection returned as its Problem."""
    try:
        return read_listed_image(path, **limits)
    except ListedFileRejected as rejected:
        return rejected.problem


def os_problem(path: str, exc: OSError) -> Problem:
    """The Problem of a file that could not be read (`exc`, from the system or from
    `read_regular_file`)."""
    if isinstance(exc, NotRegularFile):
        return Problem(path, "not_regular", exc.strerror, SKIPPED)
    if isinstance(exc, FileTooLarge):
        return Problem(path, "too_large", exc.strerror, SKIPPED)
    if exc.errno == errno.ELOOP:
        return Problem(path, "symlink_loop", "symbolic link loop", SKIPPED)
    return Problem(path, "unreadable", f"{exc.strerror or exc}", SKIPPED)


def read_listing_bytes(path, what="listing") -> bytes:
    """The bytes of the listing file `path` (e.g. an XML file, whose parser decodes it
    as its declaration says): a regular file of at most MAX_LISTING_BYTES; DataError
    naming `what` and the file otherwise."""
    try:
        return read_regular_file(os.fspath(path), MAX_LISTING_BYTES)
    except OSError as error:
        raise DataError(f"Cannot read the {what} {os.fspath(path)}: "
                        f"{error.strerror or error}") from None


def read_listing_text(path, what="listing") -> str:
    """The text of the listing file `path` (a CSV, JSON or text file naming images):
    `read_listing_bytes`, UTF-8 (a BOM is dropped), without NUL bytes. DataError
    naming `what`, the file and the line otherwise."""
    return decode_listing(read_listing_bytes(path, what), path, what)


def decode_listing(raw, path, what="listing") -> str:
    """`raw` (the bytes of the listing file `path`) as text: UTF-8 (a BOM dropped),
    without NUL bytes; DataError naming `what`, the file and the line otherwise."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: the {what} should be UTF-8 text; byte "
                        f"{raw[error.start]:#04x} is not (save it as UTF-8).") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise DataError(f"{path}, line {line}: the {what} holds a NUL byte; it should be "
                        "a text file.")
    return text


def csv_rows(path, what="CSV listing", delimiter=None, text=None
             ) -> list[tuple[int, list[str]]]:
    """[(line number, cells)] of the non-blank rows of the CSV file `path` (or of its
    `text`, already read; `delimiter`: default tab for .tsv files, else comma). A file
    that is no UTF-8 text, a CSV error (e.g. a NUL byte, an unclosed quote) or a field
    over the csv module's size limit raises DataError naming the file and the line."""
    text = read_listing_text(path, what) if text is None else text
    if delimiter is None:
        delimiter = "\t" if os.fspath(path).lower().endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as error:
        raise DataError(f"{path}, line {max(reader.line_num, 1)}: not a valid {what} row: "
                        f"{error}") from None
    return rows


def is_header(row) -> bool:
    """Whether a CSV row is a header (its first cell names the path column)."""
    return bool(row) and row[0].strip().lower() in HEADER_NAMES


__all__ = ["CONVERTED", "ListedFileRejected", "ListedImage", "MAX_BYTES", "Problem",
           "SKIPPED", "WARNING", "check_listed_image", "csv_rows", "decode_listing",
           "is_header",
           "os_problem", "read_listed_image", "read_listing_bytes", "read_listing_text"]
