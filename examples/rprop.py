"""Rprop's four variants (Igel & Huesken) on a 1-10-1 tanh net fitting sin(x).

Batch mode, as Rprop wants it: every fit batch is the whole data set and
one Rprop iteration (the data set is repeated 20 times per epoch, so the
200 iterations cost 10 epochs of Keras overhead, not 200). Prints each
variant's final loss and mean step size, then minimizes the Rosenbrock
function directly with `Solver.minimize`. Runs offline in well under a
minute.

    python examples/rprop.py
"""

import keras
import numpy as np
import tensorflow as tf

import keras_gdzoo as gz

VARIANTS = ("rprop+", "rprop-", "irprop+", "irprop-")


def build_model():
    keras.utils.set_random_seed(0)  # the same initial weights for every variant
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(10, activation="tanh", kernel_initializer="glorot_normal"),
            keras.layers.Dense(1),
        ]
    )


def main():
    x = np.linspace(-np.pi, np.pi, 200, dtype="float32")[:, None]
    y = np.sin(x)

    batches = tf.data.Dataset.from_tensors((x, y)).repeat(20)

    print(f"{'variant':8s} {'loss':>10s} {'mean step':>10s}")
    for variant in VARIANTS:
        trainer = gz.wrap(build_model())
        trainer.compile(optimizer=gz.Rprop(variant=variant), loss="mse")
        logs = trainer.fit(batches, epochs=10, shuffle=False, verbose=0).history
        print(f"{variant:8s} {logs['loss'][-1]:10.2e} {logs['step_size_mean'][-1]:10.2e}")

    rosenbrock = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2  # noqa: E731
    w, history = gz.Rprop().minimize(rosenbrock, tf.constant([-1.2, 1.0], "float64"), 500)
    print(
        f"Rosenbrock from (-1.2, 1), iRprop+, {len(history) - 1} iterations: "
        f"w = {w.numpy()}, E(w) = {float(rosenbrock(w)):.2e} (minimum 0 at (1, 1))"
    )


if __name__ == "__main__":
    main()
