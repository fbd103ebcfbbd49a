"""Config trees: frozen dataclasses whose fields carry their own docs, and their flat view.

A config tree is a frozen dataclass whose fields are settings (leaves, declared with
`setting(default, doc)`) or sections (nested config dataclasses, `section(default)`).
The Python API builds and passes the tree itself; recipe files, command-line flags and
the tuner address its leaves by *flat keys*: a leaf's key is its field name (or its
`key=`) after the prefixes of the sections above it, so `schedule.finetune.learning_rate`
is `finetune_lr`. One tree, three views, one default each.

    leaves(RecipeConfig)            # every Leaf: key, path, doc, default, kind
    flatten(recipe)                 # {"data": ..., "head_epochs": 5, ...} (JSON-ready)
    apply(recipe, {"head_epochs": 1})   # a new tree, every section re-validated
"""

import dataclasses
import functools

from transferkit.core.errors import ConfigError, suggest

_SECTION = "transferkit.section"
_SETTING = "transferkit.setting"


def setting(default, doc, *, key=None, parse=None, show=None, also=(), choices=None):
    """A leaf field: its `default`, its help text `doc` (what it does and the values it
    takes; the default is added by whoever shows it). key: its flat key (default: the
    field name). parse/show: from/to the flat (JSON) form when the value is not a plain
    bool/int/float/str/tuple (e.g. a FreezePolicy as "last_blocks:2"). also: extra flat
    keys reaching into the value, as (key, attribute, doc) triples. choices: the values
    it takes, when they are a fixed set (a flag offers exactly these; the dataclass
    still checks them itself)."""
    meta = {_SETTING: dict(doc=doc, key=key, parse=parse, show=show, also=tuple(also),
                           choices=None if choices is None else tuple(choices))}
    return dataclasses.field(default=default, metadata=meta)


def section(default, *, prefix="", doc=""):
    """A nested config field: its leaves' flat keys get `prefix` (default none)."""
    return dataclasses.field(default=default, metadata={_SECTION: dict(prefix=prefix,
                                                                        doc=doc)})


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One setting of a tree as the flat view sees it."""

    key: str
    path: tuple  # attribute names from the root
    nested: tuple  # where the leaf sits in the nested (tree) JSON form
    doc: str
    default: object  # in flat (JSON) form
    kind: type  # of the flat form: bool, int, float, str or tuple
    parse: object = None  # flat form -> tree value (None: the flat form is the value)
    show: object = None  # tree value -> flat form
    choices: tuple | None = None  # the values it takes, when a fixed set

    def read(self, tree):
        value = get_at(tree, self.path)
        return self.show(value) if self.show else value


def get_at(tree, path):
    """The value at attribute `path` (a tuple of names) of `tree`."""
    return functools.reduce(getattr, path, tree)


def replace_at(tree, path, value):
    """A copy of `tree` with the value at `path` replaced (each level re-validated)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    return dataclasses.replace(tree, **{head: replace_at(getattr(tree, head), rest, value)})


def leaves(tree, prefix="", path=()):
    """Every `Leaf` of a config tree (a config dataclass or an instance), in field order.

    A class is read from its fields' defaults, not built: its own checks may look
    things up (a task, a backbone) that listing its settings, e.g. for `--help`, must
    not load."""
    out = []
    for field in dataclasses.fields(tree):
        value = field.default if isinstance(tree, type) else getattr(tree, field.name)
        if _SECTION in field.metadata:
            out += leaves(value, prefix + field.metadata[_SECTION]["prefix"],
                          path + (field.name,))
            continue
        meta = field.metadata.get(_SETTING)
        if meta is None:
            continue  # not a setting (e.g. runtime state): no flat key
        show = meta["show"]
        flat = show(value) if show else value
        out.append(Leaf(prefix + (meta["key"] or field.name), path + (field.name,),
                        path + (field.name,), meta["doc"], flat, type(flat), meta["parse"],
                        show, meta["choices"]))
        for key, attribute, doc in meta["also"]:
            inner = getattr(value, attribute)
            out.append(Leaf(prefix + key, path + (field.name, attribute), path + (key,),
                            doc, inner, type(inner)))
    return tuple(out)


def flatten(tree):
    """{flat key: value in flat form} of every leaf of `tree` (a JSON-ready dict)."""
    return {leaf.key: _jsonable(leaf.read(tree)) for leaf in leaves(tree)}


def nest(tree):
    """The nested JSON form of `tree`: sections as objects, leaves in flat form."""
    out = {}
    for leaf in leaves(tree):
        node = out
        for name in leaf.nested[:-1]:
            node = node.setdefault(name, {})
        node[leaf.nested[-1]] = _jsonable(leaf.read(tree))
    return out


def unnest(tree_cls, values, where="recipe"):
    """{flat key: value} from a nested JSON object of `tree_cls`'s shape; unknown names
    raise ConfigError naming their place and listing the valid ones there."""
    by_place = {leaf.nested: leaf.key for leaf in leaves(tree_cls)}
    sections = {place[:i] for place in by_place for i in range(1, len(place))}
    flat = {}

    def walk(node, place):
        for name, value in node.items():
            here = place + (name,)
            if here in sections and isinstance(value, dict):
                walk(value, here)
            elif here in by_place:
                flat[by_place[here]] = value
            else:
                valid = sorted({p[len(place)] for p in [*by_place, *sections]
                                if p[:len(place)] == place and len(p) > len(place)})
                at = ".".join(place) or "the top level"
                raise ConfigError(f"Unknown {where} key {name!r} in {at}."
                                  f"{suggest(name, valid)} Valid keys there: "
                                  f"{', '.join(valid)}")

    walk(values, ())
    return flat


def apply(tree, values):
    """`tree` with `values` ({flat key: value in flat form}, already type-checked by
    `check_value`) applied; each changed section is rebuilt, hence re-validated."""
    by_key = {leaf.key: leaf for leaf in leaves(tree)}
    for key, value in values.items():
        leaf = by_key[key]
        tree = replace_at(tree, leaf.path, leaf.parse(value) if leaf.parse else value)
    return tree


def check_value(leaf, value, what="Recipe key"):
    """`value` for `leaf` in its flat form, JSON-friendly forms converted (an int for a
    float, a list for a tuple, an object for key=value pairs); raises ConfigError
    naming the key and the expected type otherwise."""
    key, kind = leaf.key, leaf.kind
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{what} {key!r} should be true or false. Received: {key}={value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is tuple and isinstance(value, (list, dict)):
        value = tuple(value.items()) if isinstance(value, dict) else tuple(value)
    # bool is an int subclass: without the second test "head_epochs": true means 1.
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ConfigError(f"{what} {key!r} should be a {kind.__name__}. "
                          f"Received: {key}={value!r}")
    return value


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
