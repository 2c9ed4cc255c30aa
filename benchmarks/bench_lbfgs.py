"""L-BFGS: loss evaluations and time to a common loss, against SciPy,
torch.optim and TensorFlow Probability.

The problem: a 1-20-1 tanh MLP fitted to y = sin(2x) on 200 points of
[-pi, pi] by mean squared error, full batch, float64, written once in
TensorFlow as a function of one flat vector of its m = 61 weights (and once
in torch for torch.optim). Everyone starts from the same weights and keeps
10 (s, y) pairs.

1. SciPy `minimize(method="L-BFGS-B", jac=True)` on the TF function
   (loss and gradient as float64 NumPy) runs `--iterations` iterations;
   the loss it reaches is the target.
2. Every method then runs until one of its evaluations returns a loss at or
   under the target; reported: evaluations (calls of the loss and its
   gradient), iterations, and wall time.

Methods: `keras_gdzoo.LBFGS` through `Solver.minimize` on a
`FunctionObjective` (cold: the time includes tracing; and warm: the same
step function run again), the same with `jit_compile=True`, the same on an
objective that is not stationary (re-evaluated at the start of every
step, as a mini-batch objective must be), SciPy,
`torch.optim.LBFGS(line_search_fn="strong_wolfe")` and
`tfp.optimizer.lbfgs_minimize` where installed.

Trajectories of a non-convex problem part after a few dozen iterations
whatever the method (rounding differs), so the figures are medians over
`--seeds` initial weights, with evaluations per iteration (stable) beside.

Run: python benchmarks/bench_lbfgs.py [--iterations 200] [--seeds 5]
"""

import argparse
import math
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402
from keras_gdzoo.solvers.base import FunctionObjective  # noqa: E402

HIDDEN = 20
HISTORY = 10
SAMPLES = 200


def problem(seed):
    x = np.linspace(-math.pi, math.pi, SAMPLES).reshape(-1, 1)
    y = np.sin(2.0 * x)
    rng = np.random.default_rng(seed)
    w0 = np.concatenate(
        [
            rng.normal(size=HIDDEN),  # W1 (1 x 20)
            np.zeros(HIDDEN),  # b1
            rng.normal(scale=1.0 / math.sqrt(HIDDEN), size=HIDDEN),  # W2 (20 x 1)
            np.zeros(1),  # b2
        ]
    )
    return x, y, w0


def tf_loss(x, y):
    x, y = tf.constant(x), tf.constant(y)

    def loss(w):
        w1 = tf.reshape(w[:HIDDEN], [1, HIDDEN])
        b1 = w[HIDDEN : 2 * HIDDEN]
        w2 = tf.reshape(w[2 * HIDDEN : 3 * HIDDEN], [HIDDEN, 1])
        b2 = w[3 * HIDDEN]
        prediction = tf.matmul(tf.tanh(tf.matmul(x, w1) + b1), w2) + b2
        return tf.reduce_mean((prediction - y) ** 2)

    return loss


class Reached(Exception):
    pass


def run_scipy(loss, w0, iterations, target=None):
    from scipy.optimize import minimize

    value_and_gradient = tf.function(
        lambda w: FunctionObjective(loss, w0.size, "float64").value_and_gradient(w)
    )
    value_and_gradient(tf.constant(w0))  # trace outside the timing
    calls = []

    def fun(w):
        value, gradient = value_and_gradient(tf.constant(w))
        value = float(value)
        calls.append(value)
        if target is not None and value <= target:
            raise Reached
        return value, gradient.numpy()

    iterations_done = []
    start = time.perf_counter()
    try:
        result = minimize(
            fun,
            w0,
            jac=True,
            method="L-BFGS-B",
            callback=lambda *args: iterations_done.append(1),
            options={
                "maxiter": iterations,
                "maxcor": HISTORY,
                "ftol": 0.0,
                "gtol": 0.0,
                "maxfun": 100 * iterations,
            },
        )
        final = float(result.fun)
    except Reached:
        final = calls[-1]
    elapsed = time.perf_counter() - start
    return {
        "evaluations": len(calls),
        "iterations": len(iterations_done) + (target is not None),
        "loss": final,
        "seconds": elapsed,
    }


def counted_objective(loss, size, capacity, stationary=True):
    """The loss as a FunctionObjective that records every value it returns."""
    count = tf.Variable(0, dtype=tf.int32)
    values = tf.Variable(tf.fill([capacity], tf.constant(np.inf, tf.float64)))

    def recorded(w):
        value = loss(w)
        index = tf.minimum(count, capacity - 1)
        record = values.scatter_nd_update([[index]], [value])
        with tf.control_dependencies([record, count.assign_add(1)]):
            return tf.identity(value)

    class Objective(FunctionObjective):
        pass

    Objective.stationary = stationary
    objective = Objective(recorded, size=size, dtype="float64")

    def reset():
        count.assign(0)
        values.assign(tf.fill([capacity], tf.constant(np.inf, tf.float64)))

    return objective, count, values, reset


def run_gz(
    loss, w0, target, max_iterations, jit_compile=False, stationary=True, cold=False
):
    capacity = 100 * max_iterations
    objective, count, values, reset = counted_objective(
        loss, w0.size, capacity, stationary
    )
    solver = gz.LBFGS(history=HISTORY)
    # First run: how many iterations to the target.
    _, history = solver.minimize(
        objective, w0, iterations=max_iterations, jit_compile=jit_compile
    )
    recorded = values.numpy()[: int(count.numpy())]
    hits = np.nonzero(recorded <= target)[0]
    if not len(hits):
        return None
    evaluations = int(hits[0]) + 1
    per_step = np.cumsum([record["evaluations"] for record in history[1:]])
    iterations = int(np.searchsorted(per_step, evaluations) + 1)
    assert int(count.numpy()) == int(per_step[-1]), (
        "logged evaluations != objective calls"
    )

    result = {
        "evaluations": evaluations,
        "iterations": iterations,
        "loss": float(recorded[hits[0]]),
    }
    if cold:  # Solver.minimize traces its step function, then runs.
        reset()
        start = time.perf_counter()
        solver.minimize(objective, w0, iterations=iterations, jit_compile=jit_compile)
        result["cold_seconds"] = time.perf_counter() - start
    # Warm: the same iterations with the step already traced.
    step = tf.function(
        lambda w, state: solver.step(w, state, objective), jit_compile=jit_compile
    )
    state0 = solver.initial_state(objective.size, objective.dtype)
    step(tf.constant(w0), state0)
    start = time.perf_counter()
    w, state = tf.constant(w0), state0
    for _ in range(iterations):
        w, state, logs = step(w, state)
    float(logs["step_size"])  # wait for the last step
    result["seconds"] = time.perf_counter() - start
    return result


def run_torch(x, y, w0, target, max_iterations):
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    torch.set_default_dtype(torch.float64)
    xt, yt = torch.tensor(x), torch.tensor(y)
    w1 = torch.tensor(w0[:HIDDEN].reshape(1, HIDDEN), requires_grad=True)
    b1 = torch.tensor(w0[HIDDEN : 2 * HIDDEN], requires_grad=True)
    w2 = torch.tensor(
        w0[2 * HIDDEN : 3 * HIDDEN].reshape(HIDDEN, 1), requires_grad=True
    )
    b2 = torch.tensor(w0[3 * HIDDEN :], requires_grad=True)
    parameters = [w1, b1, w2, b2]
    optimizer = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=max_iterations,
        max_eval=100 * max_iterations,
        history_size=HISTORY,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = torch.mean((torch.tanh(xt @ w1 + b1) @ w2 + b2 - yt) ** 2)
        loss.backward()
        calls.append(loss.item())
        if calls[-1] <= target:
            raise Reached
        return loss

    start = time.perf_counter()
    try:
        optimizer.step(closure)
    except Reached:
        pass
    elapsed = time.perf_counter() - start
    if calls[-1] > target:
        return None
    state = optimizer.state[optimizer._params[0]]
    return {
        "evaluations": len(calls),
        "iterations": state.get("n_iter", float("nan")),
        "loss": calls[-1],
        "seconds": elapsed,
    }


def run_tfp(loss, w0, target, max_iterations):
    try:
        import tensorflow_probability as tfp
    except ImportError:
        return "tensorflow_probability is not installed"
    objective = FunctionObjective(loss, w0.size, "float64")
    run = tf.function(
        lambda w, n: tfp.optimizer.lbfgs_minimize(
            objective.value_and_gradient,
            w,
            num_correction_pairs=HISTORY,
            tolerance=0.0,
            x_tolerance=0.0,
            f_relative_tolerance=0.0,
            max_iterations=n,
        )
    )
    for n in range(1, max_iterations + 1):
        result = run(tf.constant(w0), tf.constant(n))
        if float(result.objective_value) <= target:
            start = time.perf_counter()
            result = run(tf.constant(w0), tf.constant(n))
            return {
                "evaluations": int(result.num_objective_evaluations),
                "iterations": n,
                "loss": float(result.objective_value),
                "seconds": time.perf_counter() - start,
            }
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--iterations",
        type=int,
        default=200,
        help="SciPy iterations that set each target loss",
    )
    parser.add_argument("--seeds", type=int, default=5, help="initial weights tried")
    args = parser.parse_args()

    limit = 3 * args.iterations
    methods = [
        (
            "scipy L-BFGS-B",
            "scipy",
            lambda loss, x, y, w0, target, seed: run_scipy(loss, w0, limit, target),
        ),
        (
            "gz LBFGS (FunctionObjective)",
            "gz",
            lambda loss, x, y, w0, target, seed: run_gz(
                loss, w0, target, limit, cold=seed == 0
            ),
        ),
        (
            "gz LBFGS, jit_compile=True",
            "gz-xla",
            lambda loss, x, y, w0, target, seed: run_gz(
                loss, w0, target, limit, jit_compile=True, cold=seed == 0
            ),
        ),
        (
            "gz LBFGS, re-evaluating each step",
            "gz-reevaluating",
            lambda loss, x, y, w0, target, seed: run_gz(
                loss, w0, target, limit, stationary=False
            ),
        ),
        (
            "torch.optim.LBFGS strong_wolfe",
            "torch",
            lambda loss, x, y, w0, target, seed: run_torch(x, y, w0, target, limit),
        ),
        (
            "tfp.optimizer.lbfgs_minimize",
            "tfp",
            lambda loss, x, y, w0, target, seed: run_tfp(loss, w0, target, limit),
        ),
    ]
    print(
        f"1-{HIDDEN}-1 tanh MLP on sin(2x), n={SAMPLES}, m={3 * HIDDEN + 1}, float64, "
        f"history={HISTORY}; {args.seeds} initializations; target: the loss SciPy "
        f"L-BFGS-B reaches in {args.iterations} iterations\n"
    )
    results = {name: [] for name, _, _ in methods}
    skipped = {}
    for seed in range(args.seeds):
        x, y, w0 = problem(seed)
        loss = tf_loss(x, y)
        target = run_scipy(loss, w0, args.iterations)["loss"]
        line = [f"seed {seed}: target {target:.4e}; evaluations"]
        for name, label, run in methods:
            if name in skipped:
                continue
            row = run(loss, x, y, w0, target, seed)
            if isinstance(row, str):
                skipped[name] = row
                continue
            results[name].append(row)
            line.append(f"{label}={row['evaluations'] if row else 'n/a'}")
        print(" ".join(line), flush=True)

    header = (
        f"{'method':36s} {'evals (median)':>14s} {'evals/iter':>10s} "
        f"{'seconds (median)':>16s} {'cold s':>7s} {'reached':>7s}"
    )
    print("\n" + header)
    print("-" * len(header))
    for name, _, _ in methods:
        if name in skipped:
            print(f"{name:36s} skipped: {skipped[name]}")
            continue
        rows = [row for row in results[name] if row]
        if not rows:
            print(f"{name:36s} never reached the target in {limit} iterations")
            continue
        evaluations = np.median([row["evaluations"] for row in rows])
        per_iteration = sum(row["evaluations"] for row in rows) / sum(
            row["iterations"] for row in rows
        )
        seconds = np.median([row["seconds"] for row in rows])
        cold = [row["cold_seconds"] for row in rows if "cold_seconds" in row]
        cold = f"{cold[0]:7.2f}" if cold else " " * 7
        print(
            f"{name:36s} {evaluations:14.1f} {per_iteration:10.3f} {seconds:16.3f} {cold} "
            f"{len(rows):>3d}/{len(results[name])}"
        )
    print(
        "\nevaluations: loss (and gradient) calls until one returns a loss <= the target;"
        "\nseconds: wall time to the target with traced functions warm; cold s: seed 0"
        " through Solver.minimize, tracing (and XLA compilation) included."
    )


if __name__ == "__main__":
    main()
