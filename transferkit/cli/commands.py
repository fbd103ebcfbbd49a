"""The `scan`, `evaluate`, `predict` and `export` commands (registered by cli.py).

Same shape as cli.py: one `add_<command>(sub)` and one `_run_<command>(args)` each.
MODEL is a run directory or a `.keras` file, always loaded with Keras safe_mode on
unless `--trusted` is given.
"""

import json
import os

EPILOG_SCAN = """examples:
  transferkit scan data/pets
  transferkit scan ~/photos --json scan.json
"""
EPILOG_EVALUATE = """examples:
  transferkit evaluate runs/pets --data data/pets --split val
  transferkit evaluate runs/pets --data data/test --tta ten_crop --out runs/pets/eval
  transferkit evaluate runs/a --ensemble runs/b runs/c --data data/test
  transferkit evaluate runs/pets --data data/pets --split test --calibrate --out eval/
  transferkit evaluate downloaded.keras --data data/test --trusted   # runs its code!
"""
EPILOG_PREDICT = """examples:
  transferkit predict runs/pets cat.jpg dog.png
  transferkit predict runs/pets/model.keras photos/*.jpg --top-k 3 --tta
  transferkit predict runs/pets cat.jpg --gradcam cams/
"""
EPILOG_EXPORT = """examples:
  transferkit export runs/pets --format savedmodel --out exports/pets
  transferkit export runs/pets --format tflite --quantize int8 --data data/pets \\
      --out exports/pets --check
  transferkit export runs/pets --format tflite --tta flip --out exports/pets_tta

--check scores the source model and the artifact on the run's validation split of
--data, prints accuracy and latency side by side, and exits non-zero if accuracy
differs by more than --tolerance.
"""


def _model_args(p, tta=True):
    p.add_argument("model", metavar="MODEL", help="run directory or .keras file")
    p.add_argument("--trusted", action="store_true",
                   help="allow models whose loading runs Python code (Lambda layers); "
                   "only for files from people you trust")
    if tta:
        from transferkit.evaluation.tta import PRESETS

        p.add_argument("--tta", nargs="?", const="flip", choices=sorted(PRESETS),
                       help="test-time augmentation (bare --tta: flip; ten_crop is the "
                       "course notes' 10-crop)")


def _loaded(path, args):
    from transferkit.evaluation.evaluate import load_run

    loaded = load_run(path, trusted=args.trusted)
    if getattr(args, "tta", None):
        import dataclasses

        from transferkit.evaluation.tta import with_tta

        loaded = dataclasses.replace(loaded, model=with_tta(loaded.model, args.tta))
    return loaded


# --- scan ------------------------------------------------------------------------------

def add_scan(sub, command):
    p = command(sub, "scan", "Check an image folder: unreadable, odd and duplicate "
                "files, class counts.", EPILOG_SCAN)
    p.add_argument("data", metavar="DIR", help="folder of class subfolders")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--workers", type=int, help="decoding threads (default: automatic)")
    p.set_defaults(func=_run_scan)


def _run_scan(args):
    from transferkit.core.errors import DataError
    from transferkit.data.scan import scan

    folder = os.path.expanduser(args.data)
    if not os.path.isdir(folder):
        raise DataError(f"The DIR argument {folder} is not a folder of class subfolders.")
    report = scan(folder, workers=args.workers)
    print(report.summary())
    if args.json:
        report.to_json(args.json)
        print(f"report: {args.json}")


# --- evaluate --------------------------------------------------------------------------

def add_evaluate(sub, command):
    p = command(sub, "evaluate", "Score a model (or an ensemble) on a folder: top-k, "
                "per-class metrics, confusion matrix.", EPILOG_EVALUATE)
    _model_args(p)
    p.add_argument("--data", required=True, metavar="DIR", help="folder of class subfolders")
    p.add_argument("--split", default="all", choices=("all", "val", "test"),
                   help="all images (default), or the run's own val/test split of DIR")
    p.add_argument("--ensemble", nargs="+", default=(), metavar="RUN",
                   help="more run directories or .keras files; probabilities are averaged")
    p.add_argument("--calibrate", action="store_true",
                   help="fit a temperature on the run's val split of DIR and report "
                   "NLL/ECE before and after; with --out, also a reliability plot "
                   "and calibrated.keras (the model plus its temperature layer)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", metavar="DIR", help="write evaluation.json and report.html here")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args):
    from transferkit.evaluation import evaluate as ev

    members = [_loaded(path, args) for path in (args.model, *args.ensemble)]
    for member in members:
        ev.check_classifier(member)
    ev.check_same_classes(members)
    data = ev.eval_data(members[0], args.data, split=args.split, batch_size=args.batch_size)
    probs, labels = ev.ensemble_predict([m.model for m in members], data.dataset,
                                        verbose=True)
    report = ev.classification_report(probs, labels, data.class_names)
    if len(members) > 1:
        print(f"ensemble of {len(members)} models (mean of probabilities)")
    print(ev.format_report(report))
    calibration = None
    if args.calibrate:
        calibration = _calibrate(members, args, probs, labels)
        report["calibration"] = calibration
    if args.out:
        from transferkit.evaluation.report import worst_images, write_eval_report
        from transferkit.models.saving import write_json

        write_json(os.path.join(args.out, "evaluation.json"), report)
        worst = worst_images(data.dataset, probs, labels, data.class_names)
        path = write_eval_report(args.out, report, worst, calibration,
                                 title=f"Evaluation of {args.model} on {args.data}")
        print(f"report: {path}")


def _calibrate(members, args, probs, labels):
    from transferkit.evaluation import calibrate as cal
    from transferkit.evaluation import evaluate as ev

    fit_probs, fit_labels = probs, labels
    if args.split != "val":
        val = ev.eval_data(members[0], args.data, split="val", batch_size=args.batch_size)
        fit_probs, fit_labels = ev.ensemble_predict([m.model for m in members], val.dataset)
    temperature = cal.fit_temperature(fit_probs, fit_labels)
    scaled = cal.apply_temperature(probs, temperature)
    result = {"temperature": temperature, "fitted_on": "val",
              "nll_before": cal.nll(probs, labels), "nll_after": cal.nll(scaled, labels),
              "before": cal.reliability(probs, labels),
              "after": cal.reliability(scaled, labels)}
    if args.out and len(members) == 1:  # an ensemble is not one model to save
        from transferkit.models.saving import read_metadata, save_model

        path = os.path.join(args.out, "calibrated.keras")
        save_model(cal.with_temperature(members[0].model, temperature), path,
                   metadata={**read_metadata(members[0].path), "temperature": temperature})
        result["model"] = path
    same = " (fitted on these same images)" if args.split == "val" else ""
    print(f"temperature {temperature:.3f}{same}: NLL {result['nll_before']:.4f} -> "
          f"{result['nll_after']:.4f}, ECE {result['before']['ece']:.4f} -> "
          f"{result['after']['ece']:.4f}")
    return result


# --- predict ---------------------------------------------------------------------------

def add_predict(sub, command):
    p = command(sub, "predict", "Print the top classes and probabilities of images.",
                EPILOG_PREDICT)
    _model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=int, default=3, help="classes to print (default 3)")
    p.add_argument("--gradcam", metavar="DIR", help="write Grad-CAM overlays here")
    p.add_argument("--json", action="store_true", help="print JSON lines instead")
    p.set_defaults(func=_run_predict)


def _run_predict(args):
    import numpy as np

    from transferkit.core.errors import DataError
    from transferkit.data.pipeline import decode_image

    loaded = _loaded(args.model, args)
    names = list(loaded.class_names) or [str(i) for i in range(loaded.model.output_shape[-1])]
    for path in args.images:
        if not os.path.isfile(path):
            raise DataError(f"The IMAGE argument {path} is not a file.")
    try:
        images = np.stack([decode_image(p, loaded.image_size).numpy() for p in args.images])
    except Exception as error:  # tf raises InvalidArgumentError with the bytes, not the name
        raise DataError(f"Could not decode one of {args.images}: {error}") from None
    probs = np.asarray(loaded.model.predict(images, verbose=0))
    if probs.shape[1] == 1:  # binary: one sigmoid unit
        probs = np.hstack([1 - probs, probs])
    for path, row in zip(args.images, probs):
        top = np.argsort(row)[::-1][:max(1, args.top_k)]
        if args.json:
            print(json.dumps({"image": path, "predictions": [
                {"class": names[i], "probability": float(row[i])} for i in top]}))
        else:
            print(f"{path}: " + ", ".join(f"{names[i]} {row[i]:.3f}" for i in top))
    if args.gradcam:
        _gradcam(args, loaded, images, probs)


def _gradcam(args, loaded, images, probs):
    from transferkit.evaluation.evaluate import load_run
    from transferkit.evaluation.gradcam import grad_cam, save_overlay

    # Grad-CAM walks the transferkit layout, which the TTA wrapper hides: reload.
    model = load_run(args.model, trusted=args.trusted).model if args.tta else loaded.model
    os.makedirs(args.gradcam, exist_ok=True)
    for i, (path, image, row) in enumerate(zip(args.images, images, probs)):
        heatmap = grad_cam(model, image, class_index=int(row.argmax()))
        # The index keeps red/0.png and blue/0.png from overwriting each other.
        name = f"{i:03d}_{os.path.splitext(os.path.basename(path))[0]}_gradcam.png"
        print(f"Grad-CAM: {save_overlay(image, heatmap, os.path.join(args.gradcam, name))}")


# --- export ----------------------------------------------------------------------------

def add_export(sub, command):
    from transferkit.evaluation.export import FORMATS, QUANTIZE

    p = command(sub, "export", "Export a model to .keras, SavedModel or TFLite, with "
                "its class names, and optionally check accuracy parity.", EPILOG_EXPORT)
    _model_args(p)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--quantize", choices=QUANTIZE,
                   help="TFLite only; int8 needs --data (representative training images)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--data", metavar="DIR", help="the run's data folder")
    p.add_argument("--check", action="store_true",
                   help="compare accuracy and latency with the source model")
    p.add_argument("--split", default="val", choices=("all", "val", "test"),
                   help="images --check scores: the run's val split of --data (default)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="largest accuracy difference --check accepts (default 0.01)")
    p.set_defaults(func=_run_export)


def _run_export(args):
    from transferkit.evaluation import export as ex
    from transferkit.core.errors import ConfigError
    from transferkit.evaluation.evaluate import eval_data

    if args.check and not args.data:
        raise ConfigError("`--check` needs `--data DIR` to evaluate the artifacts on.")
    loaded = _loaded(args.model, args)
    representative = None
    if args.quantize == "int8" and args.data:
        representative = ex.representative_images(loaded, args.data)
    path = ex.export_model(loaded, args.format, args.out, quantize=args.quantize,
                           representative=representative, metadata={"tta": args.tta})
    print(f"exported: {path} (+ labels.txt, {os.path.basename(path)}.json)")
    if args.check:
        data = eval_data(loaded, args.data, split=args.split)
        rows = ex.check_parity(loaded, [path], data, args.tolerance, trusted=args.trusted)
        print(ex.format_parity(rows, args.tolerance))
        ex.raise_on_mismatch(rows, args.tolerance)


COMMANDS = (add_scan, add_evaluate, add_predict, add_export)


def register(sub, command):
    """Add this module's commands to the `transferkit` subparsers."""
    for add in COMMANDS:
        add(sub, command)
