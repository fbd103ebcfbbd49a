"""Health scan: decode every file once, in parallel, and report what is wrong with it.

    report = scan("data/pets")          # folder of class subfolders
    print(report.summary())
    report.to_json("runs/x/scan.json")

Rejected files (corrupt, not images, too large, unreadable, symlink loops, links
leaving the folder, FIFOs/sockets/devices, duplicate copies) are listed in
`report.problems` with path and reason and left out of `report.decode_paths`.
Odd-but-valid files (CMYK, 16-bit, alpha, palette, grayscale, animated, EXIF-rotated,
wrong extension, or simply refused by TF's decoder) are kept; those TF would decode
wrongly or not at all get a normalised RGB PNG copy under `normalized_dir`, and
`decode_paths` points at it: every file the scan accepts decodes in the pipeline.

Hostile files: each file goes through `data.listing.read_listed_image`, the guard every
listing reader uses: only regular files are opened (non-blocking, so a FIFO cannot hang
the scan), at most MAX_BYTES are read (a link to /dev/zero is refused, not read
forever), Pillow only parses `imageio.ALLOWED_FORMATS`, and the pixel limit is checked
on the header, so memory stays below workers x (MAX_BYTES + max_pixels x 4 bytes).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from transferkit.core.errors import DataError
from transferkit.core.files import (MAX_BYTES, FileTooLarge,  # noqa: F401 - re-exported
                                    NotRegularFile, read_regular_file, write_json)
from transferkit.data import imageio
from transferkit.data.listing import (CONVERTED, MIN_SIDE, SKIPPED, WARNING, Problem,
                                      ListedFileRejected, read_listed_image)
from transferkit.data.listing import os_problem as _os_problem
from transferkit.data.pipeline import tf_decodes

CLASS_KINDS = ("empty_class", "small_class", "imbalance")
# Label-file problems that leave an object or a file out, or change a box, without
# skipping the image: shown by `summary` with the file and line they name.
ANNOTATION_KINDS = ("bad_annotation", "bad_box", "box_clipped", "unknown_class",
                    "too_many_boxes", "several_objects", "missing_image",
                    "no_label_file")


@dataclass(frozen=True)
class ScanReport:
    """Result of `scan`. Paths are the files as found; `decode_paths` maps each kept
    file to the file the pipeline should decode (itself or its normalised copy)."""

    num_files: int
    decode_paths: dict[str, str]
    problems: tuple[Problem, ...]
    converted: dict[str, int]  # trait -> number of files converted or kept with it
    rejected: dict[str, int]  # kind -> number of files skipped
    duplicates: tuple[tuple[str, ...], ...]  # groups of identical files, kept one first
    class_counts: dict[str, int] = field(default_factory=dict)
    class_weights: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def skipped(self) -> frozenset[str]:
        """Paths left out of training."""
        return frozenset(p.path for p in self.problems if p.action == SKIPPED)

    def summary(self, max_lines: int = 50) -> str:
        """Counts, class warnings, then skipped files and annotation problems with reasons (up to max_lines;
        the full list is in to_json)."""
        kept = len(self.decode_paths)
        lines = [f"Scanned {self.num_files} files in {self.seconds:.1f} s: {kept} usable, "
                 f"{sum(self.rejected.values())} skipped."]
        if self.rejected:
            lines.append("  skipped: " + _counts(self.rejected))
        if self.converted:
            lines.append("  converted/kept: " + _counts(self.converted))
        if self.duplicates:
            lines.append(f"  duplicate groups: {len(self.duplicates)}")
        if self.class_counts:
            lines.append("  classes: " + _counts(self.class_counts))
        shown = [p for p in self.problems if p.kind in CLASS_KINDS]
        shown += [p for p in self.problems if p.action == SKIPPED or (
            p.kind in ANNOTATION_KINDS and p.action == WARNING)]
        lines += [f"  [{p.kind}] {p.path}: {p.reason}" for p in shown[:max_lines]]
        if len(shown) > max_lines:
            lines.append(f"  ... and {len(shown) - max_lines} more (see to_json)")
        return "\n".join(lines)

    def to_json(self, path) -> None:
        """Write the report as JSON atomically (temp file + rename)."""
        write_json(path, asdict(self))


def with_problems(report: ScanReport, problems) -> ScanReport:
    """`report` plus problems found outside it (e.g. while listing a folder)."""
    problems = tuple(problems) + report.problems
    rejected = collections.Counter(p.kind for p in problems if p.action == SKIPPED)
    return dataclasses.replace(report, problems=problems, rejected=dict(rejected))


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def walk(root, *, follow_links: bool = False) -> tuple[list[str], list[Problem]]:
    """Sorted non-hidden files under `root`, never looping; links whose target lies
    outside `root` are reported and skipped unless `follow_links` (default False), so
    a linked folder cannot pull in the whole disk."""
    files, problems, seen = [], [], set()
    top = os.path.realpath(root)

    def visit(folder: str) -> None:
        try:
            st = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(_os_problem(folder, exc))
            return
        if (st.st_dev, st.st_ino) in seen:
            problems.append(Problem(folder, "symlink_loop", "link back to a folder "
                                    "already visited", SKIPPED))
            return
        seen.add((st.st_dev, st.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue  # .DS_Store, ._foo, .ipynb_checkpoints: not data
            try:
                is_dir = entry.is_dir()  # follows links; ELOOP raises here
                outside = link_problem(entry.path, top, follow_links)
                if outside is not None:
                    problems.append(outside)
                    continue
            except OSError as exc:
                problems.append(_os_problem(entry.path, exc))
                continue
            if is_dir:
                visit(entry.path)
            else:
                files.append(entry.path)

    visit(os.fspath(root))
    return files, problems


def link_problem(path: str, root, follow_links: bool = False) -> Problem | None:
    """The "outside_link" Problem of `path` if it is a symbolic link whose target lies
    outside folder `root` and not `follow_links`, else None."""
    if follow_links or not os.path.islink(path):
        return None
    top, real = os.path.realpath(root), os.path.realpath(path)
    if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
        return None
    return Problem(path, "outside_link", f"symbolic link to {real}, outside {top} "
                   "(follow_links=True to use it)", SKIPPED)


def scan(source, *, labels: Sequence[str] | None = None,
         splits: Sequence[str] | None = None, workers: int | None = None,
         normalized_dir=None, max_pixels: int = imageio.MAX_PIXELS,
         min_side: int = MIN_SIDE, min_class_size: int = 5,
         imbalance_ratio: float = 3.0, follow_links: bool = False) -> ScanReport:
    """Scan a folder of class subfolders, or a list of files.

    source: folder path, or a sequence of file paths (then `labels` optionally gives
        each file's class, "a|b" for several, and `splits` its split name, so that
        duplicates across splits are found and the later copy skipped).
    workers: threads (default: os.cpu_count() + 4, capped at 32; Pillow releases the
        GIL while decoding). normalized_dir: where odd files' RGB copies go (default
        $TRANSFERKIT_CACHE/normalized or ~/.cache/transferkit/normalized).
    max_pixels: larger images are refused from their header (default Pillow's limit,
        ~89 M). min_side: smaller images are refused (default 8).
    min_class_size / imbalance_ratio: thresholds for class warnings (5, 3.0).
    follow_links: use links whose target is outside the folder (default False).
    """
    start = time.perf_counter()
    problems: list[Problem] = []
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise DataError(f"scan: source={str(source)!r} is not a folder; pass a "
                            "folder of class subfolders or a list of files.")
        paths, problems = walk(root, follow_links=follow_links)
        labels = [_class_of(p, root) for p in paths]
    else:
        paths = [os.fspath(p) for p in source]
    for name, seq in (("labels", labels), ("splits", splits)):
        if seq is not None and len(seq) != len(paths):
            raise DataError(f"scan: {name} has {len(seq)} entries for {len(paths)} files.")
    out_dir = Path(normalized_dir) if normalized_dir else imageio.default_normalized_dir()
    check = lambda p: _check(p, out_dir, max_pixels, min_side)  # noqa: E731
    max_workers = workers or min(32, (os.cpu_count() or 1) + 4)
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        results = list(pool.map(check, paths))

    decode_paths, first_by_hash = {}, {}
    groups = collections.defaultdict(list)
    converted, counts = collections.Counter(), collections.Counter()
    for i, (path, (digest, target, traits, problem)) in enumerate(zip(paths, results)):
        if problem is not None:
            problems.append(problem)
            continue
        groups[digest].append(path)
        if digest in first_by_hash:
            first = first_by_hash[digest]
            where = f" (split {splits[first[1]]!r})" if splits is not None else ""
            problems.append(Problem(path, "duplicate", f"same content as {first[0]}"
                                    f"{where}", SKIPPED))
            continue
        first_by_hash[digest] = (path, i)
        decode_paths[path] = target
        converted.update(traits)
        if traits:
            copied = target != path
            reason = f"normalised to {target}" if copied else "TF decodes it as RGB"
            problems.append(Problem(path, ",".join(traits), reason,
                                    CONVERTED if copied else WARNING))
        if labels is not None:
            counts.update(c for c in str(labels[i]).split("|") if c)
    if isinstance(source, (str, os.PathLike)):
        for entry in os.scandir(source):  # class folders left with no usable file
            if entry.is_dir() and not entry.name.startswith("."):
                counts.setdefault(entry.name, 0)
    weights = balanced_weights(counts)
    problems += _class_problems(counts, min_class_size, imbalance_ratio, weights)
    rejected = collections.Counter(p.kind for p in problems if p.action == SKIPPED)
    return ScanReport(
        num_files=len(paths), decode_paths=decode_paths, problems=tuple(problems),
        converted=dict(converted), rejected=dict(rejected),
        duplicates=tuple(tuple(g) for g in groups.values() if len(g) > 1),
        class_counts=dict(sorted(counts.items())), class_weights=weights,
        seconds=time.perf_counter() - start)


def _class_of(path: str, root: Path) -> str:
    parts = Path(path).relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def _check(path: str, out_dir: Path, max_pixels: int, min_side: int):
    """(digest, decode path, traits, None) for a usable file, else (.., Problem)."""
    try:  # the guard every listing reader goes through (`data.listing`)
        listed = read_listed_image(path, max_pixels=max_pixels, min_side=min_side)
    except ListedFileRejected as rejected:
        return None, None, (), rejected.problem
    data, found = listed.data, listed.inspection
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    target = path
    if not imageio.needs_copy(found.traits) and not tf_decodes(data):
        # Pillow reads it, TF's decoder does not (e.g. an RLE BMP): a copy, like the
        # other odd files, or it would end a training epoch.
        found = dataclasses.replace(found, traits=found.traits + ("tf_undecodable",))
    if imageio.needs_copy(found.traits):
        target = imageio.write_normalized(data, digest, out_dir)
    return digest, target, found.traits, None


def balanced_weights(counts: Mapping[str, int]) -> dict[str, float]:
    """sklearn's "balanced" weights n / (k * count); empty classes get none."""
    present = {c: n for c, n in counts.items() if n > 0}
    total = sum(present.values())
    return {c: total / (len(present) * n) for c, n in sorted(present.items())}


def _class_problems(counts, min_size, ratio, weights) -> list[Problem]:
    out = []
    for name, n in sorted(counts.items()):
        if n == 0:
            out.append(Problem(name, "empty_class", "no usable images", WARNING))
        elif n < min_size:
            out.append(Problem(name, "small_class", f"only {n} usable images "
                               f"(min_class_size={min_size})", WARNING))
    present = [n for n in counts.values() if n > 0]
    if len(present) > 1 and max(present) > ratio * min(present):
        suggestion = ", ".join(f"{c}: {w:.2f}" for c, w in weights.items())
        out.append(Problem("", "imbalance", f"largest class has {max(present)} images, "
                           f"smallest {min(present)}; suggested class weights: "
                           f"{suggestion} (load_data(class_weights=True))", WARNING))
    return out

