"""Levenberg-Marquardt speed (docs/methods.md, "Speed and memory"), three comparisons, each
measured in this one run, the two members of a pair timed back to back in
alternating order (medians over repeats, so drift in machine load hits both
alike):

1. Per LM step on the sinc(10x) fit of the tf-levenberg-marquardt README
   (20,000 points, 1-20-1 tanh, batches of 1000, same initial weights, same
   batch order): `gz.wrap(model)` + `gz.LevenbergMarquardt()` against the
   PyPI package `tf-levenberg-marquardt` (its `training.Trainer`, the engine
   of its `ModelWrapper`), and the full-data MSE of both after the same
   number of steps. Goal: >= 20x faster per step, equal or lower MSE.
   The package is NOT a dependency: install it in a throwaway environment,
       python -m venv --system-site-packages /tmp/lm-venv
       /tmp/lm-venv/bin/pip install --no-deps tf-levenberg-marquardt
       /tmp/lm-venv/bin/python benchmarks/bench_lm.py
   Without it (or when it fails to import) a naive stand-in is timed
   instead: the same LM step with the Jacobian from `tape.jacobian` of the
   whole batch output (the O(n^2) construction docs/methods.md rules out).
2. One full-batch LM epoch (n = 20,000, one iteration) against one
   full-batch `keras.optimizers.Adam` epoch, both through `fit`. Goal: <= 5x.
3. The Gauss-Newton accumulation (per-example Jacobians, J'J and J'e over the
   20,000 examples) against one full gradient of the loss. Goal: <= 3x.

Run: python benchmarks/bench_lm.py [--steps 100] [--repeats 5] [--fit-epochs 5] [--seeds 3]
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
from keras_gdzoo.model import ModelObjective  # noqa: E402

N = 20_000
BATCH = 1000


def sinc_data():
    x = np.linspace(-1, 1, N, dtype="float32")[:, None]
    y = np.sinc(10 * x).astype("float32")
    order = np.random.default_rng(0).permutation(N)  # one fixed batch order
    return x[order], y[order]


def sinc_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(20, activation="tanh"), keras.layers.Dense(1)]
    )


def mse(model, x, y):
    return float(np.mean((model.predict(x, batch_size=N, verbose=0) - y) ** 2))


def median_ratio(first, second, repeats, first_units=1, second_units=1):
    """Alternate first() and second(); medians of their times per unit (step,
    epoch, call) and of the paired ratios first / second."""
    times_first, times_second, ratios = [], [], []
    for repeat in range(repeats):
        pair = (first, second) if repeat % 2 == 0 else (second, first)
        measured = {}
        for fn in pair:
            start = time.perf_counter()
            fn()
            measured[fn] = time.perf_counter() - start
        times_first.append(measured[first] / first_units)
        times_second.append(measured[second] / second_units)
        ratios.append(times_first[-1] / times_second[-1])
    median = statistics.median
    return median(times_first), median(times_second), median(ratios)


# -- 1. per step against tf-levenberg-marquardt ------------------------------


class GdzooRun:
    """gz.wrap(model).fit, one epoch (20 LM iterations) per call; with
    `steps_per_execution` the Keras loop's per-batch overhead is paid once
    per epoch, as a user fitting many steps would set it."""

    def __init__(self, x, y, steps_per_execution=1, seed=0, dataset=False):
        self.x, self.y = x, y
        # fit() on NumPy arrays builds a new input pipeline at every call and
        # epoch; a repeated tf.data.Dataset (same batch order) does not.
        self.dataset = (
            tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat() if dataset else None
        )
        self.model = sinc_model(seed)
        self.trainer = gz.wrap(self.model)
        self.trainer.compile(
            optimizer=gz.LevenbergMarquardt(),
            loss="mse",
            steps_per_execution=steps_per_execution,
        )
        self.steps = 0

    def run(self, steps):
        assert steps % (N // BATCH) == 0, "whole epochs only"
        epochs = steps // (N // BATCH)
        if self.dataset is not None:
            self.trainer.fit(self.dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        else:
            self.trainer.fit(
                self.x, self.y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0
            )
        self.steps += steps


class GdzooStepRun:
    """The solver iteration alone: `LevenbergMarquardt.step` on a
    `ModelObjective` in one tf.function per batch, no Keras fit loop."""

    def __init__(self, x, y):
        self.x, self.y = tf.constant(x), tf.constant(y)
        self.model = sinc_model()
        self.trainer = gz.wrap(self.model)
        self.solver = gz.LevenbergMarquardt()
        self.trainer.compile(optimizer=self.solver, loss="mse")
        strategy = tf.distribute.get_strategy()
        objective = ModelObjective(self.trainer, (self.x[:1], self.y[:1]), strategy)
        self.w = objective.current()
        self.state = self.solver.initial_state(objective.size, objective.dtype)

        @tf.function
        def step(x, y, w, state):
            objective = ModelObjective(self.trainer, (x, y), strategy)
            return self.solver.step(w, state, objective)[:2]

        self.step = step
        self.steps = 0

    def run(self, steps):
        for _ in range(steps):
            start = (self.steps % (N // BATCH)) * BATCH
            self.w, self.state = self.step(
                self.x[start : start + BATCH], self.y[start : start + BATCH], self.w, self.state
            )
            self.steps += 1
        self.w.numpy()


class PackageRun:
    """tf-levenberg-marquardt's Trainer on the same model and batches."""

    def __init__(self, x, y, package, seed=0):
        self.x, self.y = tf.constant(x), tf.constant(y)
        self.model = sinc_model(seed)
        self.trainer = package.training.Trainer(
            model=self.model,
            optimizer=keras.optimizers.SGD(learning_rate=1.0),
            loss=package.loss.MeanSquaredError(),
        )
        self.steps = 0

    def run(self, steps):
        for _ in range(steps):
            start = (self.steps % (N // BATCH)) * BATCH
            self.trainer.train_step(self.x[start : start + BATCH], self.y[start : start + BATCH])
            self.steps += 1


class NaiveRun:
    """Stand-in reference: the same LM arithmetic in one tf.function, with the
    Jacobian from `tape.jacobian` of the whole batch output."""

    def __init__(self, x, y, seed=0):
        self.x, self.y = tf.constant(x), tf.constant(y)
        self.model = sinc_model(seed)
        self.variables = self.model.trainable_variables
        self.damping = tf.Variable(1e-3)
        self.steps = 0

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                e = tf.reshape(self.model(x, training=True) - y, [-1])
            jacobians = tape.jacobian(e, self.variables)
            jacobian = tf.concat([tf.reshape(j, [tf.shape(e)[0], -1]) for j in jacobians], 1)
            n = tf.cast(tf.shape(e)[0], tf.float32)
            matrix = tf.matmul(jacobian, jacobian, transpose_a=True) / n
            gradient = tf.linalg.matvec(jacobian, e, transpose_a=True) / n
            old = [tf.identity(v) for v in self.variables]
            value = tf.reduce_mean(e * e)
            for _ in tf.range(10):
                damped = matrix + self.damping * tf.eye(tf.shape(matrix)[0])
                delta = tf.linalg.cholesky_solve(tf.linalg.cholesky(damped), gradient[:, None])
                pieces = tf.split(delta[:, 0], [int(np.prod(v.shape)) for v in self.variables])
                for v, o, p in zip(self.variables, old, pieces):
                    v.assign(o - tf.reshape(p, v.shape))
                if tf.reduce_mean((self.model(x) - y) ** 2) < value:
                    self.damping.assign(self.damping * 0.1)
                    break
                for v, o in zip(self.variables, old):
                    v.assign(o)
                self.damping.assign(self.damping * 10.0)

        self.step = step

    def run(self, steps):
        for _ in range(steps):
            start = (self.steps % (N // BATCH)) * BATCH
            self.step(self.x[start : start + BATCH], self.y[start : start + BATCH])
            self.steps += 1


def make_reference(x, y, seed=0):
    try:
        import tf_levenberg_marquardt as package

        reference = PackageRun(x, y, package, seed)
        reference.run(1)
        return reference, f"tf-levenberg-marquardt {package.__version__}"
    except Exception as error:  # noqa: BLE001  (report any import/run failure)
        print(f"   tf-levenberg-marquardt unusable here ({type(error).__name__}: {error});")
        print("   timing the naive tape.jacobian stand-in instead.")
        reference = NaiveRun(x, y, seed)
        reference.run(1)
        return reference, "naive tape.jacobian LM (stand-in)"


def compare_per_step(x, y, steps, repeats):
    epoch = N // BATCH
    ours_steps = max(epoch, steps // epoch * epoch)
    reference_steps = max(1, ours_steps // 10)
    print(f"\n1. Per LM step, sinc(10x), 1-20-1 tanh, batches of {BATCH} "
          f"(medians of {repeats} timings of {ours_steps} steps, reference "
          f"{reference_steps} steps):")
    reference, name = make_reference(x, y)
    reference.run(epoch - 1)
    ours = {
        "keras_gdzoo fit()": GdzooRun(x, y),
        "keras_gdzoo fit(), steps_per_execution=20": GdzooRun(x, y, steps_per_execution=epoch),
        "keras_gdzoo fit(dataset), steps_per_execution=20": GdzooRun(
            x, y, steps_per_execution=epoch, dataset=True
        ),
        "keras_gdzoo solver step alone": GdzooStepRun(x, y),
    }
    for label, run in ours.items():
        run.run(epoch)  # trace, warm caches
        reference_time, ours_time, ratio = median_ratio(
            lambda: reference.run(reference_steps),
            lambda run=run: run.run(ours_steps),
            repeats,
            reference_steps,
            ours_steps,
        )
        print(f"   {label:<52s} {1000 * ours_time:7.1f} ms/step, "
              f"reference {1000 * reference_time:7.1f} ms/step: {ratio:5.1f}x faster")
    print(f"   reference: {name}; goal >= 20x")


def compare_fit_quality(x, y, epochs, seeds):
    """Full-data MSE after the same number of LM iterations, several seeds:
    both run the same algorithm (same damping rule, same batches), so their
    trajectories agree until float rounding (QR vs Cholesky solves) makes
    these non-convex runs drift apart."""
    steps = epochs * (N // BATCH)
    print(f"\n   full-data MSE after {steps} steps (goal: keras_gdzoo <= reference):")
    ours_all, reference_all = [], []
    for seed in range(seeds):
        reference, _ = make_reference(x, y, seed)
        reference.run(epochs * (N // BATCH) - 1)
        run = GdzooRun(x, y, steps_per_execution=N // BATCH, seed=seed)
        run.run(epochs * (N // BATCH))
        ours_mse, reference_mse = mse(run.model, x, y), mse(reference.model, x, y)
        ours_all.append(ours_mse)
        reference_all.append(reference_mse)
        print(f"   seed {seed}: keras_gdzoo {ours_mse:.4g}, reference {reference_mse:.4g}")
    print(f"   geometric means: keras_gdzoo {statistics.geometric_mean(ours_all):.4g}, "
          f"reference {statistics.geometric_mean(reference_all):.4g}")


# -- 2. full-batch LM epoch against full-batch Adam epoch ---------------------


def compare_epochs(x, y, repeats):
    lm_model, adam_model = sinc_model(), sinc_model()
    trainer = gz.wrap(lm_model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    adam_model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    epochs = 5

    def lm_epochs():
        trainer.fit(x, y, batch_size=N, epochs=epochs, shuffle=False, verbose=0)

    def adam_epochs():
        adam_model.fit(x, y, batch_size=N, epochs=epochs, shuffle=False, verbose=0)

    lm_epochs()
    adam_epochs()
    lm_time, adam_time, ratio = median_ratio(lm_epochs, adam_epochs, repeats)
    print(f"\n2. One full-batch epoch, n = {N} (through fit):")
    print(f"   LevenbergMarquardt {1000 * lm_time / epochs:8.1f} ms/epoch")
    print(f"   keras Adam         {1000 * adam_time / epochs:8.1f} ms/epoch")
    print(f"   ratio: {ratio:.1f}x  (goal <= 5x)")


# -- 3. Gauss-Newton accumulation against one gradient ------------------------


def compare_accumulation(x, y, repeats):
    model = sinc_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    data = (tf.constant(x), tf.constant(y))
    objective = ModelObjective(trainer, data, tf.distribute.get_strategy())
    w = objective.current()
    gauss_newton = tf.function(lambda: objective.gauss_newton(w))
    gradient = tf.function(lambda: objective.value_and_gradient(w))
    calls = 20

    def run(fn):
        def repeated():
            for _ in range(calls):
                result = fn()
            tf.nest.map_structure(lambda t: t.numpy(), result)

        return repeated

    run(gauss_newton)()
    run(gradient)()
    gn_time, gradient_time, ratio = median_ratio(run(gauss_newton), run(gradient), repeats)
    print(f"\n3. n = {N}, m = {objective.size}:")
    print(f"   Gauss-Newton J'J, J'e  {1000 * gn_time / calls:8.2f} ms")
    print(f"   one gradient           {1000 * gradient_time / calls:8.2f} ms")
    print(f"   ratio: {ratio:.1f}x  (goal <= 3x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="timed LM steps per method")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit-epochs", type=int, default=5, help="epochs of the MSE comparison")
    parser.add_argument(
        "--seeds", type=int, default=3, help="initializations for the MSE comparison"
    )
    args = parser.parse_args()
    x, y = sinc_data()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs")
    compare_per_step(x, y, args.steps, args.repeats)
    compare_fit_quality(x, y, args.fit_epochs, args.seeds)
    compare_epochs(x, y, args.repeats)
    compare_accumulation(x, y, args.repeats)


if __name__ == "__main__":
    main()
