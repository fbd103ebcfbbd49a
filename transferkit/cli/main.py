"""The `transferkit` command line: `main` parses, dispatches, and turns errors into
one message and exit code 2. Each command lives in its own module with a
`register(subparsers)` and a `run(args)`.

Exit codes: 0 success, 2 a bad argument or file (one message naming it), 130 Ctrl-C,
143 SIGTERM (training saves a checkpoint first), 1 an unexpected error (a bug: one
message; `--debug` shows the traceback instead).

Building the parser loads no TensorFlow: each command imports what it runs inside its
`run`, so `--help` and `recipes` answer at once. A command that needs TensorFlow gets
it imported quietly first (`cli.quiet`), unless it says `tensorflow=False`.
"""

import argparse
import logging
import os
import sys

from transferkit.cli import (add_class, backbones, demo, doctor, evaluate, export,
                             lr_find, predict, recipes, scan, train, tune)
from transferkit.cli.quiet import quiet_tensorflow
from transferkit.core.errors import TransferkitError

COMMANDS = (backbones, recipes, scan, doctor, train, add_class, lr_find, evaluate, predict,
            export, tune, demo)


def main(argv=None):
    """Entry point of the `transferkit` console command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prefix = f"transferkit {args.command}: error:"
    try:
        if getattr(args, "tensorflow", True):
            quiet_tensorflow()
        return args.func(args) or 0
    except TransferkitError as error:
        if args.debug:
            raise
        print(f"{prefix} {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"transferkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a file or folder the person named: say which, and why
        if args.debug:
            raise
        where = f" {error.filename}" if error.filename else ""
        print(f"{prefix}{where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - the boundary: one message, not a traceback
        if args.debug:
            raise
        if _is_op_error(error):  # e.g. a file changed on disk since the scan
            print(f"{prefix} TensorFlow could not process an input: "
                  f"{error.message.strip().splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"{prefix} unexpected {type(error).__name__}: {error}\n(this is likely a "
              "bug in transferkit; run again with --debug for the traceback and report "
              "it)", file=sys.stderr)
        return 1


def console():
    """The `transferkit` console script: `main`, then the process ends at once.

    Once TensorFlow is loaded, the interpreter's own shutdown (tearing down
    TensorFlow's and Keras's modules) takes about a second of nothing the user asked
    for; every file is written and closed by then (atomically), and every thread
    joined, so the output streams are flushed and the process exits with `main`'s
    code without it. Without TensorFlow the exit is the ordinary one."""
    code = main()
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
            pass
    os._exit(code)


def _is_op_error(error):
    # TensorFlow raised it only if it is loaded; asking must not load it.
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(error, tf.errors.OpError)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="transferkit", description="Transfer learning with Keras backbones, "
        "two-phase fine-tuning done right.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
