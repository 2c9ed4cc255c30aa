"""Xavier/Glorot initialization and learning-rate annealing, side by side.

1. Information flow (the lecture's illustration): the spread of each hidden
   layer's activations in a deep tanh network for weights drawn from
   N(0, 0.01), N(0, 1) and Xavier's N*(0, sqrt(2 / (N_in + N_out))).
2. Annealing: the same network trained with plain SGD, with the per-epoch
   callback `keras_gdzoo.StepDecay` and with the per-iteration schedule
   `keras_gdzoo.schedules.InverseTimeDecay`.

Annealing trades speed for stability: with these settings the annealed runs
cool too quickly (the lecture's warning) and end above the constant rate; try
a larger initial rate or a slower decay. Runs offline on a CPU in under a
minute:

    python examples/annealing_and_init.py
"""

import keras
import numpy as np

import keras_gdzoo as gz

DEPTH, WIDTH = 6, 64
EPOCHS = 20


def network(kernel_initializer, seed=0):
    """A DEPTH x WIDTH tanh network; `kernel_initializer()` is called once per
    layer, because an initializer instance gives the same values on every call
    (as Keras's own do)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((2,))
    hidden, y = [], inputs
    for _ in range(DEPTH):
        y = keras.layers.Dense(WIDTH, activation="tanh", kernel_initializer=kernel_initializer())(y)
        hidden.append(y)
    outputs = keras.layers.Dense(1, kernel_initializer="xavier_normal_linear")(y)
    return keras.Model(inputs, outputs), keras.Model(inputs, hidden)


def data(n=1024, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(n, 2)).astype("float32")
    y = (np.sin(x[:, :1] * 2.0) * np.cos(x[:, 1:])).astype("float32")
    return x, y


def information_flow(x):
    print("Standard deviation of the activations, layer 1 .. %d" % DEPTH)
    for label, initializer in [
        ("N(0, 0.01)", lambda: gz.initializers.Normal(0.01)),
        ("N(0, 1)", lambda: gz.initializers.Normal(1.0)),
        ("Xavier N*", lambda: "xavier_normal_tanh"),
    ]:
        _, probe = network(initializer)
        spreads = [float(np.std(a)) for a in probe.predict(x, verbose=0)]
        print(f"  {label:>10}: " + " ".join(f"{s:6.3f}" for s in spreads))


def annealing(x, y):
    print(f"\nSGD, {EPOCHS} epochs, batch 64, Xavier initialization")
    runs = {
        "constant a = 0.05": (keras.optimizers.SGD(0.05), []),
        "StepDecay(0.5, every=5) epochs": (
            keras.optimizers.SGD(0.05),
            [gz.StepDecay(0.5, every=5)],
        ),
        "InverseTimeDecay(k=0.01) iters": (
            keras.optimizers.SGD(gz.schedules.InverseTimeDecay(0.05, k=0.01)),
            [],
        ),
    }
    for label, (optimizer, callbacks) in runs.items():
        model, _ = network(lambda: "xavier_normal_tanh")
        model.compile(optimizer=optimizer, loss="mse")
        history = model.fit(x, y, batch_size=64, epochs=EPOCHS, callbacks=callbacks, verbose=0)
        rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        print(
            f"  {label:<32} loss {history.history['loss'][0]:.4f} -> "
            f"{history.history['loss'][-1]:.4f}, final learning rate {rate:.5f}"
        )


if __name__ == "__main__":
    x, y = data()
    information_flow(x)
    annealing(x, y)
