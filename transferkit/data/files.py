"""File sources: folders of class subfolders and CSV files, scanned, split and batched.

Also `image_dataset`, the one way a list of image files becomes model input outside
training (prediction, evaluation), through the same scan and decoder training uses.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from transferkit.core.errors import DataError, suggest
from transferkit.data import imageio
from transferkit.data.config import DEFAULT_BATCH_SIZE
from transferkit.data.pipeline import SkipWatch, make_dataset, tf_decodes
from transferkit.core.files import read_regular_file
from transferkit.data.listing import csv_rows, is_header
from transferkit.data.names import check_class_names
from transferkit.data.scan import walk
from transferkit.data.scan import scan as run_scan
from transferkit.data.splits import SPLIT_NAMES, DataSplits, cache_for, stratified_split


def from_files(source, *, task, class_names, val_split, test_split, augment, cache,
               class_weights, scan, normalized_dir, workers, verbose, pipe,
               follow_links=False, fixes=None) -> DataSplits:
    """A folder/CSV source, or a {"train": ..., "val": ..., "test": ...} dict of them.
    The task lists each file's label (`Task.read_files`: a class, or e.g. a mask file)
    and checks them (`Task.check_files`). fixes: a `data.fixes.Fixes` applied to the
    listing before the scan and the split."""
    named = source if isinstance(source, dict) else {"train": source}
    unknown = set(named) - set(SPLIT_NAMES)
    if unknown or "train" not in named:
        bad = sorted(unknown)[0] if unknown else ""
        raise DataError(f"The `source` dict should have the key 'train' and optionally "
                        f"'val' and 'test'. Received keys: {sorted(named)}."
                        f"{suggest(bad, SPLIT_NAMES) if bad else ''}")
    listed = {k: task.read_files(v, scanned=scan, follow_links=follow_links)
              for k, v in named.items()}
    for split, (paths, _, found, _) in listed.items():
        if not paths:
            # Every entry refused (e.g. an annotation file's bad rows): say why.
            why = "; ".join(p.reason for p in (found or ())[:3])
            raise DataError(f"no image files found in {str(named[split])!r} ({split}); "
                            + (f"every entry was refused: {why}" if why else
                               "expected class subfolders with images, or CSV rows "
                               "`path,label`."))
    if class_names is None:  # the source may name them (e.g. a classes.txt)
        class_names = listed["train"][3]
    files = {k: (paths, labels) for k, (paths, labels, *_) in listed.items()}
    files = _without_shared_paths(files, named, verbose)
    applied = None
    if fixes is not None:
        applied = fixes.applied(files)
        files = fixes.apply(files)
        if verbose:
            print(f"fixes {fixes.path}: {applied['relabel']} relabel(s), "
                  f"{applied['exclude']} exclusion(s) applied to the listing")
            outside = applied["not_in_data"]
            if outside:
                print(f"warning: {len(outside)} row(s) of {fixes.path} name files that are "
                      "not in the data (not applied): " + ", ".join(outside[:10])
                      + (" ..." if len(outside) > 10 else ""))
    walk_problems = [p for _, _, found, _ in listed.values() for p in found]
    report = None
    if not scan:
        if walk_problems and verbose:  # e.g. links leaving the folder: say what was left
            print(f"--no-scan: skipped {len(walk_problems)} listed entries:\n  " + "\n  ".join(
                f"{p.path}: {p.reason}" for p in walk_problems[:20]))
        files = {k: _quick_check(k, paths, labels, named[k], verbose)
                 for k, (paths, labels) in files.items()}
        found = task.check_files([p for ps, _ in files.values() for p in ps],
                                 [lab for _, labs in files.values() for lab in labs],
                                 scanned=False, class_names=class_names)[2]
    else:
        report, found = _scan_files(files, walk_problems, task, class_names,
                                    normalized_dir, workers, verbose)
    names = task.class_names(found, class_names, where=named["train"])
    check_class_names(names, named["train"], verbose=verbose)
    idx = stratified_split(task.stratum(files["train"][1]),
                           0.0 if "val" in files else val_split,
                           0.0 if "test" in files else test_split, pipe["seed"])
    parts = {}
    for split, chosen in zip(SPLIT_NAMES, idx):
        if split != "train" and split in files:
            paths, labels = files[split]
        else:
            paths = [files["train"][0][i] for i in chosen]
            labels = [files["train"][1][i] for i in chosen]
        if paths:
            parts[split] = (paths, task.source_labels(labels, names))
    # Every split skips (and counts) a file that fails to decode after all, so neither
    # an epoch nor its validation dies on one file; the run then names them.
    watch = SkipWatch()
    built = {s: make_dataset(p, y, training=s == "train", cache=cache_for(cache, s),
                             augment=augment if s == "train" else None, skip_errors=True,
                             watch=watch, task=task, num_classes=len(names), **pipe)
             for s, (p, y) in parts.items()}
    train_y = parts["train"][1]
    return DataSplits(
        train=built["train"], val=built.get("val"), test=built.get("test"),
        class_names=tuple(names), task=task,
        num_classes=task.output_units(len(names) or train_y.shape[1]),
        image_size=pipe["image_size"],
        class_weight=task.class_weight(train_y, len(names)) if class_weights else None,
        **{f"{s}_files": tuple(parts[s][0]) for s in parts},
        **{f"{s}_labels": parts[s][1] for s in parts},
        scan_report=report, counts={s: len(p[0]) for s, p in parts.items()},
        skipped=watch, fixes=applied)


def undecodable(paths, workers=None) -> dict[str, str]:
    """{path: reason} for the files of `paths` the pipeline cannot read or decode now:
    the diagnosis run once a SkipWatch counted skipped images (the same reader and
    decoder as training, so it names exactly the files training skipped)."""
    def check(path):
        try:
            data = read_regular_file(path)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None if tf_decodes(data) else "TensorFlow cannot decode it"

    paths = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=workers or min(32, (os.cpu_count() or 1) + 4)) as pool:
        reasons = list(pool.map(check, paths))
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def list_images(folder, argument="images"):
    """The image files under `folder` (recursive, sorted, by extension); DataError
    naming `argument` when it is not a folder or holds no image."""
    folder = os.path.expanduser(os.fspath(folder))
    if not os.path.isdir(folder):
        raise DataError(f"The `{argument}` argument should be a folder of images. "
                        f"Received: {argument}={folder!r}")
    files = sorted(f for f in walk(folder)[0]
                   if Path(f).suffix.lower() in imageio.IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"The `{argument}` folder {folder} holds no image files "
                        f"({', '.join(sorted(imageio.IMAGE_EXTENSIONS))}).")
    return files


def folder_dataset(folder, argument, image_size, *, batch_size=DEFAULT_BATCH_SIZE,
                   verbose=True, normalized_dir=None, workers=None):
    """(dataset of (images, dummy labels), the paths it reads, in order) of the usable
    images of the folder argument `argument` (e.g. unknown_data): listed
    (`list_images`), then scanned and decoded as training decodes them. A file the scan
    rejects (a FIFO, a file that does not decode, ...) is reported (printed when
    `verbose`) and skipped; a folder with no usable image is a DataError naming it."""
    files = list_images(folder, argument)
    report = run_scan(files, normalized_dir=normalized_dir, workers=workers)
    kept = [p for p in files if p in report.decode_paths]
    rejected = [p for p in report.problems if p.action == "skipped"]
    if not kept:
        raise DataError(f"The `{argument}` folder {folder} holds no usable image: "
                        + "; ".join(f"{p.path}: {p.reason}" for p in rejected[:5])
                        + (" ..." if len(rejected) > 5 else ""))
    if rejected and verbose:
        print(f"`{argument}` {folder}: skipped {len(rejected)} of {len(files)} files:\n  "
              + "\n  ".join(f"{p.path}: {p.reason}" for p in rejected[:20])
              + ("\n  ..." if len(rejected) > 20 else ""))
    dataset = make_dataset([report.decode_paths[p] for p in kept], [[0.0]] * len(kept),
                           image_size=image_size, batch_size=batch_size, training=False)
    return dataset, kept


def image_dataset(paths, image_size, *, batch_size=DEFAULT_BATCH_SIZE, normalized_dir=None,
                  workers=None):
    """(dataset of (images, dummy labels) in `paths` order, scan report) for files to
    predict on: scanned and decoded exactly as training decodes them (EXIF rotation,
    CMYK, 16-bit, palette and alpha normalised), so a model sees the same pixels.

    A file the scan rejects raises DataError naming it and the reason.
    """
    paths = [os.fspath(p) for p in paths]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"The image {path} is not a file.")
    report = run_scan(paths, normalized_dir=normalized_dir, workers=workers)
    rejected = [p for p in report.problems if p.path in report.skipped
                and p.kind != "duplicate"]
    if rejected:
        raise DataError("Cannot use these images: " + "; ".join(
            f"{p.path}: {p.reason}" for p in rejected))
    # Duplicates are fine here: every given file gets its prediction.
    decode = [report.decode_paths.get(p) or _first_copy(report, p) for p in paths]
    dataset = make_dataset(decode, [[0.0]] * len(decode), image_size=image_size,
                           batch_size=batch_size, training=False)
    return dataset, report


def _first_copy(report, path):
    for group in report.duplicates:
        if path in group:
            return report.decode_paths[group[0]]
    raise DataError(f"The image {path} was not scanned.")


def list_source(src, *, scanned: bool = True, follow_links: bool = False):
    """(paths, raw labels, listing problems) from a class-folder tree or a CSV file;
    without a scan (scanned=False) only files with image extensions are listed.
    follow_links: use links whose target is outside the folder (default False)."""
    path = Path(src)
    if path.is_dir():
        files, problems = walk(path, follow_links=follow_links)
        if not scanned:  # nothing will weed out non-images: trust extensions
            files = [f for f in files if Path(f).suffix.lower() in imageio.IMAGE_EXTENSIONS]
        pairs = [(f, Path(f).relative_to(path).parts) for f in files]
        pairs = [(f, parts[0]) for f, parts in pairs if len(parts) > 1]
        return [f for f, _ in pairs], [c for _, c in pairs], problems
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return (*_read_csv(path), [])
    raise DataError(f"source {str(src)!r} is neither a folder of class subfolders nor "
                    "a CSV file (nor 'tfds:NAME', an (x, y) tuple or a tf.data.Dataset).")


BOX_COLUMNS = {"xmin", "ymin", "xmax", "ymax"}


def _read_csv(path: Path):
    rows = csv_rows(path, "label CSV")
    if rows and is_header(rows[0][1]):
        header = [c.strip().lower() for c in rows[0][1]]
        if BOX_COLUMNS <= set(header):  # not labels: one box per row
            raise DataError(f"{path} is a boxes CSV (columns {','.join(header)}), read "
                            "with --task detection or --task localization; a class label "
                            "CSV has the columns path,label.")
        rows = rows[1:]
    for line, row in rows:
        if len(row) < 2 or not row[0].strip():
            raise DataError(f"{path}, line {line}: a row should be `path,label`; received "
                            f"{row!r}")
    paths = [_listed_path(path, row[0]) for _, row in rows]
    return paths, ["|".join(c.strip() for c in r[1:]).strip("|") for _, r in rows]


def _listed_path(listing: Path, name: str) -> str:
    """The absolute path a CSV row names (relative to the CSV's folder); DataError for a
    name no file system takes (a NUL byte is refused before: this is the rest)."""
    try:
        return str((listing.parent / name.strip()).resolve(strict=False))
    except (OSError, ValueError) as error:
        raise DataError(f"{listing}: the path {name.strip()!r} cannot be used: "
                        f"{error}") from None


def _without_shared_paths(files, named, verbose):
    """Remove from each later split the files an earlier split already has (the same
    file by real path: one folder given twice, a row in two CSVs), and say so. The
    scan finds copies with the same content the same way (its "duplicate" problems)."""
    seen, out = {}, {}
    for split in SPLIT_NAMES:
        if split not in files:
            continue
        paths, labels = files[split]
        kept, dropped = [], []
        for path, label in zip(paths, labels):
            real = os.path.realpath(path)
            if seen.get(real, split) != split:
                dropped.append(path)
            else:
                seen[real] = split
                kept.append((path, label))
        if dropped:
            first = seen[os.path.realpath(dropped[0])]
            if not kept:
                raise DataError(f"The {split} source {str(named[split])!r} holds only files "
                                f"of the {first} source ({len(dropped)} files, e.g. "
                                f"{dropped[0]}): they would leak between the splits.")
            if verbose:
                print(f"{len(dropped)} file(s) of the {split} source are also in the "
                      f"{first} source, removed from {split} (no leak between splits), "
                      f"e.g. {dropped[0]}")
        out[split] = ([p for p, _ in kept], [lab for _, lab in kept])
    return out


def _quick_check(split, paths, labels, source, verbose):
    """Without a scan: keep regular files whose first bytes are a format TF decodes
    (a few bytes read per file); name and count the others."""
    kept, skipped = [], []
    for path, label in zip(paths, labels):
        try:
            head = read_regular_file(path, 16, head=True)
        except OSError as exc:
            skipped.append(f"{path}: {exc.strerror or exc}")
            continue
        if imageio.tf_format_by_magic(head):
            kept.append((path, label))
        else:
            skipped.append(f"{path}: not a JPEG, PNG, GIF, BMP or WebP file")
    if skipped and verbose:
        print(f"--no-scan: skipped {len(skipped)} of {len(paths)} files ({split}):\n  "
              + "\n  ".join(skipped[:20]) + ("\n  ..." if len(skipped) > 20 else ""))
    if not kept:
        raise DataError(f"no usable images in {str(source)!r} ({split}) without a scan: "
                        f"{len(skipped)} files skipped, e.g. {skipped[:1]}")
    return [p for p, _ in kept], [lab for _, lab in kept]


def _scan_files(files, walk_problems, task, class_names, normalized_dir, workers,
                verbose):
    """(ScanReport, classes found): all splits checked at once (duplicates across
    splits) by the task, then only usable files kept."""
    order = [(s, p, lab) for s, (ps, labs) in files.items() for p, lab in zip(ps, labs)]
    report, kept, found = task.check_files(
        [p for _, p, _ in order], [lab for *_, lab in order],
        splits=[s for s, *_ in order], problems=walk_problems, class_names=class_names,
        workers=workers, normalized_dir=normalized_dir)
    if verbose:
        print(report.summary(max_lines=5))
    for split in files:
        usable = [(kept[p], lab) for s, p, lab in order if s == split and p in kept]
        if not usable:
            raise DataError(f"no usable images in the {split!r} source after the scan "
                            f"({report.num_files} files scanned):\n{report.summary()}")
        files[split] = ([p for p, _ in usable], [lab for _, lab in usable])
    return report, found
