"""Command-line flags generated from config dataclasses: one `--flag` per setting (leaf)
of a config tree, its help the field's doc and default, so a default and its help text
exist once, in the dataclass (`core.config.setting`).

    add_config_flags(parser, LRFindConfig)                 # --phase, --min-lr, ...
    config = config_from_args(LRFindConfig, args)          # LRFindConfig(phase=...)

`train` adds RecipeConfig's leaves with `overlay=True`: a flag not given is None and
leaves the recipe's (or the recipe file's) value alone.
"""

import argparse

from transferkit.core.config import apply, check_value, leaves


def add_config_flags(parser, config, *, title=None, skip=(), only=None, overlay=False,
                     required=()):
    """Add one flag per leaf of `config` (a config dataclass) to `parser`, in an argument
    group titled `title` (default: the parser itself); returns the leaves added.

    skip / only: flat keys to leave out / to add alone (default: all). overlay: every
    flag defaults to None, "not given" (default False: the setting's default).
    required: flat keys whose flag must be given.
    """
    group = parser.add_argument_group(title) if title else parser
    added = [leaf for leaf in leaves(config) if leaf.key not in skip
             and (only is None or leaf.key in only)]
    for leaf in added:
        help = leaf.doc if leaf.key in required else \
            f"{leaf.doc} (default: {shown(leaf.default)})"
        add_flag(group, leaf.key, leaf.kind, help, choices=leaf.choices,
                 default=None if overlay else leaf.default, required=leaf.key in required)
    return added


def config_from_args(config, args, **values):
    """`config` (a config dataclass or an instance, whose defaults are used) with the
    flags of `args` that belong to it applied, then `values` ({flat key: value})."""
    tree = config() if isinstance(config, type) else config
    given = {leaf.key: getattr(args, leaf.key) for leaf in leaves(tree)
             if getattr(args, leaf.key, None) is not None}
    given.update(values)
    by_key = {leaf.key: leaf for leaf in leaves(tree)}
    return apply(tree, {key: check_value(by_key[key], value, "The flag")
                        for key, value in given.items()})


def add_flag(group, key, kind, help, *, default=None, choices=None, required=False,
             flag=None):
    """One flag `--key-with-dashes` (or `flag`) of type `kind` (bool: --x/--no-x)."""
    flag = flag or "--" + key.replace("_", "-")
    if kind is bool:
        group.add_argument(flag, dest=key, default=default, help=help,
                           action=argparse.BooleanOptionalAction)
    elif kind is tuple:
        group.add_argument(flag, dest=key, default=default, type=tuple_arg, metavar="LIST",
                           help=f"{help}; comma-separated", required=required)
    else:
        group.add_argument(flag, dest=key, default=default, type=kind, choices=choices,
                           required=required,
                           metavar=None if choices else kind.__name__.upper(), help=help)


def shown(value):
    """A default as a person types it on the command line."""
    if isinstance(value, tuple):
        return ",".join("=".join(map(str, v)) if isinstance(v, tuple) else str(v)
                        for v in value) or "none"
    return repr(value) if isinstance(value, str) else value


def tuple_arg(text):
    """A comma-separated list ("256,128", "alpha=0.35,depth=2") as a tuple."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if all("=" in t for t in items) and items:
        return tuple((k, _number(v)) for k, v in (t.split("=", 1) for t in items))
    return tuple(_number(t) for t in items)


def _number(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
