"""A backbone's block layout: the units `freeze` sets one by one, grouped into blocks.

Most backbones are flat functional graphs: their units are their layers, grouped into
blocks by the spec's `block_pattern` (`registry.block_starts`). A KerasHub transformer
is nested: its blocks live inside an encoder layer inside the KerasHub model, which
stays one layer because only KerasHub's own from_config can rebuild it. For a spec with
`nested_blocks=True` the units reach down to the repeated stack of blocks, found by
structure, not by name: the longest run (at least two) of consecutive sibling layers of
one class that have sublayers of their own, at the shallowest depth that has one (ViT:
the encoder's blocks). Only layers that own no variables directly are opened on the
way down, so every variable belongs to exactly one unit. What comes before the stack is
the stem (patch and position embedding); what comes after it joins the last block
(final norm, class token). Without such a stack the spec's pattern applies as usual.

Keras 3 keeps a nested layer's own `trainable` flags (its variables carry them), so a
unit deep inside a trainable KerasHub model can stay frozen.
"""

import dataclasses
import re

from transferkit.models.registry import block_starts


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """units: layers, bottom to top, each frozen or trained as a whole; starts: index of
    each block's first unit; labels: each block's name; nested: the blocks are a
    nested stack found by `block_layout` (False: the spec's `block_pattern`)."""

    units: tuple
    starts: tuple
    labels: tuple
    nested: bool = False

    def blocks(self):
        """(label, units) of each block, bottom to top."""
        ends = self.starts[1:] + (len(self.units),)
        return [(label, self.units[a:b])
                for label, a, b in zip(self.labels, self.starts, ends)]

    def depths(self):
        """{variable path: depth of its block from the top (top block 0)}."""
        blocks = self.blocks()
        return {v.path: len(blocks) - 1 - i for i, (_, units) in enumerate(blocks)
                for unit in units for v in unit.weights}


def sublayers(layer):
    """The layers directly inside `layer` (functional graphs and subclassed layers
    alike, in the order Keras tracks them)."""
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


def descendants(layer):
    """`layer` and every layer inside it, at any depth."""
    return [layer] + [d for child in sublayers(layer) for d in descendants(child)]


def block_layout(backbone, spec=None):
    """The `BlockLayout` of `backbone` per `spec` (a BackboneSpec or None: one block)."""
    if spec is not None and getattr(spec, "nested_blocks", False):
        found = _nested_stack(backbone)
        if found is not None:
            return _nested_layout(backbone, *found)
    units = tuple(backbone.layers)
    starts = tuple(block_starts([u.name for u in units], spec)) if spec else (0,)
    labels = tuple(_label(units[s], spec, j) for j, s in enumerate(starts))
    return BlockLayout(units, starts, labels)


def _label(unit, spec, index):
    if spec is not None and spec.block_boundary == "start":
        match = re.search(spec.block_pattern, unit.name)
        if match:
            return match.group(1)
    return "stem" if index == 0 else f"{index}:{unit.name}"


def _stack(children):
    """(start, end) of the longest run of >= 2 consecutive same-class composite layers
    with weights among `children`, or None."""
    best, i = None, 0
    while i < len(children):
        j = i
        while (j < len(children) and type(children[j]) is type(children[i])
               and sublayers(children[j]) and children[j].weights):
            j += 1
        if j - i >= 2 and (best is None or j - i > best[1] - best[0]):
            best = (i, j)
        i = max(j, i + 1)
    return best


def _openable(layer):
    # A layer owning variables itself (e.g. ViT's class token) stays whole: opening it
    # would leave those variables in no unit.
    return bool(sublayers(layer)) and not (layer._trainable_variables
                                           or layer._non_trainable_variables)


def _nested_stack(backbone):
    """(chain of layers opened from `backbone` down to the stack's parent, the stack's
    layers), shallowest first; None when there is no stack."""
    level = [(backbone, ())]
    while level:
        for layer, chain in level:
            children = sublayers(layer)
            run = _stack(children)
            if run:
                return chain + (layer,), children[run[0]:run[1]]
        level = [(child, chain + (layer,)) for layer, chain in level
                 for child in sublayers(layer) if _openable(child)]
    return None


def _nested_layout(backbone, chain, stack):
    opened = {id(layer) for layer in chain}

    def units(layer):
        return [u for child in sublayers(layer)
                for u in (units(child) if id(child) in opened else [child])]

    flat = tuple(units(backbone))
    index = {id(u): i for i, u in enumerate(flat)}
    starts = sorted({0} | {index[id(block)] for block in stack})
    names = {index[id(block)]: block.name for block in stack}
    return BlockLayout(flat, tuple(starts), tuple(names.get(s, "stem") for s in starts),
                       nested=True)
