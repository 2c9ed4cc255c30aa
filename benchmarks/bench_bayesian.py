"""Bayesian regularization against a sweep of fixed L2 penalties (issue 13).

For each problem and noise draw, a 1-5-1 tanh network (`gz.problems.get("sin")`'s
model and seeded initial weights) is trained three ways from the same initial
weights, and its test error (mean squared error to the noise-free function on
201 points) recorded:

* `gz.BayesianRegularization(weight_groups="model")`: one alpha for all weights
  (MATLAB's trainbr, Foresee & Hagan 1997);
* `gz.BayesianRegularization(weight_groups="variable")` (the default): one alpha
  per trainable variable (MacKay 1992b's weight classes);
* for every penalty lambda of the sweep, E_D + lambda w'w minimized by MINPACK
  (`scipy.optimize.least_squares(method="lm")`, exact Jacobian, tight
  tolerances), the "best fixed penalty" being the lambda with the lowest mean
  test error over the draws, chosen in hindsight.

Problems (41 inputs, targets with Gaussian noise of standard deviation 0.15):

* `odd`: the noisy SIN problem, y = sin(pi x) on [-1, 1] (the test's);
* `shifted`: y = sin(pi x + 0.7) + 0.3 on [-1, 1], which needs the biases;
* `wide`: y = sin(pi x / 5) on [-5, 5], inputs not scaled to [-1, 1] (trainbr
  would scale them; gz uses the data as given).

Run: python benchmarks/bench_bayesian.py [--seeds 10] [--quick]
(--quick: 3 draws, < 3 minutes).
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

import keras_gdzoo as gz  # noqa: E402

NOISE = 0.15
PENALTIES = [0.0] + list(np.logspace(-5, 0, 11))
PROBLEMS = {
    "odd": (1.0, lambda x: np.sin(np.pi * x)),
    "shifted": (1.0, lambda x: np.sin(np.pi * x + 0.7) + 0.3),
    "wide": (5.0, lambda x: np.sin(np.pi * x / 5.0)),
}


def residuals_and_jacobian(p, x, y):
    """r = net(x) - y and dr/dp for the 1-5-1 tanh network, p flattened in
    `model.trainable_variables` order (kernel 1, bias 1, kernel 2, bias 2)."""
    k1, b1, k2, b2 = p[0:5], p[5:10], p[10:15], p[15]
    h = np.tanh(x @ k1[None] + b1)
    r = h @ k2 + b2 - y[:, 0]
    d = (1.0 - h**2) * k2
    return r, np.concatenate([d * x, d, h, np.ones((len(x), 1))], axis=1)


def fixed_penalty_fit(start, x, y, penalty):
    root = np.sqrt(penalty)
    eye = np.eye(start.size)

    def fun(p):
        return np.concatenate([residuals_and_jacobian(p, x, y)[0], root * p])

    def jac(p):
        return np.vstack([residuals_and_jacobian(p, x, y)[1], root * eye])

    fit = scipy.optimize.least_squares(
        fun, start, jac=jac, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=20000
    )
    return fit.x


def bayesian_fit(model, x, y, weight_groups, epochs):
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.BayesianRegularization(weight_groups=weight_groups), loss="mse")
    history = trainer.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0).history
    return history


def run(seeds, epochs):
    keras.config.set_floatx("float64")
    problem = gz.problems.get("sin")
    rows = []
    for name, (scale, function) in PROBLEMS.items():
        x = scale * problem.x_train.astype("float64")
        x_test = np.linspace(-scale, scale, 201)[:, None]
        y_test = function(x_test)
        fixed = {penalty: [] for penalty in PENALTIES}
        bayes = {"model": [], "variable": []}
        details = {"model": [], "variable": []}
        for seed in range(seeds):
            noise = NOISE * np.random.default_rng(seed).normal(size=x.shape)
            y = function(x) + noise
            start = np.concatenate(
                [v.numpy().ravel() for v in problem.build_model(seed).trainable_variables]
            )
            for penalty in PENALTIES:
                p = fixed_penalty_fit(start, x, y, penalty)
                r = residuals_and_jacobian(p, x_test, y_test)[0]
                fixed[penalty].append(np.mean(r**2))
            for groups in bayes:
                model = problem.build_model(seed)
                history = bayesian_fit(model, x, y, groups, epochs)
                error = np.mean((model.predict(x_test, verbose=0) - y_test) ** 2)
                bayes[groups].append(error)
                details[groups].append(
                    (history["gamma"][-1], len(history["loss"]), history["status"][-1])
                )
        means = {penalty: np.mean(errors) for penalty, errors in fixed.items()}
        best = min(means, key=means.get)
        print(f"\n{name}: mean test error over {seeds} draws")
        print("  fixed:", "  ".join(f"{p:.0e}: {m:.2e}" for p, m in means.items()))
        for groups, errors in bayes.items():
            gammas, iterations, statuses = zip(*details[groups])
            wins = sum(e <= f for e, f in zip(errors, fixed[best]))
            print(
                f"  BR {groups:8s}: {np.mean(errors):.3e} ({np.mean(errors) / means[best]:.2f} x"
                f" best fixed {best:.0e}: {means[best]:.3e}); <= it on {wins}/{seeds} draws;"
                f" gamma {np.mean(gammas):.1f}; iterations median {np.median(iterations):.0f};"
                f" not converged {sum(s == 0 for s in statuses)}"
            )
        rows.append((name, means[best], best, np.mean(bayes["model"]), np.mean(bayes["variable"])))
    print("\nproblem   best fixed (lambda)     BR model   BR variable")
    for name, best_mean, best, model_mean, variable_mean in rows:
        print(f"{name:8s}  {best_mean:.3e} ({best:.0e})  {model_mean:.3e}  {variable_mean:.3e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="noise draws per problem")
    parser.add_argument("--epochs", type=int, default=300, help="epoch cap of the BR fits")
    parser.add_argument("--quick", action="store_true", help="3 draws (< 3 minutes)")
    args = parser.parse_args()
    start = time.perf_counter()
    run(3 if args.quick else args.seeds, args.epochs)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
