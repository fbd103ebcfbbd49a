"""`transferkit scan`: the data health scan of a folder, on its own."""

import os

from transferkit.cli.common import command
from transferkit.core.errors import DataError
from transferkit.core.task_registry import DEFAULT_TASK, get_task, task_names

EPILOG = """examples:
  transferkit scan data/pets
  transferkit scan ~/photos --json scan.json
  transferkit scan data/segmentation --task segmentation   # images/ + masks/
  transferkit scan data/localization/boxes.csv --task localization   # + box checks
  transferkit scan data/detection/boxes.csv --task detection   # many boxes per image
"""


def register(sub):
    p = command(sub, "scan", "Check an image folder: unreadable, odd and duplicate "
                "files, class counts.", EPILOG)
    p.add_argument("data", metavar="DIR", help="folder of class subfolders (or what --task reads)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--workers", type=int, help="decoding threads (default: automatic)")
    p.add_argument("--follow-links", action="store_true",
                   help="also read files that symbolic links outside DIR point at")
    p.add_argument("--task", default=DEFAULT_TASK, choices=sorted(task_names()),
                   help="segmentation: DIR holds images/ and masks/, and every mask is "
                   "checked too (missing, extra, size, class range); localization: "
                   "DIR is a boxes CSV, a folder holding boxes.csv or a Pascal VOC "
                   "folder, and every box is checked too; detection: the same, or a "
                   "COCO JSON, a YOLO folder or data.yaml")
    p.set_defaults(func=run)


def run(args):
    folder = os.path.expanduser(args.data)
    if not (os.path.isdir(folder) or os.path.isfile(folder)):
        raise DataError(f"The DIR argument {folder} is not a folder of class subfolders "
                        "(nor a file, such as the CSV or JSON segmentation, "
                        "localization and detection read).")
    if args.workers is not None and args.workers < 1:
        raise DataError(f"The `--workers` argument should be at least 1. Received: "
                        f"--workers {args.workers}")
    report = get_task(args.task).scan_source(folder, workers=args.workers,
                                             follow_links=args.follow_links)
    print(report.summary())
    if args.json:
        report.to_json(args.json)
        print(f"report: {args.json}")
