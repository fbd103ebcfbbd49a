"""report.html with PNG plots: what a person looks at after a run.

    write_report("runs/pets", model, data, history)        # at the end of `train`
    write_eval_report("runs/pets/eval", report, worst=..., reliability=...)

Plots go to `<out_dir>/report/*.png` and the HTML links them by relative path, so the
folder can be copied or zipped and still opens in a browser. Figures are drawn with
`matplotlib.figure.Figure` (Agg, no pyplot state), so this works headless and in
threads.
"""

import html
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from transferkit.core.files import atomic_path, write_text
from transferkit.core.rundir import REPORT_DIR, REPORT_FILE
from transferkit.core.task_registry import get_task
from transferkit.evaluation.evaluate import predict_outputs, worst_predictions
from transferkit.models.novelty import novelty_inputs, novelty_summary

PLOTS = REPORT_DIR  # the folder beside report.html holding its PNGs


def _save(fig, folder, name):
    os.makedirs(os.path.join(folder, PLOTS), exist_ok=True)
    path = os.path.join(folder, PLOTS, name)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return f"{PLOTS}/{name}"


def _plain(text):
    """`text` shown as written: a `$` would start matplotlib math text, and a class
    name like "$5 bill" would then fail to draw (or draw as math)."""
    return str(text).replace("$", r"\$")


def plot_history(history, folder):
    """Loss and accuracy per epoch, train and val, with the fine-tuning start marked."""
    epochs = [r["epoch"] for r in history]
    metrics = [m for m in ("loss", "accuracy") if any(m in r for r in history)]
    fig = Figure(figsize=(5 * len(metrics), 3.6))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            values = [r.get(key, np.nan) for r in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, label=key, markersize=4)
        starts = [r["epoch"] for a, r in zip(history, history[1:]) if r["phase"] != a["phase"]]
        for start in starts:  # the boundary sits between the last and first epochs
            ax.axvline(start - 0.5, color="gray", linestyle=":", label=f"start of "
                       f"{history[epochs.index(start)]['phase']}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    return _save(fig, folder, "learning_curves.png")


def plot_confusion(matrix, class_names, folder):
    """The confusion matrix (rows: true class), counts written in each cell."""
    matrix = np.asarray(matrix)
    n = len(matrix)
    size = min(2 + 0.5 * n, 14)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), [_plain(str(c)[:15]) for c in class_names], rotation=45,
                  ha="right")
    ax.set_yticks(range(n), [_plain(str(c)[:15]) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(col, row, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > matrix.max() / 2 else "black")
    return _save(fig, folder, "confusion_matrix.png")


def plot_per_class(per_class, folder):
    """Each class's scores side by side (precision and recall; IoU for segmentation)."""
    names = list(per_class)
    keys = _score_keys(per_class)
    x = np.arange(len(names))
    width = 0.8 / max(len(keys), 1)
    fig = Figure(figsize=(max(5, 0.5 * len(names) + 2), 3.6))
    ax = fig.add_subplot()
    for k, key in enumerate(keys):
        ax.bar(x + (k - (len(keys) - 1) / 2) * width, [per_class[n][key] for n in names],
               width, label=key)
    ax.set_xticks(x, [_plain(n[:15]) for n in names], rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return _save(fig, folder, "per_class.png")


def _score_keys(per_class):
    """The per-class columns to plot: precision and recall, else every score (IoU)."""
    first = next(iter(per_class.values()), {})
    if "precision" in first:
        return ["precision", "recall"]
    return [k for k in first if k != "support"]


def plot_histogram(name, edges, counts, folder):
    """A bar chart of a report's histogram (e.g. the box IoU of every image)."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    edges = np.asarray(edges, dtype=float)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black")
    ax.set_xlabel(name)
    ax.set_ylabel("images")
    return _save(fig, folder, "histogram_" + "".join(
        c if c.isalnum() else "_" for c in name) + ".png")


def plot_curves(name, curve, folder):
    """One line per series of a report's curve ({"x", "xlabel", "ylabel", "series":
    {name: y}}), e.g. a detector's precision-recall curve per class."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for label, ys in curve["series"].items():
        ax.plot(curve["x"], ys, label=_plain(label))
    ax.set_xlabel(curve.get("xlabel", ""))
    ax.set_ylabel(curve.get("ylabel", ""))
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    if curve["series"]:
        ax.legend(fontsize=8)
    return _save(fig, folder, "curve_" + "".join(
        c if c.isalnum() else "_" for c in name) + ".png")


def plot_novelty(summary, folder):
    """The novelty scores' histogram (known images; unknown ones when scored), the
    threshold marked: a `novelty_summary`."""
    hist = summary["histogram"]
    edges = np.asarray(hist["edges"], dtype=float)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for key, label, colour in (("known", "validation" if "unknown" not in hist
                                else "labelled images", "tab:blue"),
                               ("unknown", "unknown images", "tab:orange")):
        if key in hist:
            ax.bar(edges[:-1], hist[key], width=np.diff(edges), align="edge", alpha=0.6,
                   color=colour, edgecolor="black", label=label)
    ax.axvline(summary["threshold"], color="red", linestyle="--",
               label=f"threshold {summary['threshold']:.4g}")
    ax.set_xlabel(f"novelty ({summary['detector']}; higher: more unusual)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return _save(fig, folder, "novelty.png")


def _novelty_html(summary, folder):
    """The Novelty section's body: settings, rejection, candidates, histogram."""
    text = (f"<p>detector <b>{html.escape(summary['detector'])}</b>, chosen by AUROC "
            f"against {html.escape(summary['criterion'])} outliers; threshold "
            f"{summary['threshold']:.6g}, calibrated to a false-rejection rate of "
            f"{summary['false_rejection']:.1%} on validation; {summary['rejected']:.1%} "
            "of these images called unknown.</p>")
    if "unknown_images" in summary:
        text += (f"<p>{summary['unknown_images']} unknown images: AUROC "
                 f"{summary['auroc']:.4f}, {summary['unknown_rejected']:.1%} rejected.</p>")
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{value:.4f}</td></tr>"
                   for name, value in summary["candidates"].items())
    criterion = html.escape(summary["criterion"])
    return (text + f"<table><tr><th>candidate</th><th>AUROC ({criterion})</th></tr>{rows}"
            "</table>" + _img(plot_novelty(summary, folder), "novelty histogram"))


def plot_images(images, titles, folder, name, columns=6):
    """A grid of raw RGB 0-255 images with a title under each."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(2 * columns, 2.2 * rows))
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
        ax.set_title(_plain(title), fontsize=7)
        ax.set_xticks([])  # no tick objects at all: building them dominates draw time
        ax.set_yticks([])
        ax.axis("off")
    return _save(fig, folder, name)


def plot_reliability(before, after, folder):
    """Reliability diagram: accuracy against confidence, before and after scaling."""
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect")
    for data, label in ((before, "before"), (after, "after")):
        if data is None:
            continue
        used = np.asarray(data["count"]) > 0
        ax.plot(np.asarray(data["confidence"])[used], np.asarray(data["accuracy"])[used],
                "-o", label=f"{label} (ECE {data['ece']:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return _save(fig, folder, "reliability.png")


def write_html(folder, title, sections, name=REPORT_FILE):
    """Write `name` in `folder`: sections are (heading, html_body) pairs."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    page = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "img{max-width:100%}td,th{padding:2px 10px;text-align:right}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    path = os.path.join(folder, name)
    write_text(path, page)
    return path


def _img(src, alt):
    return f"<img src='{html.escape(src)}' alt='{html.escape(alt)}'>"


def _table(report):
    # Every scalar metric, in the order the task's `score` wrote them.
    heads = ", ".join(f"{k} {v:.4f}" for k, v in report.items() if isinstance(v, float))
    text = f"<p>{report['num_images']} images: {html.escape(heads)}</p>"
    if "per_class" not in report:
        return text
    first = next(iter(report["per_class"].values()), {})
    keys = [k for k in first if k != "support"] + ["support"]
    rows = "".join(f"<tr><th>{html.escape(n)}</th>" + "".join(
        f"<td>{r[k]}</td>" if k == "support" else f"<td>{r[k]:.3f}</td>" for k in keys)
        + "</tr>" for n, r in report["per_class"].items())
    header = "".join(f"<th>{k}</th>" for k in keys)
    return f"{text}<table><tr><th>class</th>{header}</tr>{rows}</table>"


def evaluation_sections(folder, report, worst=None, reliability=None):
    """Report sections for one evaluation (whichever parts its task's report has);
    worst: (images, titles) of the worst-predicted examples."""
    sections = [("Metrics", _table(report))]
    if "confusion_matrix" in report:
        sections.append(("Confusion matrix", _img(plot_confusion(
            report["confusion_matrix"], report["class_names"], folder), "confusion matrix")))
    if "per_class" in report:
        sections.append(("Per-class scores",
                         _img(plot_per_class(report["per_class"], folder), "per-class")))
    for name, curve in report.get("curves", {}).items():
        sections.append((name[:1].upper() + name[1:], _img(plot_curves(name, curve, folder),
                                                          name)))
    for name, hist in report.get("histograms", {}).items():
        sections.append((f"Histogram of {name}", _img(plot_histogram(
            name, hist["edges"], hist["counts"], folder), f"histogram of {name}")))
    if worst and len(worst[0]):
        sections.append(("Worst-predicted images", _img(plot_images(
            *worst, folder, "worst.png"), "worst-predicted images")))
    if report.get("novelty"):  # a `novelty_summary`
        sections.append(("Novelty", _novelty_html(report["novelty"], folder)))
    if reliability:
        sections.append(("Calibration (temperature scaling)",
                         f"<p>temperature {reliability['temperature']:.3f}</p>" + _img(
                             plot_reliability(reliability.get("before"),
                                              reliability.get("after"), folder),
                             "reliability diagram")))
    return sections


def worst_images(dataset, task, outputs, labels, class_names, n=12):
    """(images, titles) of the `n` images with the highest loss under `task`."""
    order = worst_predictions(task, outputs, labels, n)
    wanted = {int(i): rank for rank, i in enumerate(order)}
    images = [None] * len(order)
    offset = 0
    for batch, _ in dataset:  # a second, fixed-order pass picks the images out
        for j in range(len(batch)):
            if offset + j in wanted:
                images[wanted[offset + j]] = batch[j].numpy()
        offset += len(batch)
    titles = [task.compare_caption(labels[i], outputs[i], class_names) for i in order]
    # What the model said, on each image (segmentation: its predicted mask; boxes: the
    # true and the predicted one).
    return [task.compare_picture(image, labels[i], outputs[i])
            for image, i in zip(images, order)], titles


def write_eval_report(folder, report, worst=None, reliability=None, title="Evaluation"):
    """An evaluation's report.html in `folder`."""
    os.makedirs(folder, exist_ok=True)
    return write_html(folder, title, evaluation_sections(folder, report, worst, reliability))


def write_report(out_dir, model, data, history, max_samples=18, novelty=None, *,
                 val=None, novelty_scores=None):
    """A training run's report.html: curves, samples, and the validation evaluation.

    data: the run's DataSplits (its `train` batches are augmented, so the sample grid
    shows what the model really trained on). novelty: the run's `Novelty`, shown with
    its validation scores (default None: no novelty section). val: `model`'s (outputs,
    labels) on data.val and novelty_scores: the validation images' novelty scores,
    when already computed (default: a pass over data.val each). Returns the path of
    report.html.
    """
    sections = []
    if history:
        sections.append(("Learning curves", _img(plot_history(history, out_dir),
                                                 "learning curves")))
    images, labels = _first_examples(data.train, max_samples)
    names = list(data.class_names)
    task = get_task(data.task)
    titles = [task.caption(y, names) for y in labels]
    images = [task.picture(x, y) for x, y in zip(images, labels)]  # masks: the true one
    sections.append(("Augmented training samples",
                     _img(plot_images(images, titles, out_dir, "augmented.png"),
                          "augmented training samples")))
    if data.val is not None:
        outputs, y = val if val is not None else predict_outputs(model, data.val)
        report = task.score(outputs, y, names)
        if novelty is not None:
            if novelty_scores is None:
                features, probs, logits, _ = novelty_inputs(model, data.val, task)
                novelty_scores = novelty.score(features, probs, logits)
            report["novelty"] = novelty_summary(novelty, novelty_scores)
        worst = worst_images(data.val, task, outputs, y, names)
        sections += [(f"Validation: {h}", b) for h, b in
                     evaluation_sections(out_dir, report, worst)]
    return write_html(out_dir, f"transferkit run: {os.path.basename(os.path.abspath(out_dir))}",
                      sections)


def stages_html(record):
    """A table of a run's stage timings (a `core.timing.StageTimer.to_json()` record):
    wall and CPU seconds and each stage's share of the wall time."""
    total = record["total"]["wall"] or 1.0
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{v['wall']:.1f}</td>"
                   f"<td>{v['wall'] / total:.0%}</td><td>{v['cpu']:.1f}</td></tr>"
                   for name, v in record["stages"].items())
    rows += (f"<tr><th>total</th><td>{record['total']['wall']:.1f}</td><td></td>"
             f"<td>{record['total']['cpu']:.1f}</td></tr>")
    side = "".join(f"<li>{html.escape(name)}: {v['wall']:.1f} s wall, {v['cpu']:.1f} s "
                   "CPU, in a thread beside the stages</li>"
                   for name, v in record.get("background", {}).items())
    return ("<table><tr><th>stage</th><th>wall s</th><th>share</th><th>CPU s</th></tr>"
            f"{rows}</table>" + (f"<ul>{side}</ul>" if side else ""))


def add_section(path, heading, body):
    """Append a section to a report.html written by `write_html` (e.g. what is known
    only once the report has been drawn)."""
    with open(path, encoding="utf-8") as f:
        page = f.read()
    end = page.rindex("\n</body>")
    write_text(path, f"{page[:end]}\n<h2>{html.escape(heading)}</h2>\n{body}{page[end:]}")


def _first_examples(dataset, n):
    """The first `n` (images, labels) of a batched dataset, across batches."""
    images, labels = [], []
    for x, y in dataset:
        images.extend(x.numpy()[:n - len(images)])
        labels.extend(y.numpy()[:n - len(labels)])
        if len(images) >= n:
            break
    return images, labels
