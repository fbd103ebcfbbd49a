"""Novelty: how unlike the training classes an image is, with a calibrated threshold.

    novelty = fit_novelty(train_x, train_ids, val_x, val_probs, outlier_x, outlier_probs)
    x, probs, logits, _ = novelty_inputs(model, dataset, task)
    scores = novelty.score(x, probs, logits)  # higher: more unusual
    unknown = scores > novelty.threshold      # ~5% of validation images by construction
    run = novelty_model(model, task, novelty)  # images -> (outputs, novelty), graph ops

Candidates, each a score where higher means more novel (OpenOOD v1.5: no single one
wins everywhere, so one is chosen per model by a measured criterion):
  - "msp": 1 - the top class probability (the baseline; costs nothing);
  - "mahalanobis": the smallest Mahalanobis distance of the backbone features to a
    class mean under one shared covariance (Ledoit-Wolf shrinkage: a few hundred images
    of 100-2000 features need it);
  - "knn": the k-th nearest-neighbour cosine distance of the L2-normalised features to
    the training images (Sun et al. 2022; no distribution assumed);
  - "energy": -logsumexp of the head's logits (Liu et al. 2020). A softmax output layer
    fuses its activation, so the logits are recomputed exactly from the output Dense
    layer's input, kernel and bias (`head_logits`); only where the task says its output
    is one softmax over the classes (`Task.softmax_logits`), else the candidate is
    skipped.

The chosen detector is the one with the highest AUROC separating the validation images
from outliers (Mahalanobis unless another beats it by MARGIN): real "none of these"
images when given (`--unknown-data`), else
synthetic ones (each validation image cut into a 4x4 grid whose tiles are shuffled:
the colours and textures stay, the objects go). The threshold is the validation
scores' (1 - false_rejection) quantile, so that fraction of known images is called
unknown. The arrays travel inside the `.keras` file (`models.saving`, member
`novelty.npz`) and the settings in its metadata; exports compute the score in their
graph (`novelty_model`, `Novelty.tf_score`).
"""

import dataclasses
import io

import keras
import numpy as np

from transferkit.core.errors import ConfigError, TransferkitError
from transferkit.core.schema import Map, Num, Obj, Str, check
from transferkit.models.config import FALSE_REJECTION
from transferkit.models.tta import unwrap_tta
from transferkit.models.parts import resolve

DETECTORS = ("msp", "mahalanobis", "knn", "energy")
KNN_K = 5
# Mahalanobis on pretrained features is the prior (Fort et al. 2021): synthetic outliers
# only approximate real unknowns, so another detector replaces it only when it beats it
# by this much AUROC (on data/sample, kNN edged it by 0.002 on synthetic outliers and
# then lost 0.95 -> 0.66 on the real unseen class).
DEFAULT = "mahalanobis"
MARGIN = 0.02
KNN_BANK = 4096  # most stored training features for kNN: bounds the model's size
ARRAYS_NAME = "novelty.npz"
NEEDS = {"msp": (), "mahalanobis": ("means", "precision"), "knn": ("bank",),
         "energy": ()}  # arrays
ARRAY_NAMES = ("means", "precision", "bank")
# The settings as the metadata stores them (`Novelty.to_json`), checked when read back.
SETTINGS_SCHEMA = Obj({"detector": Str(choices=DETECTORS), "threshold": Num(),
                       "false_rejection": Num(above=0, below=1),
                       "auroc": Map(Num(min=0, max=1)), "criterion": Str()},
                      required=("detector", "threshold", "false_rejection", "auroc",
                                "criterion"))
MIN_VALIDATION = 2  # validation images a threshold (a quantile) and an AUROC need


@dataclasses.dataclass(frozen=True)
class Novelty:
    """A fitted novelty score: the detector, its threshold, the false-rejection rate it
    was calibrated to, each candidate's AUROC and the criterion, and its arrays (class
    means and precision matrix, or the kNN feature bank)."""

    detector: str
    threshold: float
    false_rejection: float
    auroc: dict
    criterion: str
    arrays: dict = dataclasses.field(repr=False, default_factory=dict)

    def score(self, features, probs, logits=None):
        """Novelty of each row: features [N, D] at the head's input, probs [N, C], and
        for "energy" the head's logits [N, C] (`head_logits`)."""
        if self.detector == "energy" and logits is None:
            raise TransferkitError("The energy novelty score needs the head's logits; "
                                   "this model's head does not expose them.")
        logits = None if logits is None else np.asarray(logits, np.float64)
        return _SCORES[self.detector](self.arrays, np.asarray(features, np.float64),
                                      np.asarray(probs, np.float64), logits)

    def unknown(self, scores):
        return np.asarray(scores) > self.threshold

    def tf_score(self, features, probs, logits=None):
        """`score` as TensorFlow ops (the SavedModel's and the TFLite file's novelty
        output, `novelty_model`)."""
        import tensorflow as tf

        x = tf.reshape(tf.cast(features, tf.float32), [tf.shape(features)[0], -1])
        if self.detector == "energy":
            return -tf.reduce_logsumexp(tf.cast(logits, tf.float32), axis=-1)
        if self.detector == "msp":
            return 1.0 - tf.reduce_max(tf.cast(probs, tf.float32), axis=-1)
        if self.detector == "mahalanobis":
            # expand_dims and a 2-D matmul, not [:, None] and einsum: TFLite's builtin
            # ops run these (no Flex delegate needed).
            diff = tf.expand_dims(x, 1) - tf.expand_dims(tf.constant(self.arrays["means"]), 0)
            flat = tf.reshape(diff, [-1, tf.shape(diff)[-1]])
            q = tf.reshape(tf.reduce_sum(
                tf.matmul(flat, tf.constant(self.arrays["precision"])) * flat, axis=-1),
                tf.shape(diff)[:2])
            return tf.sqrt(tf.maximum(tf.reduce_min(q, axis=-1), 0.0))
        unit = tf.math.l2_normalize(x, axis=-1, epsilon=1e-12)
        similarity = tf.matmul(unit, tf.constant(self.arrays["bank"]), transpose_b=True)
        k = min(KNN_K, int(self.arrays["bank"].shape[0]))
        return 1.0 - tf.math.top_k(similarity, k=k).values[:, -1]

    def refit(self, train_x, train_ids, val_x, val_probs, val_logits=None, seed=0):
        """This detector refitted to new training features and class ids, its threshold
        recalibrated on the validation features (probabilities, logits for "energy") at
        the same false-rejection rate. The choice of detector and its AUROCs are kept:
        what add-class needs when classes change but the backbone does not (no outlier
        pass)."""
        arrays = fit_arrays(train_x, np.asarray(train_ids), seed, needs=NEEDS[self.detector])
        refitted = dataclasses.replace(self, arrays=arrays)
        scores = refitted.score(np.asarray(val_x).reshape(len(val_x), -1), val_probs,
                                val_logits)
        return dataclasses.replace(
            refitted, threshold=float(np.quantile(scores, 1.0 - self.false_rejection)))

    def to_json(self):
        """The settings (no arrays), for the model's metadata."""
        return {"detector": self.detector, "threshold": self.threshold,
                "false_rejection": self.false_rejection, "auroc": self.auroc,
                "criterion": self.criterion}

    def arrays_bytes(self):
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays)
        return buffer.getvalue()

    @classmethod
    def from_parts(cls, settings, data, where="the model"):
        """From the metadata's settings and the `novelty.npz` bytes (no pickle), both
        checked: the settings against SETTINGS_SCHEMA, the arrays for their names,
        float dtypes, finite values and shapes (means [C, D], precision [D, D], bank
        [N, D]). ConfigError naming `where` (the file) otherwise."""
        check(settings, SETTINGS_SCHEMA, f"novelty settings of {where}")
        arrays = {}
        if data:
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                    arrays = {k: stored[k] for k in stored.files}
            except Exception as error:  # noqa: BLE001 - np.load raises many types
                raise ConfigError(f"The novelty arrays of {where} cannot be read (not an "
                                  f"npz of plain arrays): {type(error).__name__}: "
                                  f"{error}") from None
        missing = sorted(set(NEEDS[settings["detector"]]) - set(arrays))
        if missing:
            raise ConfigError(f"The novelty score of {where} ({settings['detector']}) "
                              f"lacks its arrays {missing} ({ARRAYS_NAME} missing or "
                              "incomplete); save it with save_model's extras, or drop "
                              "'novelty' from its metadata.")
        _check_arrays(arrays, where)
        return cls(**settings, arrays=arrays)


def _check_arrays(arrays, where):
    """ConfigError naming `where` unless the arrays are known names of finite floats
    with consistent 2-D shapes."""
    def bad(name, what):
        raise ConfigError(f"The novelty arrays of {where} are not valid: `{name}` "
                          f"{what}.")

    unknown = sorted(set(arrays) - set(ARRAY_NAMES))
    if unknown:
        bad(unknown[0], f"is not one of the arrays a novelty score stores {ARRAY_NAMES}")
    dims = set()
    for name, array in arrays.items():
        if array.dtype.kind != "f" or array.ndim != 2 or 0 in array.shape:
            bad(name, f"should be a non-empty 2-D float array; it is {array.dtype} "
                f"{list(array.shape)}")
        if not np.isfinite(array).all():
            bad(name, "holds NaN or infinite values")
        dims.add(array.shape[1])
    if "precision" in arrays and arrays["precision"].shape[0] != arrays["precision"].shape[1]:
        bad("precision", f"should be square; it is {list(arrays['precision'].shape)}")
    if len(dims) > 1:
        bad(", ".join(sorted(arrays)), f"should share one feature size; they have "
            f"{sorted(dims)}")


def _msp(arrays, x, probs, logits):
    return 1.0 - probs.max(axis=1)


def _energy(arrays, x, probs, logits):
    from scipy.special import logsumexp

    return -logsumexp(logits, axis=1)


def _mahalanobis(arrays, x, probs, logits):
    # (x - m)' P (x - m) = x'Px - 2 x'Pm + m'Pm: three matrix products instead of an
    # [N, C, D] difference tensor (10x faster at D = 1280).
    means, precision = (np.asarray(arrays[k], np.float64) for k in ("means", "precision"))
    xp = x @ precision
    q = (np.sum(xp * x, axis=1)[:, None] - 2.0 * xp @ means.T
         + np.sum((means @ precision) * means, axis=1)[None, :])
    return np.sqrt(np.min(q, axis=1).clip(0))


def _knn(arrays, x, probs, logits):
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ arrays["bank"].T
    k = min(KNN_K, similarity.shape[1])
    return 1.0 - np.sort(similarity, axis=1)[:, -k]


_SCORES = {"msp": _msp, "mahalanobis": _mahalanobis, "knn": _knn, "energy": _energy}


def fit_arrays(train_x, train_ids, seed=0, needs=("means", "precision", "bank")):
    """The arrays the detectors need (`needs`, default all), from training features
    [N, D] and class ids [N]."""
    from sklearn.covariance import LedoitWolf

    train_x, arrays = np.asarray(train_x, np.float64).reshape(len(train_x), -1), {}
    if "means" in needs or "precision" in needs:
        classes = np.unique(train_ids)
        means = np.stack([train_x[train_ids == c].mean(axis=0) for c in classes])
        centred = train_x - means[np.searchsorted(classes, train_ids)]
        arrays["means"] = means.astype(np.float32)
        # Shrinkage makes the covariance positive definite: a plain inverse is exact
        # and several times faster than the pseudo-inverse LedoitWolf would store.
        covariance = LedoitWolf(store_precision=False).fit(centred).covariance_
        arrays["precision"] = np.linalg.inv(covariance).astype(np.float32)
    if "bank" in needs:
        bank = train_x / np.maximum(np.linalg.norm(train_x, axis=1, keepdims=True), 1e-12)
        if len(bank) > KNN_BANK:
            bank = bank[np.random.default_rng(seed).choice(len(bank), KNN_BANK,
                                                           replace=False)]
        arrays["bank"] = bank.astype(np.float32)
    return arrays


def fit_novelty(train_x, train_ids, val_x, val_probs, outlier_x, outlier_probs, *,
                val_logits=None, outlier_logits=None, false_rejection=FALSE_REJECTION,
                criterion="synthetic", seed=0):
    """Fit every detector on the training features, pick the one with the best AUROC of
    validation vs outliers, and set its threshold on validation. Returns a Novelty.
    Energy is a candidate only with the head's logits (`val_logits`, `outlier_logits`)."""
    from sklearn.metrics import roc_auc_score

    if not 0 < false_rejection < 1:
        raise ConfigError(f"The `false_rejection` argument should be in (0, 1). Received: "
                          f"false_rejection={false_rejection}")
    if len(val_x) < 2 or len(outlier_x) < 1:
        raise ConfigError("Fitting a novelty score needs validation images and outliers "
                          f"(received {len(val_x)} and {len(outlier_x)}).")
    arrays = fit_arrays(train_x, np.asarray(train_ids), seed)
    truth = np.r_[np.zeros(len(val_x)), np.ones(len(outlier_x))]
    val = (np.asarray(val_x, np.float64), np.asarray(val_probs, np.float64),
           None if val_logits is None else np.asarray(val_logits, np.float64))
    out = (np.asarray(outlier_x, np.float64), np.asarray(outlier_probs, np.float64),
           None if outlier_logits is None else np.asarray(outlier_logits, np.float64))
    auroc, val_scores = {}, {}
    for name in DETECTORS:
        if name == "energy" and (val[2] is None or out[2] is None):
            continue  # no logits: the head's output is not one softmax over the classes
        val_scores[name] = _SCORES[name](arrays, *val)
        outliers = _SCORES[name](arrays, *out)
        auroc[name] = round(float(roc_auc_score(truth, np.r_[val_scores[name], outliers])), 4)
    best = DEFAULT
    for name in auroc:  # another detector must beat the default clearly
        if auroc[name] > auroc[best] + MARGIN:
            best = name
    threshold = float(np.quantile(val_scores[best], 1.0 - false_rejection))
    return Novelty(best, threshold, false_rejection, auroc, criterion,
                   {k: arrays[k] for k in NEEDS[best]})


def shuffled_tiles(images, grid=4, seed=0):
    """Synthetic outliers: each image [N, H, W, C] cut into grid x grid tiles, shuffled
    (H and W trimmed to multiples of `grid`, then padded back by edge values)."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    th, tw = h // grid, w // grid
    rng = np.random.default_rng(seed)
    out = images.copy()
    for i in range(n):
        tiles = [images[i, r * th:(r + 1) * th, c * tw:(c + 1) * tw]
                 for r in range(grid) for c in range(grid)]
        order = rng.permutation(len(tiles))
        for slot, t in enumerate(order):
            r, c = divmod(slot, grid)
            out[i, r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tiles[t]
    return out


def auroc(known_scores, unknown_scores):
    """AUROC of telling unknown from known images by the score (1.0: perfect)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(known_scores)), np.ones(len(unknown_scores))],
                               np.r_[known_scores, unknown_scores]))


def novelty_summary(novelty, known, unknown=None, bins=30):
    """What a report says of `novelty` on images: its settings, each candidate's AUROC
    ("candidates"), the share of the `known` scores called unknown ("rejected"), and a
    histogram of the scores on shared edges that reach the threshold ("histogram":
    edges, known, unknown counts); with `unknown` scores (images of none of the
    classes) also their count, "auroc" (known vs unknown) and "unknown_rejected"."""
    known = np.asarray(known, np.float64)
    both = known if unknown is None else np.r_[known, np.asarray(unknown, np.float64)]
    edges = np.histogram_bin_edges(np.r_[both, novelty.threshold], bins=bins)
    out = {**novelty.to_json(), "candidates": dict(novelty.auroc),
           "rejected": float(novelty.unknown(known).mean()) if len(known) else 0.0,
           "histogram": {"edges": edges.tolist(),
                         "known": np.histogram(known, edges)[0].tolist()}}
    if unknown is not None:
        out["histogram"]["unknown"] = np.histogram(unknown, edges)[0].tolist()
        out.update(unknown_images=len(unknown), auroc=auroc(known, unknown),
                   unknown_rejected=float(novelty.unknown(unknown).mean()))
    return out


def novelty_inputs(model, dataset, task):
    """(features [N, D] at the head's input, class probabilities [N, C], the head's
    logits [N, C] or None (`head_logits`), labels [N, ...]) of one pass of `model`
    over (image, label) batches: what `Novelty.score` takes."""
    # Features come from one clean view: a TTA wrapper's inner model.
    parts = resolve(unwrap_tta(model))
    extractor = parts.feature_extractor()
    xs, ys = [], []
    for images, labels in dataset:
        x = np.asarray(extractor.predict_on_batch(images))
        xs.append(x.reshape(len(x), -1))
        ys.append(np.asarray(labels))
    features = np.concatenate(xs)
    probs, logits = head_outputs(model, features, task)
    return features, probs, logits, np.concatenate(ys)


def head_logits(model, task):
    """A function: features [N, D] at the head's input -> the logits [N, C] its softmax
    output layer fuses (tensors; Keras ops, so it runs eagerly and inside a traced
    graph), or None where there are none to take: the task's output is not one softmax
    over the classes (`Task.softmax_logits`) or the head is not a Dense output layer
    reached from the features (directly or inside one nested head model)."""
    if not task.softmax_logits:
        return None
    parts = resolve(unwrap_tta(model))
    last, node, _ = parts.model.outputs[0]._keras_history
    start = parts.features
    if isinstance(last, keras.Model):  # build_model's layout: a nested "head" model
        # Its own graph maps the features to its output only if it is called on them.
        if last._inbound_nodes[node].input_tensors[0] is not parts.features:
            return None
        start = last.inputs[0]
        last = last.outputs[0]._keras_history[0]
    if not isinstance(last, keras.layers.Dense) or last.activation is not \
            keras.activations.softmax:
        return None
    # The output layer's input, then its own kernel and bias: exactly its pre-activation.
    before = keras.Model(start, last.input)
    kernel, bias = last.kernel, last.bias

    def logits(features):
        h = keras.ops.cast(before(features, training=False), kernel.dtype)
        out = keras.ops.matmul(h, kernel)
        return out if bias is None else out + bias

    return logits


def head_outputs(model, features, task, batch_size=256):
    """(class probabilities [N, C], logits [N, C] or None: `head_logits`) of the head of
    `model` on its input `features` [N, D]."""
    head = resolve(unwrap_tta(model)).head()
    to_logits = head_logits(model, task)
    probs, logits = [], []
    for i in range(0, len(features), batch_size):
        batch = features[i:i + batch_size]
        probs.append(np.asarray(head.predict_on_batch(batch)))
        if to_logits is not None:
            logits.append(keras.ops.convert_to_numpy(to_logits(batch)))
    return (task.probabilities(np.concatenate(probs)),
            np.concatenate(logits) if to_logits is not None else None)


def novelty_model(model, task, novelty):
    """A function: images [B, H, W, 3] (tensors) -> (the model's output, novelty [B]),
    in one pass, as graph ops: `Novelty.tf_score` on the features (and logits) the
    model computes; what the SavedModel's and the TFLite file's novelty outputs run."""
    clean = None  # the clean view's head, when the output is a TTA average
    if unwrap_tta(model) is model:
        both = keras.Model(model.inputs, [model.outputs[0], resolve(model).features])
    else:
        # A TTA wrapper: the averaged output, and the features of the clean view (as
        # `novelty_inputs` scores them), from the wrapper's own input; the wrapped
        # model's inner tensors are not reachable from it.
        parts = resolve(unwrap_tta(model))
        both = keras.Model(model.inputs, [model.outputs[0],
                                          parts.feature_extractor()(model.inputs[0])])
        clean = parts.head()
    to_logits = head_logits(model, task) if novelty.detector == "energy" else None
    if novelty.detector == "energy" and to_logits is None:
        raise TransferkitError("The energy novelty score needs the head's logits; this "
                               f"model's head (task {task.name!r}) does not expose them.")

    def run(images):
        outputs, features = both(images, training=False)
        # Probabilities of the clean view, as the threshold was calibrated on.
        probs = outputs if clean is None else clean(features, training=False)
        logits = None if to_logits is None else to_logits(features)
        return outputs, novelty.tf_score(features, task.tf_probabilities(probs), logits)

    return run


def fit_model_novelty(model, task, train, val, val_images, unknown=None, *,
                      false_rejection=FALSE_REJECTION, seed=0):
    """The Novelty of `model` from (features, encoded labels) arrays of its training
    and validation images at the head's input (`train`, `val`, e.g. cached features),
    the validation images themselves (`val_images`, (image, label) batches: synthetic
    outliers are made from them) or real `unknown` images when given. None for a task
    without one class per image (`Task.novelty_ids`)."""
    ids = task.novelty_ids(train[1])
    if ids is None:
        return None
    val_x = np.asarray(val[0]).reshape(len(val[0]), -1)
    if unknown is None:
        def shuffled(images, labels):
            return _tf_shuffled_tiles(images, seed), labels

        unknown = val_images.map(shuffled)
        criterion = "synthetic"
    else:
        criterion = "unknown-data"
    out_x, out_p, out_logits, _ = novelty_inputs(model, unknown, task)
    val_p, val_logits = head_outputs(model, val_x, task)
    return fit_novelty(np.asarray(train[0]).reshape(len(train[0]), -1), ids, val_x,
                       val_p, out_x, out_p, val_logits=val_logits,
                       outlier_logits=out_logits, false_rejection=false_rejection,
                       criterion=criterion, seed=seed)


def _tf_shuffled_tiles(images, seed):
    import tensorflow as tf

    return tf.numpy_function(lambda x: shuffled_tiles(x, seed=seed).astype(x.dtype),
                             [images], images.dtype, stateful=False)
