"""What the commands share: the subparser factory and the MODEL argument. (Light: the
model code loads when a command runs.)"""

import argparse
import dataclasses
import os
import sys

from transferkit.core.errors import ConfigError
from transferkit.core.rundir import RunDir
from transferkit.models.config import TTA_PRESETS


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
        p.add_argument("--tta", nargs="?", const="flip",
                       choices=[*sorted(TTA_PRESETS), "none"],
                       help="test-time augmentation (bare --tta: flip; ten_crop is the "
                       "course notes' 10-crop; none: without the flip TTA a run may "
                       "have kept in its model)")


def loaded_model(path, args):
    """The LoadedModel of `path` (safe mode unless --trusted), TTA-wrapped if --tta.

    A model that already averages TTA views (a run that kept flip TTA) is never wrapped
    twice: the same preset is a no-op, another one (or "none") replaces it."""
    from transferkit.evaluation.evaluate import load_run
    from transferkit.models.tta import unwrap_tta, with_tta

    loaded = load_run(path, safe_mode=not args.trusted)
    wanted = getattr(args, "tta", None)
    if not wanted:
        return loaded
    has = loaded.tta
    if wanted == has:
        # stderr: predict --json keeps stdout for its JSON lines.
        print(f"{path}: the model already averages {has} TTA (kept at the end of "
              "training); --tta adds nothing", file=sys.stderr)
        return loaded
    plain = unwrap_tta(loaded.keras_model("--tta"))
    if has:
        print(f"{path}: the model's own {has} TTA is replaced by --tta {wanted}",
              file=sys.stderr)
    return dataclasses.replace(loaded, model=plain if wanted == "none" else with_tta(
        plain, wanted, task=loaded.task))


def check_out(out, model, writes, suggestion="exports"):
    """Refuse an `--out` folder where the command would replace a run's files (`writes`,
    names from `core.rundir`, e.g. (MODEL_FILE,)) or the MODEL file itself: never a
    silent overwrite."""
    if not out:
        return
    from transferkit.evaluation.evaluate import model_file

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
