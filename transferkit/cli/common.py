"""What the commands share: the subparser factory and the MODEL argument."""

import argparse
import dataclasses
import os

from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.evaluation.evaluate import load_run, model_file
from transferkit.evaluation.tta import PRESETS, with_tta


def command(sub, name, help, epilog=None):
    """A subcommand parser whose description is its help and whose epilog keeps its
    line breaks (every command lists examples there)."""
    parser = sub.add_parser(name, help=help, description=help, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    # Also after the command name; SUPPRESS keeps a `--debug` given before it.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error instead of one message")
    return parser


def add_model_args(p, tta=True):
    """MODEL, --trusted and (optionally) --tta."""
    p.add_argument("model", metavar="MODEL", help="run directory or .keras file (evaluate "
                   "and predict: or an exported .tflite file)")
    p.add_argument("--trusted", action="store_true",
                   help="allow models whose loading runs Python code (Lambda layers); "
                   "only for files from people you trust")
    if tta:
        p.add_argument("--tta", nargs="?", const="flip", choices=sorted(PRESETS),
                       help="test-time augmentation (bare --tta: flip; ten_crop is the "
                       "course notes' 10-crop)")


def loaded_model(path, args):
    """The LoadedModel of `path` (safe mode unless --trusted), TTA-wrapped if --tta."""
    loaded = load_run(path, trusted=args.trusted)
    if getattr(args, "tta", None):
        loaded = dataclasses.replace(loaded, model=with_tta(
            loaded.keras_model("--tta"), args.tta, task=loaded.task))
    return loaded


def check_out(out, model, writes, suggestion="exports"):
    """Refuse an `--out` folder where the command would replace a run's files (`writes`,
    e.g. ("model.keras",)) or the MODEL file itself: never a silent overwrite."""
    if not out:
        return
    if RunDir(out).is_run_dir():
        raise ConfigError(f"The `--out` argument {out} is a run directory: writing there "
                          f"would replace the run's {' and '.join(writes)}. Choose another "
                          f"folder, e.g. --out {os.path.join(out, suggestion)}.")
    source = model_file(model)
    for name in writes:
        target = os.path.join(out, name)
        if os.path.exists(target) and os.path.samefile(target, source):
            raise ConfigError(f"The `--out` argument {out} would overwrite the MODEL file "
                              f"{source} itself. Choose another folder.")
