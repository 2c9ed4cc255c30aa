"""The `gdzoo` command (also `python -m keras_gdzoo`).

Three subcommands, each printing a table and writing PNG plots and CSV/JSON
results into `--out` (default `./gdzoo-out`):

* `gdzoo compare`: train a built-in problem's network with several methods
  from the same initial weights per seed; report the final loss, epochs and
  seconds to the problem's error goal, and the success rate (the MATLAB
  benchmark's way of choosing a training function).
* `gdzoo trajectories`: each method's path on a 2-D function's contours
  (the lecture's GD / momentum / NAG / steepest descent / CG / LM pictures).
* `gdzoo init`: variances and histograms of activations and gradients per
  layer of a deep network for several weight initializations (the lecture's
  "information flow" figure).

`main(argv)` returns the exit code: 0 on success, 1 when a data set cannot be
loaded, 2 for bad arguments (a one-line message on stderr).
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import statistics
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo import problems as problems_lib
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import FunctionObjective


# --------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Method:
    """A short name on the command line and how to build its optimizer.

    Attributes:
        class_name: the `keras_gdzoo` class.
        options: keyword arguments for it besides the learning rate.
        learning_rate: the default for full-batch training of the small
            built-in networks; `None` for methods without one.
        trajectory_rates: learning rates for `gdzoo trajectories`, by function.
    """

    class_name: str
    options: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = None
    trajectory_rates: dict = dataclasses.field(default_factory=dict)

    @property
    def is_solver(self):
        return self.learning_rate is None

    def build(self, learning_rate=None, **overrides):
        cls = getattr(gz, self.class_name)
        options = dict(self.options, **overrides)
        if not self.is_solver:
            options["learning_rate"] = learning_rate or self.learning_rate
        return cls(**options)


def _rates(quadratic, rosenbrock, beale, saddle):
    return {"quadratic": quadratic, "rosenbrock": rosenbrock, "beale": beale, "saddle": saddle}


METHODS = {
    "gd": Method("GradientDescent", learning_rate=0.1,
                 trajectory_rates=_rates(0.15, 1.5e-3, 1e-2, 0.05)),
    "momentum": Method("Momentum", {"momentum": 0.9}, learning_rate=0.1,
                       trajectory_rates=_rates(0.01, 1.5e-4, 1e-3, 0.01)),
    "nag": Method("NesterovMomentum", {"momentum": 0.9}, learning_rate=0.05,
                  trajectory_rates=_rates(0.01, 1.5e-4, 1e-3, 0.01)),
    "adagrad": Method("AdaGrad", learning_rate=0.3,
                      trajectory_rates=_rates(1.0, 0.5, 0.5, 0.5)),
    "rmsprop": Method("RMSProp", learning_rate=0.001,
                      trajectory_rates=_rates(0.1, 0.02, 0.05, 0.05)),
    "adadelta": Method("AdaDelta", learning_rate=1.0,
                       trajectory_rates=_rates(1.0, 1.0, 1.0, 1.0)),
    "adam": Method("Adam", learning_rate=0.02,
                   trajectory_rates=_rates(0.2, 0.05, 0.1, 0.1)),
    "adamax": Method("Adamax", learning_rate=0.05,
                     trajectory_rates=_rates(0.2, 0.05, 0.1, 0.1)),
    "nadam": Method("Nadam", learning_rate=0.02,
                    trajectory_rates=_rates(0.2, 0.05, 0.1, 0.1)),
    "sd": Method("SteepestDescent"),
    "cg-fr": Method("ConjugateGradient", {"beta": "fletcher-reeves"}),
    "cg-pr": Method("ConjugateGradient", {"beta": "polak-ribiere"}),
    "bfgs": Method("BFGS"),
    "lbfgs": Method("LBFGS"),
    "rprop": Method("Rprop", {"variant": "irprop+"}),
    "rprop+": Method("Rprop", {"variant": "rprop+"}),
    "rprop-": Method("Rprop", {"variant": "rprop-"}),
    "irprop+": Method("Rprop", {"variant": "irprop+"}),
    "irprop-": Method("Rprop", {"variant": "irprop-"}),
    "newton": Method("Newton"),
    "lm": Method("LevenbergMarquardt"),
}

DEFAULT_COMPARE_METHODS = "lm,bfgs,rprop,cg-pr,adam,gd"
# Options `gdzoo compare` passes to a problem unless the user gives them.
PROBLEM_DEFAULTS = {"sinc": {"n": 2000}}


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


def parse_methods(text):
    """'gd:0.5,adam' -> [('gd:0.5', 'gd', 0.5), ('adam', 'adam', None)]."""
    parsed = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, rate = item.partition(":")
        if name not in METHODS:
            raise UsageError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        learning_rate = None
        if rate:
            if METHODS[name].is_solver:
                raise UsageError(f"method {name!r} takes no learning rate (got {item!r})")
            learning_rate = _positive(float, rate, f"learning rate in {item!r}")
        if any(label == item for label, _, _ in parsed):
            raise UsageError(f"method {item!r} is given twice")
        parsed.append((item, name, learning_rate))
    if not parsed:
        raise UsageError("no methods given")
    return parsed


def _positive(kind, text, what):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a positive number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise UsageError(f"{what} must be positive, got {text!r}")
    return value


# --------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """One method trained from one seed."""

    method: str
    seed: int
    status: str = "not run"  # "goal", "not reached", "stopped", "diverged", "error"
    message: str = ""
    losses: list = dataclasses.field(default_factory=list)  # epoch 0 = initial
    seconds: list = dataclasses.field(default_factory=list)  # cumulative, epoch 0 = 0
    epochs_to_goal: int = None
    seconds_to_goal: float = None

    @property
    def final_loss(self):
        return self.losses[-1] if self.losses else math.nan

    @property
    def epochs_run(self):
        return max(len(self.losses) - 1, 0)


class GoalRecorder(keras.callbacks.Callback):
    """Times each epoch, records the training loss after it, stops at the goal.

    The loss is evaluated on the whole training set after every epoch (the
    weights the epoch produced), outside the timed interval, so every method
    is measured the same way whatever its fit logs report.
    """

    def __init__(self, run, evaluate, goal):
        super().__init__()
        self.run, self.evaluate, self.goal = run, evaluate, goal
        self._started = None
        self.solver_stopped = False

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._started
        loss = self.evaluate()
        self.run.losses.append(loss)
        self.run.seconds.append(self.run.seconds[-1] + elapsed)
        if logs and float(logs.get(STOP, 0.0)) > 0:
            self.solver_stopped = True
        if not math.isfinite(loss):
            self.run.status = "diverged"
            self.model.stop_training = True
        elif self.goal is not None and loss <= self.goal and self.run.epochs_to_goal is None:
            self.run.epochs_to_goal = len(self.run.losses) - 1
            self.run.seconds_to_goal = self.run.seconds[-1]
            self.run.status = "goal"
            self.model.stop_training = True


class _StateSnapshot(keras.callbacks.Callback):
    """Keeps the weights and optimizer state as they are when training starts."""

    values = None

    def on_train_begin(self, logs=None):
        self.variables = list(self.model.variables) + list(self.model.optimizer.variables)
        self.values = [np.array(v.numpy()) for v in self.variables]

    def restore(self):
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)


def _loss_evaluator(problem, model, chunk=8192):
    """A function returning the mean training loss at the current weights."""
    loss_fn = keras.losses.get(problem.loss)  # per-example losses
    forward = tf.function(
        lambda x, y: keras.ops.mean(loss_fn(y, model(x, training=False))), reduce_retracing=True
    )
    x, y = problem.x_train, problem.y_train

    def evaluate():
        total = 0.0
        for start in range(0, len(x), chunk):
            size = min(chunk, len(x) - start)
            total += float(forward(x[start : start + size], y[start : start + size])) * size
        return total / len(x)

    return evaluate


def _training_data(problem, batch_size, seed):
    """An endless dataset of (x, y) batches and the number of steps per epoch.

    Keras rebuilds its input pipeline for NumPy arrays on every epoch, which
    costs far more than one step of these small networks; a repeated
    `tf.data.Dataset` does not.
    """
    x, y = problem.x_train, problem.y_train
    if batch_size >= len(x):
        return tf.data.Dataset.from_tensors((x, y)).repeat(), 1
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    return dataset.batch(batch_size).repeat().prefetch(2), math.ceil(len(x) / batch_size)


def train_once(problem, label, method_name, learning_rate, seed, epochs, batch_size, goal):
    """Train the problem's network once; every failure becomes the Run's status."""
    run = Run(method=label, seed=seed)
    try:
        keras.utils.set_random_seed(seed)
        model = problem.build_model(seed)
        trainer = gz.wrap(model)
        trainer.compile(optimizer=METHODS[method_name].build(learning_rate), loss=problem.loss)
        evaluate = _loss_evaluator(problem, model)
        run.losses, run.seconds = [evaluate()], [0.0]
        dataset, steps = _training_data(problem, batch_size, seed)
        # Trace the train step on one throw-away step, then put the weights and
        # optimizer state back: the timings then exclude tf.function tracing.
        snapshot = _StateSnapshot()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*stopped training")
            trainer.fit(dataset, epochs=1, steps_per_epoch=1, callbacks=[snapshot],
                        shuffle=False, verbose=0)
        snapshot.restore()
        recorder = GoalRecorder(run, evaluate, goal)
        run.status = "not reached"
        with warnings.catch_warnings():
            # SolverModel warns when a solver stops; the run's status says it.
            warnings.filterwarnings("ignore", message=".*stopped training")
            trainer.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[recorder],
                        shuffle=False, verbose=0)
        if run.status == "not reached" and (recorder.solver_stopped or run.epochs_run < epochs):
            run.status = "stopped"
            reason = getattr(trainer.optimizer, "stop_message", "training was stopped")
            run.message = f"{type(trainer.optimizer).__name__}: {reason}"
    except Exception as error:  # a failing method is reported, never fatal
        run.status = "error"
        run.message = _one_line(error)
    return run


def _one_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def summarize(runs):
    """Per method: success rate and medians (over seeds) of the results."""
    summary = {}
    for label in dict.fromkeys(run.method for run in runs):
        mine = [run for run in runs if run.method == label]
        reached = [run for run in mine if run.status == "goal"]
        finals = [run.final_loss for run in mine if run.losses]
        summary[label] = {
            "runs": len(mine),
            "success_rate": len(reached) / len(mine),
            "final_loss": _median(finals),
            "epochs_to_goal": _median([run.epochs_to_goal for run in reached]),
            "seconds_to_goal": _median([run.seconds_to_goal for run in reached]),
            "seconds_per_epoch": _median(
                [run.seconds[-1] / run.epochs_run for run in mine if run.epochs_run]
            ),
            "statuses": {s: sum(r.status == s for r in mine) for s in {r.status for r in mine}},
            "messages": sorted({run.message for run in mine if run.message}),
        }
    return summary


def _median(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def compare(args):
    options = dict(PROBLEM_DEFAULTS.get(args.problem, {}))
    if args.samples is not None:
        options["n"] = args.samples
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    try:
        problem = problems_lib.get(args.problem, **options)
    except ValueError as error:
        raise UsageError(str(error)) from None
    methods = parse_methods(args.methods)
    epochs = args.epochs or problem.epochs
    goal = problem.goal if args.goal is None else args.goal
    batch_size = args.batch_size or problem.batch_size or problem.n
    os.makedirs(args.out, exist_ok=True)

    print(f"{problem.description}; goal: loss <= {goal:g} ({problem.loss}); "
          f"{epochs} epochs, batch size {batch_size}, {args.seeds} seed(s)", flush=True)
    runs, total = [], len(methods) * args.seeds
    for label, name, learning_rate in methods:
        for seed in range(args.seeds):
            run = train_once(problem, label, name, learning_rate, seed, epochs, batch_size, goal)
            runs.append(run)
            print(f"[{len(runs)}/{total}] {_progress_line(run)}", flush=True)

    summary = summarize(runs)
    stem = os.path.join(args.out, f"compare-{problem.name}")
    _write_runs_csv(stem + "-runs.csv", runs)
    _write_summary_csv(stem + "-summary.csv", summary)
    _write_json(stem + ".json", {
        "problem": problem.name, "description": problem.description, "loss": problem.loss,
        "goal": goal, "epochs": epochs, "batch_size": batch_size, "seeds": args.seeds,
        "summary": summary,
        "runs": [dataclasses.asdict(run) for run in runs],
    })
    plots = _plot_compare(stem, problem, runs, goal)
    print()
    print(_compare_table(summary))
    print(_fastest_line(summary))
    written = [os.path.basename(stem) + suffix for suffix in ("-runs.csv", "-summary.csv", ".json")]
    print(f"wrote {', '.join(written + plots)} in {args.out}")
    return 0


def _progress_line(run):
    head = f"{run.method:<10} seed {run.seed}: "
    if run.status == "goal":
        return head + (f"goal after {run.epochs_to_goal} epochs, {run.seconds_to_goal:.2f} s")
    if run.status == "error":
        return head + f"error ({run.message})"
    detail = f"{run.epochs_run} epochs, {run.seconds[-1]:.2f} s, final loss {run.final_loss:.3g}" \
        if run.losses else ""
    return head + f"{run.status} ({detail}{'; ' + run.message if run.message else ''})"


def _format(value, spec):
    return "-" if value is None else format(value, spec)


def _compare_table(summary):
    header = ["method", "success", "final loss", "epochs to goal", "seconds to goal",
              "s/epoch", "notes"]
    rows = []
    for label, s in summary.items():
        notes = ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items()) if k != "goal")
        if s["messages"]:
            notes += ("; " if notes else "") + "; ".join(s["messages"])[:60]
        rows.append([
            label,
            f"{s['success_rate']:.0%}",
            _format(s["final_loss"], ".3g"),
            _format(s["epochs_to_goal"], ".0f"),
            _format(s["seconds_to_goal"], ".3f"),
            _format(s["seconds_per_epoch"], ".2g"),
            notes,
        ])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append("(medians over seeds; epochs and seconds over the runs that reached the goal; "
                 "seconds exclude tracing and the per-epoch loss evaluation)")
    return "\n".join(lines)


def _fastest_line(summary):
    timed = sorted(
        (s["seconds_to_goal"], label) for label, s in summary.items() if s["seconds_to_goal"]
    )
    if not timed:
        return "No method reached the goal."
    (best, winner), rest = timed[0], timed[1:]
    if not rest:
        return f"Only {winner} reached the goal ({best:.3f} s median)."
    (second, runner_up) = rest[0]
    return (f"Fastest to the goal: {winner} ({best:.3f} s median), "
            f"{second / best:.1f}x faster than the next, {runner_up} ({second:.3f} s).")


def _write_runs_csv(path, runs):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed", "status", "final_loss", "epochs_run",
                         "epochs_to_goal", "seconds_to_goal", "seconds_total", "message"])
        for run in runs:
            writer.writerow([
                run.method, run.seed, run.status, _csv(run.final_loss), run.epochs_run,
                _csv(run.epochs_to_goal), _csv(run.seconds_to_goal),
                _csv(run.seconds[-1] if run.seconds else None), run.message,
            ])


def _write_summary_csv(path, summary):
    keys = ["runs", "success_rate", "final_loss", "epochs_to_goal", "seconds_to_goal",
            "seconds_per_epoch"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method"] + keys)
        for label, s in summary.items():
            writer.writerow([label] + [_csv(s[k]) for k in keys])


def _csv(value):
    return "" if value is None else value


def _write_json(path, data):
    def clean(value):  # JSON has no NaN / Infinity
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    with open(path, "w") as handle:
        json.dump(clean(data), handle, indent=1)


def _new_figure(width, height, layout="constrained"):
    # The object-oriented API (no pyplot) renders with Agg and leaves the
    # caller's matplotlib backend alone.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def _colors(count):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _plot_compare(stem, problem, runs, goal):
    labels = list(dict.fromkeys(run.method for run in runs))
    colors = dict(zip(labels, _colors(len(labels))))

    def draw(ax, axis):
        for label in labels:
            first = True
            for run in (r for r in runs if r.method == label and r.losses):
                x = np.arange(len(run.losses)) if axis == "epochs" else np.array(run.seconds)
                y = np.maximum(np.asarray(run.losses, dtype=float), 1e-12)
                ax.plot(x, y, color=colors[label], alpha=0.7, linewidth=1.2,
                        label=label if first else None)
                first = False
        if goal is not None:
            ax.axhline(goal, color="black", linestyle="--", linewidth=1, label=f"goal {goal:g}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch" if axis == "epochs" else "seconds (tracing excluded)")
        ax.set_ylabel(f"training loss ({problem.loss})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")

    written = []
    for axis in ("epochs", "seconds"):
        fig = _new_figure(6.5, 4.5)
        ax = fig.add_subplot()
        draw(ax, axis)
        ax.set_title(f"{problem.description}\nloss vs {axis}", fontsize="medium")
        fig.savefig(f"{stem}-loss-vs-{axis}.png", dpi=110)
        written.append(os.path.basename(f"{stem}-loss-vs-{axis}.png"))
    fig = _new_figure(12, 4.5)
    for index, axis in enumerate(("epochs", "seconds")):
        draw(fig.add_subplot(1, 2, index + 1), axis)
    fig.suptitle(problem.description, fontsize="medium")
    fig.savefig(f"{stem}.png", dpi=110)
    written.append(os.path.basename(f"{stem}.png"))
    return written


# --------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Surface:
    """A 2-D test function with its residual form (E = 1/2 sum e^2), if any."""

    description: str
    function: callable
    residuals: callable
    start: tuple
    minimum: tuple
    xlim: tuple
    ylim: tuple
    iterations: int
    methods: str
    log_levels: bool = False
    momentum: float = 0.9


_SQRT2 = math.sqrt(2.0)


def _quadratic(w):
    return 0.5 * (w[0] ** 2 + 10.0 * w[1] ** 2)


def _quadratic_residuals(w):
    return tf.stack([w[0], math.sqrt(10.0) * w[1]])


def _rosenbrock(w):
    return (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2


def _rosenbrock_residuals(w):
    return _SQRT2 * tf.stack([1.0 - w[0], 10.0 * (w[1] - w[0] ** 2)])


def _beale_terms(w):
    x, y = w[0], w[1]
    return [1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3]


def _beale(w):
    return sum(term**2 for term in _beale_terms(w))


def _beale_residuals(w):
    return _SQRT2 * tf.stack(_beale_terms(w))


def _saddle(w):
    return w[0] ** 2 - w[1] ** 2


# The lecture's 2-D illustrations: Sutskever's (2013) oblong quadratic for
# GD / momentum / NAG (mu = 0.95 there), Rosenbrock's (1960) valley for
# steepest descent, CG, BFGS, Newton and LM, and Beale's (1958) function and
# a saddle as in CS231n's "Neural Networks Part 3", Fig. 1-2.
SURFACES = {
    "quadratic": Surface(
        "oblong quadratic E = (x^2 + 10 y^2)/2 (Sutskever, 2013), momentum 0.95",
        _quadratic, _quadratic_residuals, start=(-4.0, 1.5), minimum=(0.0, 0.0),
        xlim=(-5, 5), ylim=(-2.5, 2.5), iterations=60, methods="gd,momentum,nag,sd,cg-pr,lm",
        momentum=0.95,
    ),
    "rosenbrock": Surface(
        "Rosenbrock E = (1 - x)^2 + 100 (y - x^2)^2",
        _rosenbrock, _rosenbrock_residuals, start=(-1.2, 1.0), minimum=(1.0, 1.0),
        xlim=(-2, 2), ylim=(-1, 3), iterations=200, methods="gd,sd,cg-pr,bfgs,newton,lm",
        log_levels=True,
    ),
    "beale": Surface(
        "Beale's function, minimum at (3, 0.5)",
        _beale, _beale_residuals, start=(1.0, 1.5), minimum=(3.0, 0.5),
        xlim=(-0.5, 4.0), ylim=(-1.5, 2.0), iterations=300,
        methods="gd,momentum,nag,adagrad,rmsprop,adadelta,adam,lm", log_levels=True,
    ),
    "saddle": Surface(
        "saddle E = x^2 - y^2",
        _saddle, None, start=(1.0, 1e-3), minimum=None,
        xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), iterations=60,
        methods="gd,momentum,nag,adagrad,rmsprop,adadelta,adam,newton",
    ),
}

# Where a path is cut off: far outside any plot, or no longer finite.
_ESCAPE = 1e6
# A path ends once the gradient norm falls below this: the method has arrived.
_TOLERANCE = 1e-8


def trajectory(surface_name, method_name, learning_rate=None, iterations=None):
    """The iterates of one method on a 2-D surface, as an array [steps+1, 2].

    Per-parameter optimizers run through `opt.apply_gradients` on a
    `keras.Variable` (for NAG the variable is the look-ahead point, see
    `NesterovMomentum`); solvers run through `Solver.minimize` on a
    `FunctionObjective` with the surface's residual form. A path ends early
    once the gradient norm is under 1e-8, and is cut where |w| exceeds 1e6.
    """
    surface = SURFACES[surface_name]
    method = METHODS[method_name]
    iterations = iterations or surface.iterations
    w0 = np.array(surface.start, dtype="float64")
    if method.is_solver:
        residuals = surface.residuals
        if method_name == "lm" and residuals is None:
            raise ValueError(f"{surface_name} has no residual form (not a sum of squares)")
        objective = FunctionObjective(surface.function, size=2, dtype="float64",
                                      residuals=residuals)
        _, history = method.build().minimize(objective, tf.constant(w0), iterations,
                                             tolerance=_TOLERANCE)
        path = [record["w"] for record in history]
    else:
        overrides = {}
        if "momentum" in method.options:
            overrides["momentum"] = surface.momentum
        rate = learning_rate or method.trajectory_rates[surface_name]
        optimizer = method.build(rate, **overrides)
        variable = keras.Variable(w0, dtype="float64")
        optimizer.build([variable])
        function = surface.function

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = function(variable.value)
            gradient = tape.gradient(loss, variable.value)
            optimizer.apply_gradients([(gradient, variable)])
            return variable.value, tf.norm(gradient)

        path = [w0]
        for _ in range(iterations):
            w, gradient_norm = (t.numpy() for t in step())
            path.append(w)
            if gradient_norm < _TOLERANCE:
                break
    # Cut the path where it leaves every plot for good (or stops being finite).
    for index, w in enumerate(path):
        if not np.all(np.isfinite(w)) or np.max(np.abs(w)) > _ESCAPE:
            path = path[: index + 1]
            break
    return np.array(path)


def trajectories(args):
    surface = SURFACES[args.function]
    methods = parse_methods(args.methods or surface.methods)
    if args.iterations is not None and args.iterations <= 0:
        raise UsageError(f"--iterations must be positive, got {args.iterations}")
    os.makedirs(args.out, exist_ok=True)
    print(f"{args.function}: {surface.description}; start {surface.start}", flush=True)
    paths, notes = {}, {}
    for label, name, learning_rate in methods:
        try:
            paths[label] = trajectory(args.function, name, learning_rate, args.iterations)
        except Exception as error:  # report and go on with the other methods
            notes[label] = f"skipped ({_one_line(error)})"
            print(f"{label:<10} {notes[label]}", flush=True)

    stem = os.path.join(args.out, f"trajectories-{args.function}")
    rows = []
    for label, path in paths.items():
        values = [float(surface.function(w)) for w in path]
        for step, (w, value) in enumerate(zip(path, values)):
            rows.append([label, step, w[0], w[1], value])
    with open(stem + ".csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "iteration", "x", "y", "loss"])
        writer.writerows(rows)
    _plot_trajectories(stem + ".png", args.function, surface, paths)

    header = f"{'method':<10}  {'steps':>5}  {'final loss':>11}  {'distance to minimum':>19}"
    print("\n" + header + "\n" + "-" * len(header))
    for label, path in paths.items():
        final = float(surface.function(path[-1]))
        distance = "-" if surface.minimum is None else \
            f"{np.linalg.norm(path[-1] - np.array(surface.minimum)):.3g}"
        print(f"{label:<10}  {len(path) - 1:>5}  {final:>11.4g}  {distance:>19}")
    for label, note in notes.items():
        print(f"{label:<10}  {note}")
    print(f"wrote {os.path.basename(stem)}.png, {os.path.basename(stem)}.csv in {args.out}")
    return 0


def _plot_trajectories(path, name, surface, paths):
    fig = _new_figure(7, 6)
    ax = fig.add_subplot()
    xs = np.linspace(*surface.xlim, 300)
    ys = np.linspace(*surface.ylim, 300)
    grid = np.stack(np.meshgrid(xs, ys))
    values = surface.function(grid)
    if surface.log_levels:  # geometric levels, dense near the minimum
        low = max(float(values.min()), 1e-3)
        high = float(np.quantile(values, 0.9))
        levels = np.logspace(np.log10(low), np.log10(high), 30)
    else:
        levels = 30
    ax.contour(xs, ys, values, levels=levels, cmap="Greys", linewidths=0.6)
    colors = _colors(len(paths))
    for (label, trail), color in zip(paths.items(), colors):
        ax.plot(trail[:, 0], trail[:, 1], "-o", color=color, markersize=2.5, linewidth=1.2,
                label=f"{label} ({len(trail) - 1} steps)")
    ax.plot(*surface.start, "ks", markersize=6, label="start")
    if surface.minimum is not None:
        ax.plot(*surface.minimum, "k*", markersize=12, label="minimum")
    ax.set_xlim(*surface.xlim)
    ax.set_ylim(*surface.ylim)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_title(f"{name}: {surface.description}", fontsize="medium")
    ax.legend(fontsize="small", loc="best")
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------
_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softsign", "linear")
_RANGES = {"tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
# scheme -> (class name, argument, default value); Xavier schemes take the
# activation instead.
_SCHEMES = {
    "normal": ("Normal", "stddev", 0.01),
    "truncated-normal": ("TruncatedNormal", "stddev", 0.01),
    "uniform": ("Uniform", "limit", 0.05),
    "xavier": ("XavierNormal", None, None),
    "xavier-normal": ("XavierNormal", None, None),
    "xavier-uniform": ("XavierUniform", None, None),
}


def parse_schemes(text, activation):
    """'normal:1,xavier' -> [(label, function seed -> initializer), ...]."""
    schemes = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, value = item.partition(":")
        if name not in _SCHEMES:
            raise UsageError(f"unknown scheme {name!r}; choose from {', '.join(_SCHEMES)}")
        class_name, argument, default = _SCHEMES[name]
        cls = getattr(gz.initializers, class_name)
        if argument is None:
            if value:
                raise UsageError(f"scheme {name!r} takes no value (got {item!r})")
            schemes.append((item, lambda seed, cls=cls: cls(activation=activation, seed=seed)))
        else:
            scale = _positive(float, value, f"{argument} in {item!r}") if value else default
            label = item if value else f"{name}:{default:g}"
            schemes.append(
                (label, lambda seed, cls=cls, a=argument, s=scale: cls(**{a: s}, seed=seed))
            )
    if not schemes:
        raise UsageError("no schemes given")
    return schemes


def layer_statistics(initializer, depth, width, activation, samples, seed):
    """Activations y^l and gradients dL/dh^l of a fresh `depth`-layer net.

    Inputs are N(0, 1); the backward pass starts from dL/dy^L ~ N(0, 1)
    (L = sum(u * y^L) with a fixed random u), so the gradients show only
    what the layers do to them.

    Returns:
        two lists of `depth` arrays: activations [samples, width] and
        gradients with respect to the pre-activations h^l.
    """
    layers = [
        keras.layers.Dense(width, activation=None, kernel_initializer=initializer(1000 * seed + l),
                           bias_initializer="zeros")
        for l in range(depth)
    ]
    nonlinearity = keras.activations.get(activation)
    rng = np.random.default_rng(seed)
    y = tf.constant(rng.standard_normal((samples, width)), dtype="float32")
    upstream = tf.constant(rng.standard_normal((samples, width)), dtype="float32")
    pre, post = [], []
    with tf.GradientTape() as tape:
        for layer in layers:
            h = layer(y)
            y = nonlinearity(h)
            pre.append(h)
            post.append(y)
        loss = tf.reduce_sum(upstream * y)
    gradients = tape.gradient(loss, pre)
    return [a.numpy() for a in post], [g.numpy() for g in gradients]


def init(args):
    if args.activation not in _ACTIVATIONS:
        raise UsageError(f"unknown activation {args.activation!r}; choose from "
                         f"{', '.join(_ACTIVATIONS)}")
    for name in ("depth", "width", "samples"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(args, name)}")
    schemes = parse_schemes(args.schemes, args.activation)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for label, initializer in schemes:
        results[label] = layer_statistics(initializer, args.depth, args.width, args.activation,
                                          args.samples, args.seed)
    stem = os.path.join(args.out, f"init-{args.activation}")
    with open(stem + ".csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scheme", "layer", "activation_mean", "activation_variance",
                         "gradient_variance"])
        for label, (activations, gradients) in results.items():
            for layer, (a, g) in enumerate(zip(activations, gradients), start=1):
                writer.writerow([label, layer, float(a.mean()), float(a.var()), float(g.var())])
    written = _plot_init(stem, args, results)

    print(f"{args.depth} layers of {args.width} {args.activation} units, "
          f"{args.samples} N(0,1) inputs; variance per layer")
    shown = sorted({1, max(1, args.depth // 2), args.depth})
    header = f"{'scheme':<22}" + "".join(f"  act var L{l:<3}" for l in shown) + \
        "".join(f"  grad var L{l:<3}" for l in shown)
    print(header + "\n" + "-" * len(header))
    for label, (activations, gradients) in results.items():
        print(f"{label:<22}" + "".join(f"  {activations[l - 1].var():>11.3g}" for l in shown)
              + "".join(f"  {gradients[l - 1].var():>12.3g}" for l in shown))
    print("wrote " + ", ".join([os.path.basename(stem) + ".csv"] + written) + f" in {args.out}")
    return 0


def _plot_init(stem, args, results):
    written = []
    for kind, index in (("activations", 0), ("gradients", 1)):
        # A fixed grid (constrained layout is slow for many small axes).
        fig = _new_figure(1.7 * args.depth + 1, 1.6 * len(results) + 0.8, layout=None)
        fig.subplots_adjust(left=0.07, right=0.99, bottom=0.08, top=0.85, wspace=0.15,
                            hspace=0.45)
        axes = fig.subplots(len(results), args.depth, squeeze=False)
        for row, (label, values) in enumerate(results.items()):
            for layer, data in enumerate(values[index]):
                ax = axes[row, layer]
                # Bounded units on a fixed axis, so that vanishing shows.
                bounds = _RANGES.get(args.activation) if kind == "activations" else None
                counts, edges = np.histogram(data, bins=40, range=bounds)
                ax.stairs(counts, edges, fill=True, color=f"C{row}")
                ax.set_yticks([])
                ax.tick_params(labelsize=6)
                if row == 0:
                    ax.set_title(f"layer {layer + 1}", fontsize="small")
                if layer == 0:
                    ax.set_ylabel(label, fontsize="small")
        what = "activations y" if kind == "activations" else "gradients dL/dh"
        fig.suptitle(f"{what} per layer, {args.activation} units", fontsize="medium")
        fig.savefig(f"{stem}-{kind}.png", dpi=90)
        written.append(os.path.basename(f"{stem}-{kind}.png"))
    fig = _new_figure(11, 4)
    for index, what in enumerate(("activation variance", "gradient variance")):
        ax = fig.add_subplot(1, 2, index + 1)
        for row, (label, values) in enumerate(results.items()):
            variances = [max(float(v.var()), 1e-30) for v in values[index]]
            ax.plot(range(1, args.depth + 1), variances, "-o", color=f"C{row}", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"information flow, {args.activation} units", fontsize="medium")
    fig.savefig(f"{stem}-variance.png", dpi=110)
    written.append(os.path.basename(f"{stem}-variance.png"))
    return written


# --------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text):
    try:
        return _positive(float, text, "value")
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser():
    parser = _Parser(
        prog="gdzoo",
        description="Compare classic neural-network training methods (keras_gdzoo).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    method_help = "comma-separated short names, optionally NAME:LEARNING_RATE; one of: " + \
        ", ".join(METHODS)

    p = commands.add_parser(
        "compare", help="train a built-in problem with several methods",
        description="Train a built-in problem's network with each method from the same initial "
                    "weights per seed; report loss, epochs and seconds to the error goal.")
    p.add_argument("--problem", default="sin",
                   help=f"one of {', '.join(problems_lib.names())} (default: sin)")
    p.add_argument("--methods", default=DEFAULT_COMPARE_METHODS,
                   help=f"{method_help} (default: {DEFAULT_COMPARE_METHODS})")
    p.add_argument("--epochs", type=_count, help="epochs per run (default: the problem's)")
    p.add_argument("--seeds", type=_count, default=3, help="seeds 0..K-1 (default: 3)")
    p.add_argument("--batch-size", type=_count,
                   help="default: the problem's, else the whole training set (batch mode)")
    p.add_argument("--goal", type=_positive_float, help="error goal (default: the problem's)")
    p.add_argument("--samples", type=_count, help="data size for sin and sinc (sinc: 2000)")
    p.add_argument("--data-dir", help="tensorflow_datasets directory holding mnist/")
    p.add_argument("--out", default="gdzoo-out", help="output folder (default: ./gdzoo-out)")
    p.set_defaults(handler=compare)

    p = commands.add_parser(
        "trajectories", help="paths of methods on 2-D functions",
        description="Contour plot of a 2-D function with each method's path.")
    p.add_argument("--function", default="quadratic", choices=list(SURFACES))
    p.add_argument("--methods", help=f"{method_help} (default: depends on the function)")
    p.add_argument("--iterations", type=_count, help="default: depends on the function")
    p.add_argument("--out", default="gdzoo-out", help="output folder (default: ./gdzoo-out)")
    p.set_defaults(handler=trajectories)

    p = commands.add_parser(
        "init", help="activation and gradient variance per layer for initializations",
        description="Histograms and variances of activations and gradients per layer of a deep "
                    "network, for several weight initialization schemes.")
    p.add_argument("--depth", type=_count, default=10)
    p.add_argument("--width", type=_count, default=256)
    p.add_argument("--samples", type=_count, default=1000)
    p.add_argument("--activation", default="tanh", help=f"one of {', '.join(_ACTIVATIONS)}")
    p.add_argument("--schemes", default="normal:0.01,xavier,normal:1",
                   help="comma-separated NAME or NAME:SCALE, NAME one of "
                        f"{', '.join(_SCHEMES)} (default: normal:0.01,xavier,normal:1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="gdzoo-out", help="output folder (default: ./gdzoo-out)")
    p.set_defaults(handler=init)
    return parser


def main(argv=None):
    """Run the `gdzoo` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"gdzoo: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code or 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"gdzoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ImportError, FileNotFoundError) as error:  # a data set that is not there
        print(f"gdzoo {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
