"""Full-batch training inside `fit` against SciPy and torch.optim (issue 14).

The problem: y = sin(10x) / (10x) on 2,000 points of [-1, 1], a 1-20-1 tanh
network (m = 61 weights), mean squared error, full batch. Every method
starts from the same weights and keeps 10 (s, y) pairs (L-BFGS):

* SciPy `minimize(method="L-BFGS-B", jac=True, maxcor=10, ftol=gtol=0)` on
  one `tf.function` that assigns the flat float64 weights to a Keras model
  (float32, and separately float64) and returns the loss and gradient;
* `torch.optim.LBFGS(line_search_fn="strong_wolfe", history_size=10)` on a
  float64 transcription of the network (when torch is installed);
* gz `LBFGS` through the natural call
  `trainer.fit(x, y, batch_size=len(x), epochs=E, verbose=0)` on NumPy
  arrays, float32 and float64 models, and the same compiled with
  `jit_compile=True` (XLA);
* gz `LBFGS` through `trainer.solve(x, y, iterations=N)` (all iterations in
  one graph call), with and without `jit_compile=True`.

Reported for each: evaluations (calls of the loss and its gradient) and
seconds to reach MSE 1e-2, 2e-3 and 1.4e-3, and both as multiples of the
SciPy row of the same model dtype. Counts are chaotic in round-off, so
every method runs from `--starts` initial weights one ulp apart
(`np.nextafter`) and the table gives the median and the range. Tracing (the
first call) is reported separately and left out of the seconds: SciPy's
`tf.function` is traced before the clock starts; for `fit`, the first epoch
is replaced by the median epoch; `solve` is called twice from the same
start (weights and solver state reset in between), the first call's excess
over the second is its tracing (and XLA compilation), and the seconds are
the second run's mean cost per iteration times the iterations.

Then per evaluation and per iteration costs: SciPy's, natural fit's and
solve's, and fit's cost per iteration over solve's (the bare solver step).
The full run adds a table for gz `BFGS` and `ConjugateGradient`
(Polak-Ribiere) against SciPy's `BFGS` and `CG` (float32 models).

Wall-clock figures on a loaded machine are inflated unevenly (SciPy's
Python loop suffers most); evaluation counts are not.

Run: python benchmarks/bench_fullbatch.py [--starts 3] [--seed 0] [--iterations 2500] [--quick]
(--quick: under 3 minutes on a quiet machine; the full run several times that.)
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402

SAMPLES = 2000
HIDDEN = 20
HISTORY = 10
TARGETS = (1e-2, 2e-3, 1.4e-3)


# -- the problem ------------------------------------------------------------
def data():
    x = np.linspace(-1.0, 1.0, SAMPLES).reshape(-1, 1)
    y = np.sin(10.0 * x) / (10.0 * x)
    return x, y


def initial_weights(seed=0):
    """Keras's default initialization of the 1-20-1 net, as one flat float64
    vector (kernel 1, bias 1, kernel 2, bias 2)."""
    keras.utils.set_random_seed(seed)
    model = network("float64")
    return np.concatenate([v.numpy().ravel() for v in model.trainable_variables])


def starts(w0, count):
    """`count` initial weight vectors, each one ulp above the previous one."""
    out = [w0]
    for _ in range(count - 1):
        out.append(np.nextafter(out[-1], np.inf))
    return out


def network(dtype):
    return keras.Sequential(
        [
            keras.Input((1,), dtype=dtype),
            keras.layers.Dense(HIDDEN, activation="tanh", dtype=dtype),
            keras.layers.Dense(1, dtype=dtype),
        ]
    )


def set_flat(model, w):
    offset = 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        v.assign(np.reshape(w[offset : offset + size], v.shape).astype(v.dtype))
        offset += size


def reached(losses, evaluations, times):
    """For each target, (evaluations, seconds) at the first point whose loss
    is at or under it, or None. losses[k], evaluations[k] and times[k]
    belong to the k-th point, evaluations and times cumulative."""
    out = []
    for target in TARGETS:
        hits = np.nonzero(np.asarray(losses) <= target)[0]
        out.append(None if hits.size == 0 else (evaluations[hits[0]], times[hits[0]]))
    return out


# -- SciPy ----------------------------------------------------------------------
def scipy_value_and_gradient(model, x, y):
    x = tf.constant(x, model.trainable_variables[0].dtype)
    y = tf.constant(y, model.trainable_variables[0].dtype)
    variables = model.trainable_variables
    sizes = [int(np.prod(v.shape)) for v in variables]

    @tf.function
    def value_and_gradient(w):
        for v, piece in zip(variables, tf.split(w, sizes)):
            v.assign(tf.cast(tf.reshape(piece, v.shape), v.dtype))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        gradients = tape.gradient(loss, variables)
        flat = tf.concat([tf.reshape(tf.cast(g, tf.float64), [-1]) for g in gradients], 0)
        return tf.cast(loss, tf.float64), flat

    return value_and_gradient


def run_scipy(method, dtype, x, y, w0, max_iterations, time_limit):
    from scipy.optimize import minimize

    model = network(dtype)
    value_and_gradient = scipy_value_and_gradient(model, x, y)
    start = time.perf_counter()
    value_and_gradient(tf.constant(w0))
    tracing = time.perf_counter() - start
    losses, times = [], []
    final = TARGETS[-1]

    class Done(Exception):
        pass

    def fun(w):
        value, gradient = value_and_gradient(tf.constant(w))
        value = float(value)
        losses.append(value)
        times.append(time.perf_counter() - start)
        if value <= final or times[-1] > time_limit:
            raise Done
        return value, gradient.numpy()

    options = {"maxiter": max_iterations, "gtol": 0.0}
    if method == "L-BFGS-B":
        options.update(maxcor=HISTORY, ftol=0.0, maxfun=10 * max_iterations)
    start = time.perf_counter()
    try:
        minimize(fun, w0, jac=True, method=method, options=options)
    except Done:
        pass
    return {
        "reached": reached(losses, np.arange(1, len(losses) + 1), times),
        "tracing": tracing,
        "evaluations": len(losses),
        "seconds": times[-1] if times else 0.0,
        "best": min(losses),
    }


# -- torch --------------------------------------------------------------------
def run_torch(x, y, w0, max_iterations, time_limit):
    import torch

    xt, yt = torch.tensor(x), torch.tensor(y)
    pieces = np.split(w0, [HIDDEN, 2 * HIDDEN, 3 * HIDDEN])
    shapes = [(1, HIDDEN), (HIDDEN,), (HIDDEN, 1), (1,)]
    params = [
        torch.tensor(p.reshape(s), dtype=torch.float64, requires_grad=True)
        for p, s in zip(pieces, shapes)
    ]
    w1, b1, w2, b2 = params
    optimizer = torch.optim.LBFGS(
        params,
        lr=1,
        max_iter=max_iterations,
        max_eval=10 * max_iterations,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        history_size=HISTORY,
        line_search_fn="strong_wolfe",
    )
    losses, times = [], []

    class Done(Exception):
        pass

    def closure():
        optimizer.zero_grad()
        loss = torch.mean((torch.tanh(xt @ w1 + b1) @ w2 + b2 - yt) ** 2)
        loss.backward()
        losses.append(float(loss))
        times.append(time.perf_counter() - start)
        if losses[-1] <= TARGETS[-1] or times[-1] > time_limit:
            raise Done
        return loss

    start = time.perf_counter()
    try:
        optimizer.step(closure)
    except Done:
        pass
    return {
        "reached": reached(losses, np.arange(1, len(losses) + 1), times),
        "tracing": 0.0,
        "evaluations": len(losses),
        "seconds": times[-1] if times else 0.0,
        "best": min(losses),
    }


# -- gz -----------------------------------------------------------------------
class EpochClock(keras.callbacks.Callback):
    """Wall time at the end of every epoch; stops at the last target."""

    def __init__(self, time_limit):
        super().__init__()
        self.time_limit = time_limit

    def on_train_begin(self, logs=None):
        self.ends = []
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter() - self.start)
        if logs["loss"] <= TARGETS[-1] or self.ends[-1] > self.time_limit:
            self.model.stop_training = True


def trainer_for(solver, dtype, w0, jit_compile=False):
    model = network(dtype)
    set_flat(model, w0)
    trainer = gz.wrap(model)
    trainer.compile(optimizer=solver, loss="mse", jit_compile=jit_compile)
    return trainer


def run_fit(solver, dtype, x, y, w0, max_iterations, time_limit, jit_compile=False):
    trainer = trainer_for(solver, dtype, w0, jit_compile)
    clock = EpochClock(time_limit)
    history = trainer.fit(
        x, y, batch_size=len(x), epochs=max_iterations, verbose=0, callbacks=[clock]
    ).history
    # loss[k] is the loss at iteration k's start: reached after iterations
    # 0..k-1, their evaluations and epochs (the first epoch, which traces,
    # counted as a median epoch; its excess is the tracing).
    ends = np.asarray(clock.ends)
    epochs = np.diff(np.concatenate([[0.0], ends]))
    typical = float(np.median(epochs[1:])) if epochs.size > 1 else float(epochs[0])
    steady = np.concatenate([[0.0], ends - epochs[0] + typical])
    evaluations = np.concatenate([[0.0], np.cumsum(history["evaluations"])])
    losses = np.asarray(history["loss"])
    return {
        "reached": reached(losses, evaluations[: losses.size], steady[: losses.size]),
        "tracing": float(epochs[0] - typical),
        "evaluations": int(evaluations[-1]),
        "iterations": int(losses.size),
        "seconds": float(steady[-1]),
        # Means over the epochs after the first, as solve's are means.
        "per_iteration": float(np.mean(epochs[1:])) if epochs.size > 1 else typical,
        "per_evaluation": float(np.sum(epochs[1:]) / np.sum(history["evaluations"][1:]))
        if epochs.size > 1
        else typical,
        "best": float(losses.min()),
    }


def reset(trainer, w0):
    """Weights back to w0 and the solver's state to its initial values (a
    second run from the same start, without tracing again)."""
    set_flat(trainer.model, w0)
    solver = trainer.optimizer
    spec = solver.state_spec(solver.solver_size, solver.solver_state["point"].dtype)
    for key, (shape, initial) in spec.items():
        variable = solver.solver_state[key]
        variable.assign(tf.fill(shape, tf.constant(initial, variable.dtype)))
    if getattr(solver, "iterate", None) is not None:
        solver.iterate_known.assign(tf.zeros([], solver.iterate_known.dtype))


def run_solve(solver_factory, dtype, x, y, w0, iterations, jit_compile):
    """`trainer.solve`: one call of `iterations` iterations (the first call
    traces, and with XLA compiles; its excess over the second is the
    tracing), then the same call again from the same start, timed. The
    seconds to a target are that run's mean cost per iteration times the
    iterations."""
    trainer = trainer_for(solver_factory(), dtype, w0)
    start = time.perf_counter()
    trainer.solve(x, y, iterations=iterations, jit_compile=jit_compile)
    first_call = time.perf_counter() - start
    reset(trainer, w0)
    start = time.perf_counter()
    history = trainer.solve(x, y, iterations=iterations, jit_compile=jit_compile)
    total = time.perf_counter() - start
    count = history["iterations"]
    losses = history["loss"]
    evaluations = np.concatenate([[0.0], np.cumsum(history["evaluations"])])
    per_iteration = total / count
    seconds = per_iteration * np.arange(losses.size + 1)
    return {
        "reached": reached(losses, evaluations[: losses.size], seconds[: losses.size]),
        "tracing": first_call - total,
        "evaluations": int(evaluations[-1]),
        "iterations": count,
        "seconds": total,
        "per_iteration": per_iteration,
        "per_evaluation": total / evaluations[-1],
        "best": float(losses.min()),
    }


def solve_iterations(fit, most):
    """Twice the iterations fit needed from the same start: solve has no
    loss target to stop on, and its iterates (XLA's rounding) drift from
    fit's."""
    return int(min(most, max(10, 2 * fit["iterations"])))


# -- reporting ------------------------------------------------------------------
def summary(runs, index, part):
    values = [r["reached"][index][part] for r in runs if r["reached"][index] is not None]
    if not values:
        return "not reached"
    missing = len(runs) - len(values)
    text = (
        f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"
        if part == 0
        else f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
    )
    return text + (f" [{missing} not]" if missing else "")


def median_at(runs, index, part):
    values = [r["reached"][index][part] for r in runs if r["reached"][index] is not None]
    return statistics.median(values) if len(values) == len(runs) else None


def table(title, results, references):
    """One row per method: median (range) of evaluations and seconds to each
    target, then each median over the median of its SciPy reference row
    (`references[name]`), tracing and the best loss."""
    print(f"\n{title}")
    header = "| method | " + " | ".join(
        f"evals to {t:g} | s to {t:g}" for t in TARGETS
    ) + " | " + " | ".join(f"x SciPy at {t:g} (evals, s)" for t in TARGETS)
    print(header + " | tracing s | best |")
    print("|" + "---|" * (3 * len(TARGETS) + 3))
    for name, runs in results.items():
        if isinstance(runs, str):
            print(f"| {name} | {runs} |")
            continue
        cells = []
        for i in range(len(TARGETS)):
            cells += [summary(runs, i, 0), summary(runs, i, 1)]
        reference = results.get(references.get(name))
        for i in range(len(TARGETS)):
            if reference is None or reference is runs or isinstance(reference, str):
                cells.append("-")
                continue
            e = ratio(median_at(runs, i, 0), median_at(reference, i, 0))
            t = ratio(median_at(runs, i, 1), median_at(reference, i, 1))
            cells.append(f"{e}, {t}")
        tracing = statistics.median(r["tracing"] for r in runs)
        best = min(r["best"] for r in runs)
        print(f"| {name} | " + " | ".join(cells) + f" | {tracing:.2f} | {best:.3g} |")


def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def per_iteration_ratio(results, fit_name, solve_name):
    fit = results.get(fit_name)
    solve = results.get(solve_name)
    if not fit or not solve:
        return
    fi = statistics.median(r["per_iteration"] for r in fit)
    si = statistics.median(r["per_iteration"] for r in solve)
    fe = statistics.median(r["per_evaluation"] for r in fit)
    se = statistics.median(r["per_evaluation"] for r in solve)
    fp = statistics.median(r["evaluations"] / r["iterations"] for r in fit)
    sp = statistics.median(r["evaluations"] / r["iterations"] for r in solve)
    print(
        f"  {fit_name}: {1e3 * fi:.2f} ms/iteration, {1e3 * fe:.2f} ms/evaluation, "
        f"{fp:.2f} evaluations/iteration; {solve_name}: {1e3 * si:.2f} ms/iteration, "
        f"{1e3 * se:.2f} ms/evaluation, {sp:.2f} evaluations/iteration; "
        f"ratio per iteration {ratio(fi, si)}, per evaluation {ratio(fe, se)}"
    )


def scipy_per_evaluation(results, name):
    runs = results[name]
    value = statistics.median(r["seconds"] / r["evaluations"] for r in runs)
    print(f"  {name}: {1e3 * value:.2f} ms/evaluation")


def lbfgs_table(args, x, y, points):
    limit, most = args.time_limit, args.iterations
    results, references = {}, {}
    for dtype in ("float32", "float64"):
        results[f"SciPy L-BFGS-B, {dtype} model"] = [
            run_scipy("L-BFGS-B", dtype, x, y, w, most, limit) for w in points
        ]
    try:
        import torch  # noqa: F401  (only whether it is installed)

        results["torch LBFGS strong-Wolfe, float64"] = [
            run_torch(x, y, w, most, limit) for w in points
        ]
        references["torch LBFGS strong-Wolfe, float64"] = "SciPy L-BFGS-B, float64 model"
    except ImportError:
        results["torch LBFGS strong-Wolfe, float64"] = "torch is not installed"
    fit_modes = [("", False), (", XLA", True)]
    solve_modes = [("", False), (", XLA", True)]
    for dtype in ("float32", "float64"):
        reference = f"SciPy L-BFGS-B, {dtype} model"
        for suffix, jit in fit_modes:
            name = f"gz LBFGS fit{suffix}, {dtype}"
            results[name] = [
                run_fit(gz.LBFGS(history=HISTORY), dtype, x, y, w, most, limit, jit)
                for w in points
            ]
            references[name] = reference
        fits = results[f"gz LBFGS fit, {dtype}"]
        for suffix, jit in solve_modes:
            name = f"gz LBFGS solve{suffix}, {dtype}"
            # As many iterations as fit needed from the same start (solve
            # has no loss target to stop on), a tenth more.
            results[name] = [
                run_solve(lambda: gz.LBFGS(history=HISTORY), dtype, x, y, w,
                          solve_iterations(fit, most), jit)
                for w, fit in zip(points, fits)
            ]
            references[name] = reference
    table(
        f"L-BFGS (10 pairs), sinc(10x), {SAMPLES} points, 1-{HIDDEN}-1 tanh; "
        f"median (range) over {len(points)} starts one ulp apart; goals: evaluations "
        "<= 1.1x SciPy, natural fit <= 2x SciPy's seconds, solve <= 1x",
        results,
        references,
    )
    print("\nper evaluation and per iteration (natural fit against the bare solver step)")
    for dtype in ("float32", "float64"):
        scipy_per_evaluation(results, f"SciPy L-BFGS-B, {dtype} model")
        for suffix, _ in fit_modes:
            for solve_suffix, _ in solve_modes:
                per_iteration_ratio(
                    results, f"gz LBFGS fit{suffix}, {dtype}",
                    f"gz LBFGS solve{solve_suffix}, {dtype}",
                )


def other_table(args, x, y, points):
    limit, most = args.time_limit, args.iterations
    results, references = {}, {}
    for name, scipy_method, factory in (
        ("BFGS", "BFGS", gz.BFGS),
        ("CG-PR", "CG", lambda: gz.ConjugateGradient(beta="polak-ribiere")),
    ):
        reference = f"SciPy {scipy_method}, float32 model"
        results[reference] = [
            run_scipy(scipy_method, "float32", x, y, w, most, limit) for w in points
        ]
        fit_name = f"gz {name} fit, float32"
        results[fit_name] = [
            run_fit(factory(), "float32", x, y, w, most, limit) for w in points
        ]
        solve_name = f"gz {name} solve, XLA, float32"
        results[solve_name] = [
            run_solve(factory, "float32", x, y, w, solve_iterations(fit, most), True)
            for w, fit in zip(points, results[fit_name])
        ]
        references[fit_name] = references[solve_name] = reference
    table(f"BFGS and CG-PR, float32 models, {len(points)} start(s)", results, references)
    for name in ("BFGS", "CG-PR"):
        per_iteration_ratio(results, f"gz {name} fit, float32", f"gz {name} solve, XLA, float32")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights (Keras's default initializers)")
    parser.add_argument("--iterations", type=int, default=2500)
    parser.add_argument("--time-limit", type=float, default=20.0,
                        help="seconds after which one run gives up")
    parser.add_argument("--quick", action="store_true",
                        help="2 starts, 1000 iterations, no BFGS/CG table")
    args = parser.parse_args()
    if args.quick:
        args.starts, args.iterations = 2, 1000
    x, y = data()
    points = starts(initial_weights(args.seed), args.starts)
    lbfgs_table(args, x, y, points)
    if not args.quick:
        other_table(args, x, y, points)


if __name__ == "__main__":
    main()
