"""Per-parameter optimizers in plain Keras: fit y = sin(x) with each of them.

Every keras_gdzoo per-parameter optimizer is an ordinary
`keras.optimizers.Optimizer`, so it goes straight into `model.compile`.
This script trains the same small MLP from the same initial weights with
several of them (mini-batch mode, 32 samples per update) and prints the
final training loss of each. Runs offline in well under a minute.

Run: python examples/per_parameter_optimizers.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402

OPTIMIZERS = {
    "GradientDescent": lambda: gz.GradientDescent(learning_rate=0.1),
    "Momentum": lambda: gz.Momentum(learning_rate=0.05, momentum=0.9),
    "Momentum (dampened)": lambda: gz.Momentum(
        learning_rate=0.5, momentum=0.9, dampened=True
    ),
    "NesterovMomentum": lambda: gz.NesterovMomentum(learning_rate=0.05, momentum=0.9),
    "AdaGrad": lambda: gz.AdaGrad(learning_rate=0.1),
    "RMSProp": lambda: gz.RMSProp(learning_rate=0.01),
    "AdaDelta": lambda: gz.AdaDelta(),
    "Adam": lambda: gz.Adam(learning_rate=0.01),
    "Adamax": lambda: gz.Adamax(learning_rate=0.02),
    "Nadam": lambda: gz.Nadam(learning_rate=0.01),
}
EPOCHS = 60


def mse(model, x, y):
    """Training-set MSE from one direct call (no extra graph to trace)."""
    return float(np.mean((keras.ops.convert_to_numpy(model(x)) - y) ** 2))


def main():
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, size=(256, 1)).astype("float32")
    y = np.sin(x)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=0).batch(32)

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    initial = model.get_weights()
    print(f"MSE before training: {mse(model, x, y):.4f}")
    print(f"{'optimizer':<22} MSE after {EPOCHS} passes ({EPOCHS * 8} updates)")
    for name, make in OPTIMIZERS.items():
        model.set_weights(initial)
        # The passes over the data are chained into one long epoch, and one
        # graph call runs 40 updates: this keeps Keras's per-epoch and
        # per-call overhead out of a demo this small.
        model.compile(optimizer=make(), loss="mse", steps_per_execution=40)
        model.fit(data.repeat(EPOCHS), epochs=1, shuffle=False, verbose=0)
        print(f"{name:<22} {mse(model, x, y):.5f}")


if __name__ == "__main__":
    main()
