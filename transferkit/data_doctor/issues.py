"""What is wrong with a labelled image set, from its backbone features.

    probs = out_of_fold_probabilities(x, labels, folds=5, views=augmented)
    rows = find_issues(x, labels, probs, paths, splits, class_names)

Out-of-fold probabilities come from linear heads (scikit-learn's logistic regression,
the same model as transferkit's default head on pooled features) fitted on K-1 folds of
the cached features and scored on the held-out fold, so no image is judged by a head
that saw its label. Confident learning (cleanlab's `Datalab`) turns them, with the
features, into label issues, near-duplicates, outliers and class imbalance. A
near-duplicate pair whose two images sit in different splits is a leak: it inflates
every validation figure, so it is reported first.

Every row: path, kind, split, given_label, suggested_label (or None), score in [0, 1]
(higher: more likely a real issue), other (the other file of a duplicate pair, or None).
"""

import io

import numpy as np

from transferkit.core.errors import DataError
from transferkit.data.listing import ListedFileRejected, read_listed_image

# Kinds in the order a review should look at them.
KINDS = ("leak", "label", "near_duplicate", "outlier", "class_imbalance", "label_next")
INNER_FOLDS = 3  # the heads' inner search of the L2 strength
# Images a class needs (training and validation together): K outer folds leave at
# least half of a class's images to train each head on, and the inner search needs
# 2 of them per class (it uses min(INNER_FOLDS, that) folds).
MIN_PER_CLASS = 4


def check_class_sizes(counts, class_names=None):
    """DataError naming MIN_PER_CLASS unless at least 2 classes have images and every
    class with images has at least MIN_PER_CLASS of them (the out-of-fold heads'
    minimum); `counts` [C] images per class id."""
    counts = np.asarray(counts)
    names = list(class_names) if class_names is not None else list(range(len(counts)))
    present = [(names[c], int(n)) for c, n in enumerate(counts) if n > 0]
    small = [(name, n) for name, n in present if n < MIN_PER_CLASS]
    if len(present) < 2 or small:
        found = ", ".join(f"{name}: {n}" for name, n in (small or present))
        raise DataError(f"The doctor's out-of-fold heads need at least 2 classes with at "
                        f"least {MIN_PER_CLASS} images each (training and validation "
                        f"together). Received: {found or 'no images'}. Add images, or "
                        "leave the small classes out.")


def _head(seed, cv=INNER_FOLDS):
    # Imported here: scikit-learn loads in ~1 s and only the doctor needs it.
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # The L2 strength is picked by an inner 3-fold search: on a few hundred images of
    # 100-2000 features a weakly regularised head is overconfident, and confident
    # learning then flags many right labels (measured on data/sample, 10% flipped).
    return make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=(0.01, 0.1, 1.0), cv=cv, max_iter=2000, random_state=seed))


def fit_head(x, labels, seed=0):
    """A linear head (standardised features, logistic regression) fitted on x [N, D]
    with class ids `labels` [N]; its inner search uses min(INNER_FOLDS, the smallest
    class's count) folds (at least 2 images a class, see MIN_PER_CLASS)."""
    counts = np.bincount(np.asarray(labels))
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    if smallest < 2:
        raise DataError(f"A linear head's inner search needs at least 2 images per "
                        f"class; received class counts {counts.tolist()}.")
    return _head(seed, cv=min(INNER_FOLDS, smallest)).fit(x, labels)


def out_of_fold_probabilities(x, labels, num_classes, *, folds=5, views=None, seed=0):
    """[N, num_classes] probabilities of each row of x [N, D] from a head that never saw
    it (stratified K-fold, K = min(folds, smallest class count)).

    views: optional [V, N, D] augmented views of the same rows, added to each fold's
        training rows (never to the held-out ones, which are scored on x).
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    check_class_sizes(counts)
    k = int(min(folds, counts[counts > 0].min()))
    probs = np.zeros((len(labels), num_classes), dtype=np.float64)
    for train, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels):
        xs, ys = [x[train]], [labels[train]]
        for view in views if views is not None else ():
            xs.append(view[train])
            ys.append(labels[train])
        head = fit_head(np.concatenate(xs), np.concatenate(ys), seed)
        probs[np.ix_(held, head.classes_)] = head.predict_proba(x[held])
    return probs


HASH_BITS = 4  # phash Hamming distance (of 64 bits) up to which two images are copies


def hash_pairs(paths, max_bits=HASH_BITS):
    """{(i, j): score} of the image pairs whose perceptual hashes (imagehash's phash:
    low DCT frequencies of a 32x32 grey image) differ in at most `max_bits` of 64 bits:
    re-encoded, resized or lightly edited copies, which backbone features can place
    surprisingly far apart (noise textures, JPEG artefacts). Unreadable files are
    left out."""
    import imagehash
    from PIL import Image

    bits, index = [], []
    for i, path in enumerate(paths):
        try:  # through the listing guard: a file swapped for a FIFO cannot hang it
            with Image.open(io.BytesIO(read_listed_image(path).data)) as image:
                bits.append(imagehash.phash(image.convert("RGB")).hash.reshape(-1))
                index.append(i)
        except (ListedFileRejected, OSError, ValueError):
            continue
    if len(bits) < 2:
        return {}
    packed = np.packbits(np.asarray(bits), axis=1)  # [N, 8] bytes
    pairs = {}
    for a in range(len(packed) - 1):
        distance = np.unpackbits(packed[a] ^ packed[a + 1:], axis=1).sum(axis=1)
        for b in np.flatnonzero(distance <= max_bits):
            pairs[(index[a], index[a + 1 + b])] = 1 - distance[b] / 64
    return pairs


def find_issues(x, labels, probs, paths, splits, class_names):
    """Rows (dicts, see the module docstring) of the label issues, leaks and
    near-duplicates, outliers and class imbalance of the labelled images; ranked by
    kind (KINDS) then score. Near-duplicates are the pairs cleanlab finds on the
    features, and the pairs whose perceptual hashes nearly match (`hash_pairs`)."""
    from cleanlab import Datalab

    labels = np.asarray(labels)
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=np.asarray(x, dtype=np.float32), pred_probs=probs,
                    issue_types={"outlier": {}, "near_duplicate": {},
                                 "class_imbalance": {}})
    names = list(class_names)

    def row(i, kind, score, suggested=None, other=None):
        return {"path": paths[i], "kind": kind, "split": splits[i],
                "given_label": names[labels[i]], "suggested_label": suggested,
                "score": round(float(np.clip(score, 0.0, 1.0)), 4), "other": other}

    rows = []
    rows += label_issues(probs, labels, paths, names, splits)
    dupes = lab.get_issues("near_duplicate")
    pairs = hash_pairs(paths)
    for i in np.flatnonzero(dupes["is_near_duplicate_issue"].to_numpy()):
        for j in dupes["near_duplicate_sets"].iat[i]:
            if i < j:  # each pair once
                score = 1 - dupes["near_duplicate_score"].iat[i]
                pairs[(i, int(j))] = max(pairs.get((i, int(j)), 0.0), score)
    for (i, j), score in pairs.items():
        kind = "leak" if splits[i] != splits[j] else "near_duplicate"
        # A leak's row names its training copy first: that is the one to exclude.
        first, second = (j, i) if kind == "leak" and splits[i] != "train" else (i, j)
        rows.append(row(first, kind, score, other=paths[second]))
    outliers = lab.get_issues("outlier")
    for i in np.flatnonzero(outliers["is_outlier_issue"].to_numpy()):
        rows.append(row(i, "outlier", 1 - outliers["outlier_score"].iat[i]))
    imbalance = lab.get_issues("class_imbalance")
    flagged = np.flatnonzero(imbalance["is_class_imbalance_issue"].to_numpy())
    for c in sorted({int(labels[i]) for i in flagged}):
        first = int(np.flatnonzero(labels == c)[0])
        share = float(np.mean(labels == c))
        rows.append({**row(first, "class_imbalance", 1 - share * len(names)),
                     "path": None, "split": None, "count": int(np.sum(labels == c))})
    return rank(rows)


def label_issues(probs, labels, paths, class_names, splits):
    """Rows of the images whose given class id (`labels`) confident learning
    (cleanlab's `find_label_issues`, default settings) doubts, given probabilities
    [N, C] from a model that did not train on them; score: 1 - cleanlab's label
    quality; the suggestion: the most probable class."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, names = np.asarray(labels), list(class_names)
    quality = get_label_quality_scores(labels, probs)
    return [{"path": paths[i], "kind": "label", "split": splits[i],
             "given_label": names[labels[i]],
             "suggested_label": names[int(np.argmax(probs[i]))],
             "score": round(float(1 - quality[i]), 4), "other": None}
            for i in np.flatnonzero(find_label_issues(labels, probs))]


def label_next(probs, paths, class_names):
    """Rows for unlabelled images, most uncertain first (score: 1 - top probability)."""
    names = list(class_names)
    rows = [{"path": p, "kind": "label_next", "split": "unlabeled", "given_label": None,
             "suggested_label": names[int(np.argmax(q))],
             "score": round(float(1 - np.max(q)), 4), "other": None}
            for p, q in zip(paths, probs)]
    return rank(rows)


def rank(rows):
    """`rows` ordered by kind (KINDS) and, within a kind, by score (highest first)."""
    return sorted(rows, key=lambda r: (KINDS.index(r["kind"]), -r["score"],
                                       str(r["path"])))


def proposals(rows):
    """The fixes the doctor proposes, as (path, action, label) tuples: relabel each label
    issue to its suggestion, and exclude the training copy of each leak (the validation
    split stays as given); near-duplicates and outliers are kept until reviewed."""
    out, seen = [], set()
    for r in rows:
        if r["kind"] == "label":
            fix = (r["path"], "relabel", r["suggested_label"])
        elif r["kind"] == "leak":
            fix = (r["path"] if r["split"] == "train" else r["other"], "exclude", "")
        else:
            continue
        if fix[0] not in seen:
            seen.add(fix[0])
            out.append(fix)
    return out


def summary(rows):
    """{kind: count} of `rows`, in KINDS order, kinds without rows left out."""
    counts = {}
    for r in rows:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    return {k: counts[k] for k in KINDS if k in counts}
