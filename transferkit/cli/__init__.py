"""The `transferkit` command line: one module per command group, `main` the entry point."""

from transferkit.cli.main import main

__all__ = ["main"]
