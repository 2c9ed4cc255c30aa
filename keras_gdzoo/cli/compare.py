"""`gdzoo compare`: several methods on one built-in problem, same initial weights.

Each method is trained from the same initial weights per seed; the result
holds every run's loss after each epoch, its timings and its status, and per
method the success rate and medians over seeds (the MATLAB benchmark's way of
choosing a training function). `run` trains and returns a `CompareResult`;
`summary` is its table as text. Files are written by `output`, figures drawn
by `plots`.
"""

import dataclasses
import math
import statistics
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo import methods as methods_lib
from keras_gdzoo import problems as problems_lib
from keras_gdzoo.cli.common import UsageError
from keras_gdzoo.cli.common import one_line
from keras_gdzoo.cli.common import parse_methods
from keras_gdzoo.solvers.base import STOP

DEFAULT_METHODS = "lm,bfgs,rprop,cg-pr,adam,gd"
# Options `gdzoo compare` passes to a problem unless the user gives them.
PROBLEM_DEFAULTS = {"sinc": {"n": 2000}}


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


@dataclasses.dataclass
class CompareResult:
    """What `gdzoo compare` measured."""

    problem: problems_lib.Problem
    goal: float
    epochs: int
    batch_size: int
    seeds: int
    runs: list
    summary: dict

    @property
    def labels(self):
        """The methods as given on the command line, in order."""
        return list(dict.fromkeys(run.method for run in self.runs))


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


def _quiet_fit(trainer, dataset, epochs, steps, callback):
    with warnings.catch_warnings():
        # SolverModel warns when a solver stops; the run's status says it.
        warnings.filterwarnings("ignore", message=".*stopped training")
        trainer.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[callback],
                    shuffle=False, verbose=0)


def train_once(problem, label, method_name, learning_rate, seed, epochs, batch_size, goal):
    """Train the problem's network once; every failure becomes the Run's status."""
    run = Run(method=label, seed=seed)
    try:
        keras.utils.set_random_seed(seed)
        model = problem.build_model(seed)
        trainer = gz.wrap(model)
        optimizer = methods_lib.METHODS[method_name].build(learning_rate)
        trainer.compile(optimizer=optimizer, loss=problem.loss)
        evaluate = _loss_evaluator(problem, model)
        run.losses, run.seconds = [evaluate()], [0.0]
        dataset, steps = _training_data(problem, batch_size, seed)
        # Trace the train step on one throw-away step, then put the weights and
        # optimizer state back: the timings then exclude tf.function tracing.
        snapshot = _StateSnapshot()
        _quiet_fit(trainer, dataset, 1, 1, snapshot)
        snapshot.restore()
        recorder = GoalRecorder(run, evaluate, goal)
        run.status = "not reached"
        _quiet_fit(trainer, dataset, epochs, steps, recorder)
        if run.status == "not reached" and (recorder.solver_stopped or run.epochs_run < epochs):
            run.status = "stopped"
            reason = getattr(trainer.optimizer, "stop_message", "training was stopped")
            run.message = f"{type(trainer.optimizer).__name__}: {reason}"
    except Exception as error:  # a failing method is reported, never fatal
        run.status = "error"
        run.message = one_line(error)
    return run


def _median(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


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


def load_problem(args):
    """The problem `--problem` names, with `--samples` / `--data-dir`."""
    options = dict(PROBLEM_DEFAULTS.get(args.problem, {}))
    if args.samples is not None:
        options["n"] = args.samples
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    try:
        return problems_lib.get(args.problem, **options)
    except ValueError as error:
        raise UsageError(str(error)) from None


def run(args, report=None):
    """Train every method from every seed; `report(line)` hears the progress."""
    report = report or (lambda line: None)
    problem = load_problem(args)
    methods = parse_methods(args.methods)
    epochs = args.epochs or problem.epochs
    goal = problem.goal if args.goal is None else args.goal
    batch_size = args.batch_size or problem.batch_size or problem.n
    report(f"{problem.description}; goal: loss <= {goal:g} ({problem.loss}); "
           f"{epochs} epochs, batch size {batch_size}, {args.seeds} seed(s)")
    runs, total = [], len(methods) * args.seeds
    for label, name, learning_rate in methods:
        for seed in range(args.seeds):
            one = train_once(problem, label, name, learning_rate, seed, epochs, batch_size, goal)
            runs.append(one)
            report(f"[{len(runs)}/{total}] {progress_line(one)}")
    return CompareResult(problem=problem, goal=goal, epochs=epochs, batch_size=batch_size,
                         seeds=args.seeds, runs=runs, summary=summarize(runs))


def progress_line(run):
    """One run's outcome in one line."""
    head = f"{run.method:<10} seed {run.seed}: "
    if run.status == "goal":
        return head + f"goal after {run.epochs_to_goal} epochs, {run.seconds_to_goal:.2f} s"
    if run.status == "error":
        return head + f"error ({run.message})"
    detail = f"{run.epochs_run} epochs, {run.seconds[-1]:.2f} s, final loss {run.final_loss:.3g}" \
        if run.losses else ""
    return head + f"{run.status} ({detail}{'; ' + run.message if run.message else ''})"


def _format(value, spec):
    return "-" if value is None else format(value, spec)


def _table(summary):
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


def summary(result):
    """The table `gdzoo compare` prints at the end, and who was fastest."""
    return "\n" + _table(result.summary) + "\n" + _fastest_line(result.summary)
