"""`python -m transferkit` is the `transferkit` command."""

from transferkit.cli.main import console

console()
