"""The `transferkit` command line: `main` parses, dispatches, and turns errors into
one message and exit code 2. Each command lives in its own module with a
`register(subparsers)` and a `run(args)`."""

import argparse
import sys

from transferkit.cli import (backbones, demo, evaluate, export, lr_find, predict, scan,
                             train, tune)
from transferkit.core.errors import TransferkitError

COMMANDS = (backbones, scan, train, lr_find, evaluate, predict, export, tune, demo)


def main(argv=None):
    """Entry point of the `transferkit` console command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except TransferkitError as error:
        print(f"transferkit {args.command}: error: {error}", file=sys.stderr)
        return 2


def build_parser():
    parser = argparse.ArgumentParser(
        prog="transferkit", description="Transfer learning with Keras backbones, "
        "two-phase fine-tuning done right.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
