"""`transferkit export`: .keras, SavedModel or TFLite, with class names, and a parity
check judged by the model's task."""

import os

from transferkit.cli.common import add_model_args, check_out, command, loaded_model
from transferkit.core.errors import ConfigError
from transferkit.evaluation import export as ex
from transferkit.evaluation.evaluate import SPLITS, eval_data

EPILOG = """examples:
  transferkit export runs/pets --format savedmodel --out exports/pets
  transferkit export runs/pets --format tflite --quantize int8 --data data/pets \\
      --out exports/pets --check
  transferkit export runs/pets --format tflite --tta flip --out exports/pets_tta

--check scores the source model and the artifact on the run's validation split of
--data, prints the task's headline metric, agreement and latency side by side, and
exits non-zero if they differ by more than --tolerance.
"""


def register(sub):
    p = command(sub, "export", "Export a model to .keras, SavedModel or TFLite, with "
                "its class names, and optionally check parity.", EPILOG)
    add_model_args(p)
    p.add_argument("--format", required=True, choices=ex.FORMATS)
    p.add_argument("--quantize", choices=ex.QUANTIZE,
                   help="TFLite only; int8 needs --data (representative training images)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--data", metavar="DIR", help="the run's data folder or CSV")
    p.add_argument("--check", action="store_true",
                   help="compare metric, agreement and latency with the source model")
    p.add_argument("--split", default="val", choices=SPLITS,
                   help="images --check scores: the run's val split of --data (default)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="largest metric difference and disagreement --check accepts "
                   "(default 0.01)")
    p.set_defaults(func=run)


def run(args):
    if args.check and not args.data:
        raise ConfigError("`--check` needs `--data DIR` to evaluate the artifacts on.")
    check_out(args.out, args.model, ("model.keras",))
    loaded = loaded_model(args.model, args)
    representative = None
    if args.quantize == "int8" and args.data:
        representative = ex.representative_images(loaded, args.data)
    path = ex.export_model(loaded, args.format, args.out, quantize=args.quantize,
                           representative=representative, metadata={"tta": loaded.tta})
    print(f"exported: {path} (+ labels.txt, {os.path.basename(path)}.json)")
    if args.check:
        data = eval_data(loaded, args.data, split=args.split)
        rows = ex.check_parity(loaded, [path], data, args.tolerance, trusted=args.trusted)
        print(ex.format_parity(rows, args.tolerance, loaded.task))
        ex.raise_on_mismatch(rows, args.tolerance, loaded.task)
