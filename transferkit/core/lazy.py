"""Packages whose names load on first use (PEP 562), so `import transferkit` and the
command line's `--help` load no TensorFlow.

    # in a package's __init__.py
    from transferkit.core.lazy import lazy_package
    __all__ = lazy_package(__name__, {"load_data": "transferkit.data.load", ...})

`transferkit.data.load_data` then imports `transferkit.data.load` the first time it is
asked for, and keeps it. `dir()` and `__all__` list every name. `moved` names still
resolve, with a DeprecationWarning saying where they live now.
"""

import importlib
import sys
import types
import warnings


class _LazyPackage(types.ModuleType):
    """A package module whose exported names win over its submodules of the same name.

    Importing `transferkit.data.scan` binds the module to the package's `scan`; the
    package exports the function `scan` under that name, as an eager `from .scan import
    scan` used to leave it, so the function keeps the name."""

    def __setattr__(self, name, value):
        table = self.__dict__.get("_lazy_names", {})
        if (isinstance(value, types.ModuleType) and name in table
                and value.__name__ == f"{self.__name__}.{name}"):
            return
        super().__setattr__(name, value)


def lazy_package(package, names, moved=None):
    """Make module `package` (its `__name__`) resolve `names` ({name: module}, or
    {name: "module:attribute"} for a name the module spells otherwise) on first use;
    returns the sorted public names for `__all__`.

    moved: {name: (module, new place)} of names that left this package's public API
        for `new place` (e.g. "transferkit.training"): still resolved, with a
        DeprecationWarning naming the new place."""
    module = sys.modules[package]
    moved = dict(moved or {})

    def __getattr__(name):
        if name in moved:
            source, place = moved[name]
            warnings.warn(f"`{package}.{name}` is deprecated and will be removed in the "
                          f"next release; use `{place}.{name}`.", DeprecationWarning,
                          stacklevel=2)
            return getattr(importlib.import_module(source), name)
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        source, _, attribute = names[name].partition(":")
        value = getattr(importlib.import_module(source), attribute or name)
        setattr(module, name, value)  # next time, a plain attribute
        return value

    def __dir__():
        return sorted(set(module.__dict__) | set(names))

    module.__class__ = _LazyPackage
    module._lazy_names = dict(names)
    module.__getattr__ = __getattr__
    module.__dir__ = __dir__
    return sorted(names)
