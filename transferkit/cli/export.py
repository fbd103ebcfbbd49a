"""`transferkit export`: .keras, SavedModel or TFLite, with class names, and a parity
check judged by the model's task."""

import os

from transferkit.cli.common import add_model_args, check_out, command, loaded_model
from transferkit.cli.flags import add_config_flags, config_from_args
from transferkit.core.errors import ConfigError
from transferkit.core.rundir import MODEL_FILE
from transferkit.deploy.config import ALL, FORMATS, QUANTIZE, ExportConfig

EPILOG = """examples:
  transferkit export runs/pets --format savedmodel --out exports/pets
  transferkit export runs/pets --format tflite --quantize int8 --data data/pets \\
      --out exports/pets --check
  transferkit export runs/pets --format tflite --tta flip --out exports/pets_tta
  transferkit export runs/pets --format all --data data/pets --check --out exports/pets

--format all writes model.keras, saved_model/, model.tflite (fp32), model_fp16.tflite
and, with --data, model_int8.tflite. --check scores the source model and every
artifact written on the run's validation split of --data and prints one table: format,
size, the task's headline metric, agreement with the source, latency per image; it
exits non-zero if any differs by more than --tolerance. MODEL_CARD.md in --out says
what each artifact is, its scores (with --check) and how to load it. The SavedModel's
default signature takes encoded image files (TF Serving REST: {"b64": ...}).
"""


def register(sub):
    p = command(sub, "export", "Export a model to .keras, SavedModel or TFLite, with "
                "its class names, and optionally check parity.", EPILOG)
    add_model_args(p)
    p.add_argument("--format", required=True, choices=FORMATS + (ALL,),
                   help="one format, or all of them (int8 only with --data)")
    p.add_argument("--quantize", choices=QUANTIZE,
                   help="--format tflite only; int8 needs --data (representative "
                   "training images)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--data", metavar="DIR", help="the run's data folder or CSV")
    p.add_argument("--check", action="store_true",
                   help="compare metric, agreement and latency with the source model")
    add_config_flags(p, ExportConfig, title="the parity check (--check; ExportConfig)")
    p.set_defaults(func=run)


def run(args):
    settings = config_from_args(ExportConfig, args)
    from transferkit import deploy as ex
    from transferkit.deploy.model_card import write_model_card
    from transferkit.evaluation.evaluate import eval_data
    from transferkit.models.bundle import LABELS_NAME, sidecar_path

    plan = ex.export_plan(args.format, args.quantize, calibration_data=bool(args.data))
    if args.check and not args.data:
        raise ConfigError("`--check` needs `--data DIR` to evaluate the artifacts on.")
    if ("tflite", "int8") in plan and not args.data:
        raise ConfigError("`--quantize int8` needs `--data DIR`: int8 calibrates on "
                          "images of the run's training split.")
    check_out(args.out, args.model, (MODEL_FILE,))
    loaded = loaded_model(args.model, args)
    loaded.keras_model("export")
    representative = None
    if ("tflite", "int8") in plan:
        representative = ex.representative_images(loaded, args.data)
    paths = []
    for fmt, quantize in plan:
        path = ex.export_model(loaded, fmt, args.out, quantize=quantize,
                               representative=representative, metadata={"tta": loaded.tta})
        print(f"exported: {path} (+ {LABELS_NAME}, "
              f"{os.path.basename(sidecar_path(path))})")
        paths.append(path)
    rows = None
    if args.check:
        data = eval_data(loaded, args.data, split=settings.split)
        rows = ex.check_parity(loaded, paths, data, settings.tolerance,
                               safe_mode=not args.trusted)
        print(ex.format_parity(rows, settings.tolerance, loaded.task))
    card = write_model_card(args.out, loaded, paths, rows=rows,
                            tolerance=settings.tolerance)
    print(f"model card: {card}")
    if rows:
        ex.raise_on_mismatch(rows, settings.tolerance, loaded.task)
