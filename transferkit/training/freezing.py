"""Which backbone layers train: freezing policies, an audit, and the recompile guard.

`freeze(model, policy)` is idempotent: it recomputes every flag from the policy, so
applying a policy twice (or after another one) always gives the same model state.
"""

import dataclasses
import math
import weakref

import keras

from transferkit.core.errors import ConfigError, TrainableChangedError, suggest
from transferkit.models.parts import resolve
from transferkit.models.blocks import block_layout, descendants, sublayers
from transferkit.models.registry import get_spec
# The policy lives in the light `training.config`; importable from here as before.
from transferkit.training.config import KINDS, FreezePolicy, compile_regex  # noqa: F401

_BN = (keras.layers.BatchNormalization,)


@dataclasses.dataclass(frozen=True)
class BlockAudit:
    block: str
    layers: int
    trainable_params: int
    total_params: int


@dataclasses.dataclass(frozen=True)
class FreezeAudit:
    """Trainable parameter counts per backbone block, and for the whole model."""

    policy: FreezePolicy
    blocks: tuple
    trainable_params: int
    total_params: int

    def __str__(self):
        rows = [f"freeze policy: {self.policy}",
                f"{'block':<28}{'layers':>7}{'trainable':>14}{'total':>14}"]
        rows += [f"{b.block:<28}{b.layers:>7}{b.trainable_params:>14,}{b.total_params:>14,}"
                 for b in self.blocks]
        rows.append(f"{'model':<28}{'':>7}{self.trainable_params:>14,}{self.total_params:>14,}")
        return "\n".join(rows)


def freeze(model, policy=FreezePolicy(), spec=None, parts=None, verbose=False):
    """Set `trainable` on `model`'s backbone per `policy`; returns a `FreezeAudit`.

    parts: a `ModelParts` naming the backbone (default: `build_model`'s layout).
    spec: the backbone spec for "last_blocks" (default: the parts' spec).
    The policy counts the units of the backbone's block layout (`models.blocks`): its
    layers, or for a nested transformer the layers down to its blocks.
    Everything outside the backbone (the head) trains. Compile after freezing —
    `fine_tune` does — or Keras keeps training the old set of variables.
    """
    policy = FreezePolicy.parse(policy)
    resolved = resolve(model, parts)
    backbone = resolved.backbone
    model.trainable = True  # the head and everything outside the backbone train
    spec = get_spec(spec) if spec is not None else resolved.spec
    if spec is None and policy.kind == "last_blocks":
        raise ConfigError(f"Cannot tell the block layout of the backbone of {model.name!r}: "
                          "pass a registered backbone as `spec=` (or ModelParts(spec=...)) "
                          "to freeze by block, or use another policy kind.")
    layout = block_layout(backbone, spec)
    first = _first_trainable(policy, layout)
    backbone.trainable = True
    pattern = compile_regex(policy.value) if policy.kind == "regex" else None
    for i, unit in enumerate(layout.units):
        unit.trainable = bool(pattern.search(unit.name)) if pattern else i >= first
        if not policy.train_batchnorm:  # BN inside a unit (a nested block) too
            for layer in descendants(unit):
                if isinstance(layer, _BN):
                    layer.trainable = False
    audit = _audit(model, layout, policy)
    if verbose:
        print(audit)
    return audit


def layer_depths(model, spec=None, parts=None):
    """{variable path: depth of its backbone block from the top (top block 0)} for
    layer-wise learning-rate decay, per the backbone's block layout."""
    resolved = resolve(model, parts)
    spec = get_spec(spec) if spec is not None else resolved.spec
    if spec is None:
        raise ConfigError(f"Cannot tell the block layout of the backbone of {model.name!r}, "
                          "which layer_lr_decay needs: pass a registered backbone as "
                          "ModelParts(spec=...), or use layer_lr_decay=1.0 (off).")
    return block_layout(resolved.backbone, spec).depths()


def _first_trainable(policy, layout):
    units = layout.units
    n = len(units)
    if policy.kind == "all":
        return n
    if policy.kind == "none":
        return 0
    if policy.kind == "top_layers":
        return max(0, n - policy.value)
    if policy.kind == "fraction":
        return n - int(round(policy.value * n))
    if policy.kind == "from_layer":
        names = [unit.name for unit in units]
        if policy.value not in names:
            firsts = [names[i] for i in layout.starts]
            raise ConfigError(f"No layer named {policy.value!r} in the backbone."
                              f"{suggest(policy.value, names)} Its blocks begin at the "
                              f"layers {firsts}.")
        return names.index(policy.value)
    if policy.kind == "last_blocks":
        starts = layout.starts
        return n if policy.value <= 0 else starts[max(0, len(starts) - policy.value)]
    return n  # regex: selected per layer


def _audit(model, layout, policy):
    blocks = [BlockAudit(block=label, layers=len(group),
                         trainable_params=sum(count_params(u.trainable_weights) for u in group),
                         total_params=sum(count_params(u.weights) for u in group))
              for label, group in layout.blocks()]
    return FreezeAudit(policy, tuple(blocks), count_params(model.trainable_weights),
                       count_params(model.weights))


def count_params(weights):
    """Number of scalars in `weights` (no graph ops: shapes only)."""
    return int(sum(math.prod(w.shape) for w in weights))


# --- the recompile guard -------------------------------------------------------------

_COMPILED = weakref.WeakKeyDictionary()


def trainable_signature(model):
    """A hashable record of every layer's `trainable` flag, in order."""
    return tuple((path, layer.trainable) for path, layer in _walk(model))


def _walk(layer, prefix=""):
    for child in sublayers(layer):  # into nested layers too: blocks can be frozen there
        yield prefix + child.name, child
        yield from _walk(child, f"{prefix}{child.name}/")


def mark_compiled(model):
    """Record `model`'s trainable flags as the ones its compiled step was built for."""
    _COMPILED[model] = trainable_signature(model)


def check_compiled(model):
    """Raise TrainableChangedError if `trainable` flags changed since `mark_compiled`."""
    before = _COMPILED.get(model)
    if before is None:
        return
    now = trainable_signature(model)
    if now != before:
        changed = [name for (name, a), (_, b) in zip(before, now) if a != b]
        raise TrainableChangedError(
            f"`trainable` changed on {len(changed)} layer(s) since the model was compiled "
            f"(e.g. {', '.join(changed[:5])}). Keras would keep training the old set of "
            "weights (keras-team/keras #9940): call compile() again after changing "
            "`trainable` (fine_tune does this for each phase).")


class RecompileGuard(keras.callbacks.Callback):
    """Callback that refuses to start `fit` if `trainable` changed since compile."""

    def on_train_begin(self, logs=None):
        check_compiled(self.model)
