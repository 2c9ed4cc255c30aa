"""Every file `gdzoo` writes: CSV tables, JSON results and the PNG figures.

`write(command, result, out)` creates the folder `out` and writes that
command's files into it, named after the command and its problem, function
or activation; it returns the file names in the order `gdzoo` lists them.
"""

import csv
import dataclasses
import json
import math
import os

import numpy as np

from keras_gdzoo.cli import plots


def write_csv(path, header, rows):
    """A CSV file with a header row; `None` is written as an empty cell."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(["" if value is None else value for value in row] for row in rows)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):  # JSON has no NaN / Infinity
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def write_json(path, data):
    """`data` as JSON; non-finite floats become null."""
    with open(path, "w") as handle:
        json.dump(_jsonable(data), handle, indent=1)


def save_figures(stem, figures):
    """Each figure of {suffix: Figure} as `stem + suffix + ".png"`."""
    written = []
    for suffix, figure in figures.items():
        path = f"{stem}{suffix}.png"
        figure.savefig(path, dpi=figure.dpi)
        written.append(os.path.basename(path))
    return written


def _compare(result, stem):
    write_csv(stem + "-runs.csv",
              ["method", "seed", "status", "final_loss", "epochs_run", "epochs_to_goal",
               "seconds_to_goal", "seconds_total", "message"],
              ([run.method, run.seed, run.status, run.final_loss, run.epochs_run,
                run.epochs_to_goal, run.seconds_to_goal,
                run.seconds[-1] if run.seconds else None, run.message] for run in result.runs))
    keys = ["runs", "success_rate", "final_loss", "epochs_to_goal", "seconds_to_goal",
            "seconds_per_epoch"]
    write_csv(stem + "-summary.csv", ["method"] + keys,
              ([label] + [s[k] for k in keys] for label, s in result.summary.items()))
    problem = result.problem
    write_json(stem + ".json", {
        "problem": problem.name, "description": problem.description, "loss": problem.loss,
        "goal": result.goal, "epochs": result.epochs, "batch_size": result.batch_size,
        "seeds": result.seeds, "summary": result.summary,
        "runs": [dataclasses.asdict(run) for run in result.runs],
    })
    names = [os.path.basename(stem) + suffix for suffix in ("-runs.csv", "-summary.csv", ".json")]
    return names + save_figures(stem, plots.compare(result))


def _trajectories(result, stem):
    rows = []
    for label, path in result.paths.items():
        for step, (w, value) in enumerate(zip(path, result.losses(label))):
            rows.append([label, step, w[0], w[1], value])
    write_csv(stem + ".csv", ["method", "iteration", "x", "y", "loss"], rows)
    return save_figures(stem, plots.trajectories(result)) + [os.path.basename(stem) + ".csv"]


def _init(result, stem):
    rows = [
        [label, layer, float(a.mean()), float(a.var()), float(g.var())]
        for label, (activations, gradients) in result.statistics.items()
        for layer, (a, g) in enumerate(zip(activations, gradients), start=1)
    ]
    write_csv(stem + ".csv", ["scheme", "layer", "activation_mean", "activation_variance",
                              "gradient_variance"], rows)
    return [os.path.basename(stem) + ".csv"] + save_figures(stem, plots.init(result))


_WRITERS = {
    "compare": (_compare, lambda result: result.problem.name),
    "trajectories": (_trajectories, lambda result: result.function),
    "init": (_init, lambda result: result.activation),
}


def write(command, result, out):
    """Write `command`'s files for `result` into the folder `out`."""
    writer, name = _WRITERS[command]
    os.makedirs(out, exist_ok=True)
    return writer(result, os.path.join(out, f"{command}-{name(result)}"))
