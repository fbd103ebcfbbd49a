"""`transferkit add-class`: add classes to a trained classifier without retraining it."""

from transferkit.app.config import AddClassConfig
from transferkit.cli.common import command
from transferkit.cli.flags import add_config_flags, config_from_args
from transferkit.core.timing import StageTimer

EPILOG = """examples:
  transferkit add-class runs/shapes --data data/new_classes --out runs/shapes_plus
  transferkit add-class runs/pets --data new.csv --out runs/pets2 --epochs 0   # imprint only

DATA holds one subfolder per new class (or a CSV of path,label rows). The backbone is
left as it is; the output layer gains one imprinted unit per new class and the head
alone trains briefly on cached features of the new images plus the replayed cached
features of the run's own training images (which must still be where the run's
config.json says). The novelty score is refitted; --out becomes a complete run
directory whose run.json records what it was derived from.
"""


def register(sub):
    p = command(sub, "add-class", "Add classes to a trained classifier: imprint them, "
                "then fit only the head on cached features.", EPILOG)
    p.add_argument("run", metavar="RUN", help="the run directory to extend")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of new class subfolders, or a CSV of path,label rows")
    p.add_argument("--out", required=True, metavar="DIR", help="the new run directory")
    add_config_flags(p, AddClassConfig)  # --epochs, --patience
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    p.add_argument("--trusted", action="store_true",
                   help="the run's model may run Python code when loaded")
    p.set_defaults(func=run)


def run(args):
    settings = config_from_args(AddClassConfig, args)
    from transferkit.app.add_class import add_classes

    # The process's start-up (interpreter, imports, TensorFlow's above, arguments) is
    # its first stage.
    timer = StageTimer.since_process_start()
    result = add_classes(args.run, args.data, args.out, epochs=settings.epochs,
                         patience=settings.patience, safe_mode=not args.trusted,
                         overwrite=args.overwrite, timer=timer)
    val = result.metrics.get("val", {})
    print(f"classes: {', '.join(result.class_names)}")
    if "new_classes_recall" in val:
        before = val.get("old_classes_accuracy_before")
        print(f"validation: old classes {val['old_classes_accuracy']:.3f} (before "
              f"{before:.3f}), new classes' recall {val['new_classes_recall']:.3f}")
    print(f"took {result.seconds:.1f} s; run: {result.out_dir}")
