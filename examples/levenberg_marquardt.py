"""Levenberg-Marquardt through `gz.wrap(model)`: regression and classification.

1. A 1-20-1 tanh net fits sinc(10x) (2,000 points) from the same initial
   weights: 40 LM iterations in batch mode, Adam with mini-batches of 32 for
   20 epochs (several times LM's time), LM in mini-batch mode.
2. A 64-16-10 net classifies scikit-learn's bundled digits (offline) with a
   cross-entropy on logits: LM uses the generalized Gauss-Newton matrix.
3. A curve fit y = a exp(-b x) + c written as a Keras layer, in float64:
   the fitted weights with their standard errors
   (`gz.uncertainty.covariance`, equal to scipy's curve_fit pcov) and the
   standard errors of predictions, and why training stopped (`status`).

Prints losses, the damping LM ended with and the test accuracy. Runs offline
in under a minute on two cores.

    python examples/levenberg_marquardt.py
"""

import time

import keras
import numpy as np
import tensorflow as tf

import keras_gdzoo as gz


def sinc_model():
    keras.utils.set_random_seed(0)  # the same initial weights for every run
    return keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(20, activation="tanh"), keras.layers.Dense(1)]
    )


def regression():
    x = np.linspace(-1, 1, 2000, dtype="float32")[:, None]
    y = np.sinc(10 * x).astype("float32")
    print(f"{'method':38s} {'MSE':>10s} {'seconds':>8s}")

    model = sinc_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    # Batch mode: every fit batch is the whole data set, one LM iteration;
    # repeating it 40 times in one epoch pays Keras's per-epoch cost once.
    iterations = tf.data.Dataset.from_tensors((x, y)).repeat(40)
    start = time.perf_counter()
    history = trainer.fit(iterations, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    print(f"{'LevenbergMarquardt, batch mode, 40 it.':38s} {mse:10.2e} {seconds:8.1f}"
          f"   (final damping {history.history['damping'][-1]:.0e})")

    model = sinc_model()
    model.compile(optimizer=gz.Adam(learning_rate=0.01), loss="mse")
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=20, verbose=0)
    seconds = time.perf_counter() - start
    mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    print(f"{'Adam, batches of 32, 20 epochs':38s} {mse:10.2e} {seconds:8.1f}")

    model = sinc_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    start = time.perf_counter()
    trainer.fit(x, y, batch_size=500, epochs=10, verbose=0)
    seconds = time.perf_counter() - start
    mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    print(f"{'LevenbergMarquardt, batches of 500':38s} {mse:10.2e} {seconds:8.1f}")


def classification():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
    )
    trainer = gz.wrap(model)
    trainer.compile(
        optimizer=gz.LevenbergMarquardt(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.perf_counter()
    history = trainer.fit(x_train, y_train, batch_size=len(x_train), epochs=6, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
    losses = ", ".join(f"{v:.3f}" for v in history.history["loss"])
    print(f"\ndigits, 6 LM iterations in {seconds:.1f} s: training loss {losses}")
    print(f"test accuracy {accuracy:.3f}")


class ExponentialDecay(keras.layers.Layer):
    """y = a exp(-b x) + c."""

    def build(self, input_shape):
        def scalar(name, value):
            return self.add_weight(
                shape=(), initializer=keras.initializers.Constant(value), name=name
            )

        self.a, self.b, self.c = scalar("a", 1.0), scalar("b", 0.5), scalar("c", 0.0)

    def call(self, x):
        return self.a * keras.ops.exp(-self.b * x) + self.c


def curve_fit():
    keras.config.set_floatx("float64")
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 4.0, 40)[:, None]
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.normal(size=x.shape)
    model = keras.Sequential([keras.Input((1,)), ExponentialDecay()])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    history = trainer.fit(x, y, batch_size=len(x), epochs=100, verbose=0)
    fit = gz.uncertainty.covariance(trainer, (x, y))
    print(f"\ncurve fit: stopped after {len(history.history['loss'])} iterations, "
          f"status {history.history['status'][-1]:.0f} ({trainer.optimizer.stop_message})")
    for name, value, error in zip("abc", fit.weights, fit.standard_errors):
        print(f"  {name} = {value:.4f} +- {error:.4f}")
    x_new = np.array([[0.0], [2.0], [6.0]])
    errors = gz.uncertainty.prediction_standard_errors(trainer, x_new, fit)
    for xi, yi, ei in zip(x_new[:, 0], model.predict(x_new, verbose=0)[:, 0], errors[:, 0]):
        print(f"  y({xi:.0f}) = {yi:.4f} +- {ei:.4f}")
    keras.config.set_floatx("float32")


if __name__ == "__main__":
    regression()
    classification()
    curve_fit()
