"""`transferkit evaluate`: score a model (or an ensemble) on a folder or CSV, with
optional TTA and temperature calibration, through the model's task."""

import os

from transferkit.cli.common import add_model_args, check_out, command, loaded_model
from transferkit.cli.flags import add_config_flags, config_from_args
from transferkit.core.errors import ConfigError
from transferkit.core.files import write_json
from transferkit.core.rundir import REPORT_FILE
from transferkit.evaluation.config import EvaluateConfig

# What `--out` receives besides the report.
EVALUATION_FILE, CALIBRATED_FILE = "evaluation.json", "calibrated.keras"

EPILOG = """examples:
  transferkit evaluate runs/pets --data data/pets --split val
  transferkit evaluate runs/pets --data data/test --tta ten_crop --out runs/pets/eval
  transferkit evaluate runs/a --ensemble runs/b runs/c --data data/test
  transferkit evaluate runs/pets --data data/pets --split test --calibrate --out eval/
  transferkit evaluate downloaded.keras --data data/test --trusted   # runs its code!
"""


def register(sub):
    p = command(sub, "evaluate", "Score a model (or an ensemble) on labelled images: "
                "accuracy, top-k, per-class metrics, confusion matrix (or MAE/RMSE for "
                "regression).", EPILOG)
    add_model_args(p)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of class subfolders, or a CSV of path,label rows")
    p.add_argument("--ensemble", nargs="+", default=(), metavar="RUN",
                   help="more run directories or .keras files; outputs are averaged")
    p.add_argument("--calibrate", action="store_true",
                   help="fit a temperature on the run's val split of DIR and report "
                   "NLL/ECE before and after; with --out, also a reliability plot "
                   "and calibrated.keras (the model plus its temperature layer)")
    p.add_argument("--label-issues", action="store_true",
                   help="also list images whose label the model doubts (confident "
                   "learning, cleanlab; one class per image): useful on a test set "
                   "the model never trained on")
    p.add_argument("--unknown-data", metavar="DIR",
                   help="images of none of the classes: report how well the model's "
                   "novelty score tells them apart (AUROC) and how many it rejects")
    add_config_flags(p, EvaluateConfig)  # --split, --batch-size
    p.add_argument("--follow-links", action="store_true", default=None,
                   help="use links in --data whose target is outside it (default: the "
                   "run's setting, else they are reported and skipped)")
    p.add_argument("--out", metavar="DIR",
                   help=f"write {EVALUATION_FILE} and {REPORT_FILE} here")
    p.set_defaults(func=run)


def run(args):
    settings = config_from_args(EvaluateConfig, args)
    check_out(args.out, args.model, (REPORT_FILE, CALIBRATED_FILE), "eval")
    from transferkit.data.files import folder_dataset
    from transferkit.evaluation import calibrate as cal
    from transferkit.evaluation import evaluate as ev
    from transferkit.evaluation.report import worst_images, write_eval_report

    members = [loaded_model(path, args) for path in (args.model, *args.ensemble)]
    ev.check_same_classes(members)
    first, task = members[0], members[0].task
    if args.unknown_data and first.novelty is None:
        raise ConfigError(f"--unknown-data needs a model with a novelty score; "
                          f"{first.path} (task {task.name!r}) has none: `train` fits one "
                          "for tasks with one class per image (multiclass, binary), "
                          "unless novelty is off.")
    if args.calibrate:
        task.check_calibratable()
    # Every input read and checked before the first pass of a model over them.
    data = ev.eval_data(first, args.data, split=settings.split,
                        batch_size=settings.batch_size, follow_links=args.follow_links)
    unknown = None if not args.unknown_data else folder_dataset(
        args.unknown_data, "--unknown-data", first.input.size,
        batch_size=settings.batch_size)[0]
    fit = None
    if args.calibrate:
        fit = data if settings.split == "val" else ev.eval_data(
            first, args.data, split="val", batch_size=settings.batch_size,
            follow_links=args.follow_links)
        cal.check_calibration_size(len(fit.files))
    outputs, labels = ev.ensemble_outputs([m.model for m in members], data.dataset, task,
                                          verbose=True)
    report = task.score(outputs, labels, data.class_names)
    if len(members) > 1:
        print(f"ensemble of {len(members)} models (mean of outputs)")
    print(ev.format_report(report, task))
    if args.label_issues:
        report["label_issues"] = _label_issues(task, outputs, labels, data)
    if first.novelty is not None:
        report["novelty"] = _novelty(first, data, unknown)
    calibration = None
    if args.calibrate:
        calibration = _calibrate(members, args, settings, outputs, labels, fit)
        report["calibration"] = calibration
    if args.out:
        write_json(os.path.join(args.out, EVALUATION_FILE), report)
        worst = worst_images(data.dataset, task, outputs, labels, data.class_names)
        path = write_eval_report(args.out, report, worst, calibration,
                                 title=f"Evaluation of {args.model} on {args.data}")
        print(f"report: {path}")


def _novelty(loaded, data, unknown=None):
    """The rejection rate of the labelled images and, with `unknown` (the
    --unknown-data images, a dataset), the AUROC."""
    from transferkit.evaluation import evaluate as ev
    from transferkit.models.novelty import novelty_summary

    known = ev.novelty_scores(loaded, data.dataset)
    if unknown is not None:
        unknown = ev.novelty_scores(loaded, unknown)
    out = novelty_summary(loaded.novelty, known, unknown)
    print(f"novelty ({out['detector']}): {out['rejected']:.1%} of these labelled images "
          f"called unknown (calibrated to {out['false_rejection']:.0%} on validation)")
    if unknown is not None:
        print(f"unknown images: AUROC {out['auroc']:.3f}, {out['unknown_rejected']:.1%} "
              f"of {len(unknown)} rejected")
    return out


def _label_issues(task, outputs, labels, data):
    from transferkit.data_doctor import issues as data_issues

    ids = task.single_label_ids(labels)  # refuses tasks without one class per image
    rows = data_issues.label_issues(task.probabilities(outputs), ids, data.files,
                                    data.class_names, ["evaluated"] * len(ids))
    print(f"likely label issues: {len(rows)} of {len(ids)} images")
    for row in sorted(rows, key=lambda r: -r["score"])[:20]:
        print(f"  {row['score']:.2f}  {row['path']}: {row['given_label']} -> "
              f"{row['suggested_label']}?")
    return rows


def _without_novelty(metadata):
    # A temperature changes the probabilities the novelty threshold was calibrated on.
    return {k: v for k, v in metadata.items() if k != "novelty"}


def _calibrate(members, args, settings, outputs, labels, fit):
    """Temperature scaling fitted on `fit` (the val split's EvalData, checked up front;
    the scored outputs themselves when they are the val split's)."""
    from transferkit.evaluation import calibrate as cal
    from transferkit.evaluation import evaluate as ev
    from transferkit.models.bundle import read_bundle_metadata, save_bundle

    task = members[0].task
    fit_outputs, fit_labels = outputs, labels
    if settings.split != "val":
        fit_outputs, fit_labels = ev.ensemble_outputs([m.model for m in members],
                                                      fit.dataset, task)
    result = {**cal.calibrate(task, fit_outputs, fit_labels, outputs, labels),
              "fitted_on": "val"}
    if args.out and len(members) == 1:  # an ensemble is not one model to save
        path = os.path.join(args.out, CALIBRATED_FILE)
        model = members[0].keras_model("--calibrate with --out (calibrated.keras)")
        save_bundle(cal.with_temperature(model, result["temperature"], task), path,
                    {**_without_novelty(read_bundle_metadata(members[0].path)),
                     "temperature": result["temperature"]})
        result["model"] = path
    same = " (fitted on these same images)" if settings.split == "val" else ""
    print(f"temperature {result['temperature']:.3f}{same}: NLL {result['nll_before']:.4f} "
          f"-> {result['nll_after']:.4f}, ECE {result['before']['ece']:.4f} -> "
          f"{result['after']['ece']:.4f}")
    return result
