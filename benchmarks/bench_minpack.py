"""gz.LevenbergMarquardt against MINPACK on the Moré-Garbow-Hillstrom problems.

The 17 least-squares problems of `keras_gdzoo.problems_mgh` from the
standard starting point x0 and from 10 x0 (34 runs), each solved in this
one run by

* MINPACK's `lmder` through `scipy.optimize.least_squares(method="lm")`,
  exact Jacobian (TensorFlow autodiff of the same residuals), tolerances
  1e-15 (scipy raises them to machine epsilon), `x_scale="jac"` (MINPACK's
  own scaling, mode=1) and `x_scale=1.0` (unscaled, mode=2);
* `gz.LevenbergMarquardt` through `Solver.minimize` on a
  `FunctionObjective(..., residuals=...)` in float64, for each damping rule
  (first "trust-region", what the default "auto" uses on these dense
  problems) with default tolerances.

A run is solved when F = sum f_i^2 is within 1e-5 relative (+1e-12) of a
minimum value the paper lists (`LeastSquaresProblem.solved`). Printed: per
run F, solved, iterations (Jacobian evaluations) and function evaluations
of each method; then per method the number solved and the median
iterations / evaluations over the runs it solved.

Run: python benchmarks/bench_minpack.py [--rules trust-region lecture ...]
     [--iterations 2000] [--quick]
(--quick: MINPACK and the default rule only, about 2 minutes on two cores.)
"""

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402
from keras_gdzoo import problems_mgh  # noqa: E402
from keras_gdzoo.solvers.base import FunctionObjective  # noqa: E402

RULES = [
    "trust-region", "scaled-trust-region", "scaled-gain-ratio", "gain-ratio", "marquardt",
    "lecture",
]


def objective(problem):
    residuals = lambda w: problem.residuals(w, problems_mgh.TF)  # noqa: E731
    return FunctionObjective(
        lambda w: 0.5 * tf.reduce_sum(residuals(w) ** 2), problem.n, "float64",
        residuals=residuals,
    )


def run_gz(problem, factor, iterations=2000, **kwargs):
    """(F, iterations, evaluations, status) of gz LM from factor * x0."""
    solver = gz.LevenbergMarquardt(**kwargs)
    start = tf.constant(factor * np.array(problem.start), tf.float64)
    w, history = solver.minimize(objective(problem), start, iterations=iterations)
    steps = history[1:]
    evaluations = int(sum(r["evaluations"] for r in steps))
    status = int(steps[-1]["status"]) if steps else 0
    return problem.value(w.numpy()), len(steps), evaluations, status


def jacobian_of(problem):
    @tf.function
    def jacobian(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = problem.residuals(x, problems_mgh.TF)
        return tape.jacobian(f, x)

    return lambda x: jacobian(tf.constant(x)).numpy()


def run_minpack(problem, factor, x_scale="jac", max_nfev=10000):
    """(F, Jacobian evaluations, function evaluations, status) of MINPACK."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scipy.optimize.least_squares(
            lambda x: problem.residuals(x, np),
            factor * np.array(problem.start),
            jac=jacobian_of(problem),
            method="lm",
            x_scale=x_scale,
            ftol=1e-15,
            xtol=1e-15,
            gtol=1e-15,
            max_nfev=max_nfev,
        )
    return float(np.sum(result.fun**2)), int(result.njev), int(result.nfev), int(result.status)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", nargs="+", default=RULES)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="the default rule only")
    args = parser.parse_args()
    if args.quick:
        args.rules = RULES[:1]
    methods = ["minpack-jac", "minpack-1"] + [f"gz-{rule}" for rule in args.rules]
    results = {method: [] for method in methods}
    started = time.perf_counter()
    header = f"{'problem':20s} {'x0':>4s}" + "".join(f" | {m[:22]:>22s}" for m in methods)
    print(header)
    print(" " * 26 + " |      F    ok  it/nfev" * len(methods))
    for problem, factor in problems_mgh.runs():
        row = f"{problem.name:20s} {factor:4.0f}"
        for method in methods:
            if method == "minpack-jac":
                outcome = run_minpack(problem, factor, "jac")
            elif method == "minpack-1":
                outcome = run_minpack(problem, factor, 1.0)
            else:
                rule = method[len("gz-"):]
                outcome = run_gz(problem, factor, args.iterations, damping_rule=rule)
            value, iterations, evaluations, _ = outcome
            solved = problem.solved(value)
            results[method].append((solved, iterations, evaluations))
            row += f" | {value:9.3e} {'y' if solved else '-'} {iterations:4d}/{evaluations:<5d}"
        print(row, flush=True)
    print()
    print(f"{'method':24s} {'solved':>7s} {'median it.':>11s} {'median evals':>13s}")
    for method in methods:
        solved = [r for r in results[method] if r[0]]
        median_it = statistics.median(r[1] for r in solved) if solved else float("nan")
        median_ev = statistics.median(r[2] for r in solved) if solved else float("nan")
        total = len(results[method])
        print(f"{method:24s} {len(solved):4d}/{total} {median_it:11.1f} {median_ev:13.1f}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
