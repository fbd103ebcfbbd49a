"""Fixes files: a data review's decisions, applied to a file listing at load time.

`transferkit doctor` writes one (its proposals), its review page saves one (your
decisions), and `train --fixes FILE` reads it. The user's files are never moved or
changed: a relabel or an exclusion only changes what the listing says.

    path,action,label
    /data/pets/cat/img_001.jpg,relabel,dog
    /data/pets/cat/img_002.jpg,exclude,
    /data/pets/dog/img_010.jpg,keep,

Paths are absolute, or relative to the fixes file's folder; a file is matched by its
real path, so a path spelled another way (a link, `..`) is the same file.
"""

import csv
import dataclasses
import hashlib
import io
import os

from transferkit.core.errors import DataError
from transferkit.core.files import write_text

ACTIONS = ("keep", "relabel", "exclude")
FIELDS = ("path", "action", "label")


@dataclasses.dataclass(frozen=True)
class Fixes:
    """A read fixes file: {real path: new label}, the excluded real paths, the file's
    path and the sha256 of its bytes (recorded in run.json; a resume compares it)."""

    path: str
    relabel: dict
    exclude: frozenset
    digest: str

    def apply(self, files):
        """`files` ({split: (paths, raw labels)}) with the relabels and exclusions
        applied; raises DataError for a relabel to a class the data does not have."""
        known = {label for _, labels in files.values() for label in labels}
        unknown = sorted({label for label in self.relabel.values() if label not in known})
        if unknown:
            raise DataError(f"{self.path}: relabel to {unknown[0]!r}, which is not a class "
                            f"of the data. Allowed: {sorted(known, key=str)}")
        out = {}
        for split, (paths, labels) in files.items():
            kept = [(p, self.relabel.get(os.path.realpath(p), label))
                    for p, label in zip(paths, labels)
                    if os.path.realpath(p) not in self.exclude]
            out[split] = ([p for p, _ in kept], [label for _, label in kept])
        return out

    def counts(self):
        """{"relabel": n, "exclude": n}."""
        return {"relabel": len(self.relabel), "exclude": len(self.exclude)}


def read_fixes(path):
    """The `Fixes` of a CSV `path,action,label` file (header required). DataError, naming
    the file and line, for an unknown action, a relabel without a label, or files that
    no longer exist (all of them listed)."""
    path = os.path.expanduser(os.fspath(path))
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise DataError(f"The `fixes` argument should be a CSV file written by "
                        f"`transferkit doctor` or its review page. Received: fixes={path} "
                        f"({error.strerror or error})") from None
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    if not rows or [c.strip().lower() for c in rows[0][:3]] != list(FIELDS):
        raise DataError(f"{path}: the first line should be the header "
                        f"{','.join(FIELDS)}. Received: {rows[0] if rows else 'an empty file'}")
    folder = os.path.dirname(os.path.abspath(path))
    relabel, exclude, missing = {}, set(), []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        name, action, label = [*(c.strip() for c in row), "", ""][:3]
        if action not in ACTIONS:
            raise DataError(f"{path}, line {line}: action {action!r} is not one of "
                            f"{', '.join(ACTIONS)}.")
        if action == "relabel" and not label:
            raise DataError(f"{path}, line {line}: `relabel` needs a label in the third "
                            f"column. Received: {row}")
        real = os.path.realpath(os.path.join(folder, os.path.expanduser(name)))
        if not os.path.exists(real):
            missing.append(name)
        elif action == "relabel":
            relabel[real] = label
        elif action == "exclude":
            exclude.add(real)
    if missing:
        raise DataError(f"{path} names {len(missing)} file(s) that do not exist (moved or "
                        "deleted since the review?): " + ", ".join(missing[:20]) +
                        (" ..." if len(missing) > 20 else ""))
    return Fixes(path, relabel, frozenset(exclude), hashlib.sha256(raw).hexdigest())


def write_fixes(path, rows):
    """Write `rows` ((path, action, label) tuples) as a fixes file, atomically."""
    for name, action, _ in rows:
        if action not in ACTIONS:
            raise DataError(f"fixes row for {name}: action {action!r} is not one of "
                            f"{', '.join(ACTIONS)}.")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows((os.path.abspath(p), action, label or "") for p, action, label in rows)
    write_text(path, buffer.getvalue())
