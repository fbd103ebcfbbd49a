"""The `transferkit` command line: one module per command group, `main` the entry point."""

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, {"main": "transferkit.cli.main"})
