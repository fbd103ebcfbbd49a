"""The report of a search: trials sorted by objective, a plot, and the best recipe.

Written into the tuning out directory:

    results.csv       one row per trial, best first: rank, trial, status, objective, then
                      every hyperparameter (blank where a trial did not use it)
    objective.png     objective per trial in the order they ran, with the best so far
    results.html      the table and the plot on one page
    best_recipe.json  the best trial's resolved RecipeConfig (`train --from-tuning`)
"""

import csv
import html
import os

from transferkit.core.errors import ConfigError
from transferkit.core.files import atomic_path, write_json, write_text
from transferkit.tuning.config import (BEST_RECIPE_FILE, OBJECTIVE_PLOT, RESULTS_CSV,
                                       RESULTS_HTML)
from transferkit.tuning.space import resolve

FIXED_COLUMNS = ("rank", "trial", "status", "objective")


def trial_rows(oracle):
    """One dict per trial of keras-tuner `oracle`, best first (unscored trials last)."""
    sign = 1 if oracle.objective.direction == "min" else -1
    rows = []
    for trial in oracle.trials.values():
        row = {"trial": trial.trial_id, "status": str(trial.status), "objective": trial.score}
        row.update({k: v for k, v in trial.hyperparameters.values.items()
                    if not k.startswith("tuner/")})
        rows.append(row)
    rows.sort(key=lambda r: (r["objective"] is None, sign * (r["objective"] or 0.0),
                             r["trial"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def write_report(tuner, base, out_dir):
    """Write results.csv/.html, objective.png and best_recipe.json; returns (rows, best
    RecipeConfig or None when no trial finished)."""
    rows = trial_rows(tuner.oracle)
    columns = list(FIXED_COLUMNS) + sorted({k for r in rows for k in r} - set(FIXED_COLUMNS))
    with atomic_path(os.path.join(out_dir, RESULTS_CSV)) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    name = tuner.oracle.objective.name
    plot_objective(rows, name, tuner.oracle.objective.direction,
                   os.path.join(out_dir, OBJECTIVE_PLOT))
    write_text(os.path.join(out_dir, RESULTS_HTML),
               _html(rows, columns, name, tuner.oracle.objective.direction))
    best = None
    finished = [t for t in tuner.oracle.get_best_trials(1) if t.score is not None]
    if finished:
        best = resolve(finished[0].hyperparameters.values, base)
        write_json(os.path.join(out_dir, BEST_RECIPE_FILE), best.to_dict())
    return rows, best


def plot_objective(rows, name, direction, path):
    """A PNG of the objective per trial (in run order) with the best value so far."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    scored = sorted((r["trial"], r["objective"]) for r in rows if r["objective"] is not None)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if scored:
        ids, values = zip(*scored)
        best = max if direction == "max" else min
        running = [best(values[: i + 1]) for i in range(len(values))]
        ax.plot(range(len(ids)), values, "o", label=name)
        ax.plot(range(len(ids)), running, "-", label="best so far")
        ax.set_xticks(range(len(ids)), ids, rotation=90 if len(ids) > 12 else 0)
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel(name)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _html(rows, columns, name, direction):
    def cell(value):
        if isinstance(value, float):
            value = f"{value:.6g}"
        return f"<td>{html.escape('' if value is None else str(value))}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>"
                     for r in rows)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>transferkit tuning results</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head>
<body><h1>Tuning results</h1>
<p>{len(rows)} trials, sorted by {html.escape(name)} ({direction}imised; best first).
The best recipe is in <a href="{BEST_RECIPE_FILE}">{BEST_RECIPE_FILE}</a>.</p>
<img src="{OBJECTIVE_PLOT}" alt="{html.escape(name)} per trial">
<table><tr>{head}</tr>
{body}
</table></body></html>
"""


def best_recipe_path(out_dir):
    """The `best_recipe.json` of a finished search in `out_dir` (ConfigError if none)."""
    path = os.path.join(out_dir, BEST_RECIPE_FILE)
    if not os.path.exists(path):
        raise ConfigError(f"No best_recipe.json in {out_dir}: is it the out directory "
                          "of a finished `transferkit tune`?")
    return path
