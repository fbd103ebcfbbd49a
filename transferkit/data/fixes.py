"""Fixes files: a data review's decisions, applied to a file listing at load time.

`transferkit doctor` writes one (its proposals), its review page saves one (your
decisions), and `train --fixes FILE` reads it. The user's files are never moved or
changed: a relabel or an exclusion only changes what the listing says.

    path,action,label
    /data/pets/cat/img_001.jpg,relabel,dog
    /data/pets/cat/img_002.jpg,exclude,
    /data/pets/dog/img_010.jpg,keep,

Paths are absolute, or relative to the fixes file's folder; a file is matched by its
real path, so a path spelled another way (a link, `..`) is the same file. A row naming
a file that exists but is not in the data being loaded changes nothing: it is listed
as such ("not_in_data") and not counted as applied. The file is read like every
listing (`data.listing.csv_rows`): no UTF-8, a CSV error or an oversized field is a
DataError naming the line.
"""

import csv
import dataclasses
import hashlib
import io
import os

from transferkit.core.errors import DataError
from transferkit.core.files import write_text
from transferkit.data.listing import csv_rows, decode_listing, read_listing_bytes
from transferkit.data.names import confusable_pairs, describe

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
        applied; raises DataError for a relabel to a class the data does not have
        (naming the class it differs from only in case or normalisation, if one)."""
        known = {label for _, labels in files.values() for label in labels}
        unknown = sorted({label for label in self.relabel.values() if label not in known})
        if unknown:
            alike = confusable_pairs(unknown[:1], known)
            hint = f" ({describe(*alike[0])})" if alike else ""
            raise DataError(f"{self.path}: relabel to {unknown[0]!r}, which is not a class "
                            f"of the data{hint}. Allowed: {sorted(known, key=str)}")
        out = {}
        for split, (paths, labels) in files.items():
            kept = [(p, self.relabel.get(os.path.realpath(p), label))
                    for p, label in zip(paths, labels)
                    if os.path.realpath(p) not in self.exclude]
            out[split] = ([p for p, _ in kept], [label for _, label in kept])
        return out

    def applied(self, files):
        """What the fixes change in `files` ({split: (paths, raw labels)}, as given to
        `apply`): {"relabel": n, "exclude": n} of the rows that name a file of the
        data, and "not_in_data": the real paths of the other rows (they change
        nothing, so they are not counted)."""
        listed = {os.path.realpath(p) for paths, _ in files.values() for p in paths}
        return {"relabel": sum(1 for p in self.relabel if p in listed),
                "exclude": sum(1 for p in self.exclude if p in listed),
                "not_in_data": sorted(p for p in (*self.relabel, *self.exclude)
                                      if p not in listed)}

    def counts(self):
        """{"relabel": n, "exclude": n}: the rows of the file (see `applied` for what
        they change in a given listing)."""
        return {"relabel": len(self.relabel), "exclude": len(self.exclude)}


def read_fixes(path):
    """The `Fixes` of a CSV `path,action,label` file (header required). DataError, naming
    the file and line, for a file that is not UTF-8 CSV text (or has an oversized
    field), an unknown action, a relabel without a label, or files that no longer
    exist (all of them listed)."""
    path = os.path.expanduser(os.fspath(path))
    try:
        raw = read_listing_bytes(path, "fixes file")
    except DataError as error:
        raise DataError(f"The `fixes` argument should be a CSV file written by "
                        f"`transferkit doctor` or its review page. Received: fixes={path} "
                        f"({error})") from None
    rows = csv_rows(path, "fixes file", delimiter=",",
                    text=decode_listing(raw, path, "fixes file"))
    if not rows or rows[0][0] != 1 or [c.strip().lower() for c in rows[0][1][:3]] \
            != list(FIELDS):
        raise DataError(f"{path}: the first line should be the header "
                        f"{','.join(FIELDS)}. Received: "
                        f"{rows[0][1] if rows else 'an empty file'}")
    folder = os.path.dirname(os.path.abspath(path))
    relabel, exclude, missing = {}, set(), []
    for line, row in rows[1:]:
        name, action, label = [*(c.strip() for c in row), "", ""][:3]
        if not name:
            raise DataError(f"{path}, line {line}: the first column should name a file. "
                            f"Received: {row}")
        if action not in ACTIONS:
            raise DataError(f"{path}, line {line}: action {action!r} is not one of "
                            f"{', '.join(ACTIONS)}.")
        if action == "relabel" and not label:
            raise DataError(f"{path}, line {line}: `relabel` needs a label in the third "
                            f"column. Received: {row}")
        try:
            real = os.path.realpath(os.path.join(folder, os.path.expanduser(name)))
        except (OSError, ValueError) as error:
            raise DataError(f"{path}, line {line}: the path {name!r} cannot be used: "
                            f"{error}") from None
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
