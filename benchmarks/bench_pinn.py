"""PINN (1-D Poisson, examples/pinn_poisson.py): max error after the same
number of iterations, gz L-BFGS vs SciPy L-BFGS-B on the same loss and the
same initial weights, and gz Levenberg-Marquardt on the residual form.

    python benchmarks/bench_pinn.py [--iterations 500] [--lm-iterations 40]

SciPy minimizes the model's `compute_loss` as a function of the flat
float64 weights (value and gradient from one `tf.function`), with
`maxiter` = the iteration count and 10 correction pairs, as gz's LBFGS.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import keras_gdzoo as gz  # noqa: E402
import pinn_poisson as pinn  # noqa: E402


def flat(model):
    return np.concatenate([v.numpy().ravel() for v in model.trainable_variables])


def assign(model, w):
    start = 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        v.assign(w[start : start + size].reshape(v.shape))
        start += size


def scipy_lbfgs(model, x, iterations):
    xt = tf.constant(x)

    @tf.function
    def value_and_gradient():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(xt, None, model(xt))
        return loss, tape.gradient(loss, model.trainable_variables)

    evaluations = [0]

    def fun(w):
        evaluations[0] += 1
        assign(model, w)
        loss, grads = value_and_gradient()
        return float(loss), np.concatenate([g.numpy().ravel() for g in grads])

    start = time.perf_counter()
    result = scipy.optimize.minimize(
        fun, flat(model), jac=True, method="L-BFGS-B",
        options={"maxiter": iterations, "maxcor": 10, "ftol": 0.0, "gtol": 0.0, "maxfun": 10**9},
    )
    seconds = time.perf_counter() - start
    assign(model, result.x)
    return result.nit, evaluations[0], seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--lm-iterations", type=int, default=40)
    parser.add_argument("--adam", type=int, default=1000)
    args = parser.parse_args()
    x = pinn.collocation(64)
    model = pinn.build(seed=0)
    pinn.train(model, x, keras.optimizers.Adam(1e-2), args.adam)
    w0 = flat(model)
    print(f"after Adam warm-up ({args.adam}): max error {pinn.max_error(model):.3e}")

    rows = []
    assign(model, w0)
    start = time.perf_counter()
    history = pinn.train(model, x, gz.LBFGS(), args.iterations)
    rows.append(("gz LBFGS (fit, compute_loss)", len(history["loss"]), sum(history["evaluations"]),
                 time.perf_counter() - start, pinn.max_error(model), history["loss"][-1]))
    assign(model, w0)
    nit, nfev, seconds = scipy_lbfgs(model, x, args.iterations)
    loss = float(model.compute_loss(tf.constant(x), None, model(tf.constant(x))))
    rows.append(("SciPy L-BFGS-B", nit, nfev, seconds, pinn.max_error(model), loss))
    assign(model, w0)
    start = time.perf_counter()
    history = pinn.train(model, x, gz.LevenbergMarquardt(), args.lm_iterations, residuals=True)
    rows.append(("gz LM (fit, residuals=)", len(history["loss"]), sum(history.get("attempts", [0])),
                 time.perf_counter() - start, pinn.max_error(model), history["loss"][-1]))
    print(f"{'method':32s} {'iters':>6s} {'evals':>6s} {'seconds':>8s} {'max error':>10s} {'loss':>10s}")
    for name, iters, evals, seconds, error, loss in rows:
        print(f"{name:32s} {iters:6d} {int(evals):6d} {seconds:8.2f} {error:10.3e} {loss:10.3e}")
    ratio = rows[0][4] / rows[1][4]
    print(f"gz L-BFGS error / SciPy error = {ratio:.2f} (goal <= 2); "
          f"LM error / SciPy error = {rows[2][4] / rows[1][4]:.3f} (goal < 1)")


if __name__ == "__main__":
    main()
