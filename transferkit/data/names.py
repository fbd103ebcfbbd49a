"""Class names that differ only in letter case or in Unicode normalisation.

"Cat" and "cat" are two folders on Linux and one on macOS and Windows (their file
systems ignore case), so a data set copied across merges two classes; "café" typed
(NFC) and "café" from a macOS folder name (NFD) look the same and are two classes.

    confusable_pairs(["cat", "Cat", "dog"])   # [("Cat", "cat", "case")]
    check_class_names(names, "data/pets")     # Unicode-only: DataError; case: a warning
"""

import unicodedata

from transferkit.core.errors import DataError

CASE, UNICODE = "case", "unicode"


def name_key(name):
    """What two names that differ only in case or Unicode normalisation share."""
    return unicodedata.normalize("NFKC", str(name)).casefold()


def how_alike(a, b):
    """"unicode" if `a` and `b` differ only in Unicode normalisation (NFKC), "case" if
    only in letter case (and maybe normalisation), None if they differ otherwise or are
    equal."""
    a, b = str(a), str(b)
    if a == b or name_key(a) != name_key(b):
        return None
    return UNICODE if unicodedata.normalize("NFKC", a) == unicodedata.normalize("NFKC", b) \
        else CASE


def confusable_pairs(names, others=None):
    """[(a, b, "case" or "unicode")] of the names of `names` that differ only in case
    or normalisation from another name of `names`, or (given `others`) from a name of
    `others`."""
    names = [str(n) for n in names]
    pool = names if others is None else [str(n) for n in others]
    by_key = {}
    for name in pool:
        by_key.setdefault(name_key(name), []).append(name)
    pairs = []
    for i, name in enumerate(names):
        for other in by_key.get(name_key(name), ()):
            kind = how_alike(name, other)
            if kind and (others is not None or pool.index(other) > i):
                pairs.append((name, other, kind))
    return pairs


def describe(a, b, kind):
    """"'Cat' and 'cat' differ only in letter case" (or "... in Unicode normalisation:
    they look the same")."""
    if kind == UNICODE:
        return (f"{a!r} and {b!r} differ only in Unicode normalisation (they look the "
                "same but are different strings)")
    return f"{a!r} and {b!r} differ only in letter case"


def check_class_names(names, where, verbose=True):
    """Refuse (DataError naming `where`) class names that differ only in Unicode
    normalisation; print a warning (when `verbose`) for names that differ only in case:
    valid on this system, merged into one folder on macOS and Windows."""
    pairs = confusable_pairs(names)
    unicode_only = [p for p in pairs if p[2] == UNICODE]
    if unicode_only:
        raise DataError(f"{where}: class names " + "; ".join(describe(*p) for p in
                                                               unicode_only)
                        + ". Rename one so that each class has one spelling.")
    if pairs and verbose:
        print(f"warning: {where}: class names " + "; ".join(describe(*p) for p in pairs)
              + ": distinct here, but macOS and Windows file systems merge such folders "
              "into one class.")
    return pairs
