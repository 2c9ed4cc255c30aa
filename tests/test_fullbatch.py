"""Full-batch training (issue 14): batch-mode reuse of E and g, `solve`,
and float64 solver arithmetic for float32 models.

The problem is a small version of the issue's: y = sin(10x) / (10x) on 200
points of [-1, 1], a 1-10-1 tanh network, mean squared error, L-BFGS with
10 pairs. Expected values come from independent runs: the same solver with
re-evaluation (`batch_mode=False`), gradient norms from a `GradientTape` on
the plain Keras model, and a float64 model for the float32 target.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz


def sinc():
    x = np.linspace(-1.0, 1.0, 200).reshape(-1, 1)
    return x, np.sin(10.0 * x) / (10.0 * x)


def network(dtype, seed=0):
    """The 1-10-1 tanh net, with the weights of `seed` (drawn in float64)."""
    keras.utils.set_random_seed(seed)
    reference = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(10, "tanh", dtype="float64"),
         keras.layers.Dense(1, dtype="float64")]
    )
    model = keras.Sequential(
        [keras.Input((1,), dtype=dtype), keras.layers.Dense(10, "tanh", dtype=dtype),
         keras.layers.Dense(1, dtype=dtype)]
    )
    for v, w in zip(model.trainable_variables, reference.trainable_variables):
        v.assign(w.numpy().astype(dtype))
    return model


def trainer(model, **wrap_kwargs):
    t = gz.wrap(model, **wrap_kwargs)
    t.compile(optimizer=gz.LBFGS(history=10), loss="mse")
    return t


class WeightRecorder(keras.callbacks.Callback):
    """The flat weights at the start of every epoch."""

    def on_train_begin(self, logs=None):
        self.points = []

    def on_epoch_begin(self, epoch, logs=None):
        self.points.append(
            np.concatenate([v.numpy().ravel() for v in self.model.trainable_variables])
        )


def gradient_norm(model, x, y, w):
    """||dE/dw|| of the plain Keras model at flat weights w (a tape, no solver)."""
    offset = 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        v.assign(w[offset : offset + size].reshape(v.shape))
        offset += size
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    return float(tf.linalg.global_norm(grads))


def test_batch_mode_reuse_gives_the_iterates_of_re_evaluation():
    x, y = sinc()
    reused = trainer(network("float64")).fit(
        x, y, batch_size=len(x), epochs=10, verbose=0
    ).history
    evaluated = trainer(network("float64"), batch_mode=False).fit(
        x, y, batch_size=len(x), epochs=10, verbose=0
    ).history
    np.testing.assert_allclose(reused["loss"], evaluated["loss"], rtol=1e-6)
    # Re-evaluation pays one more evaluation per iteration after the first.
    np.testing.assert_allclose(
        np.asarray(evaluated["evaluations"][1:]) - np.asarray(reused["evaluations"][1:]), 1.0
    )


def test_solve_gives_the_iterates_of_fit_and_stops_on_gtol():
    x, y = sinc()
    recorder = WeightRecorder()
    fitted = trainer(network("float64")).fit(
        x, y, batch_size=len(x), epochs=12, verbose=0, callbacks=[recorder]
    ).history
    solved = trainer(network("float64")).solve(x, y, iterations=12)
    assert solved["iterations"] == 12
    np.testing.assert_allclose(solved["loss"], fitted["loss"], rtol=1e-6)
    np.testing.assert_array_equal(solved["evaluations"], fitted["evaluations"])

    # gtol: the first iteration whose starting gradient norm (by a tape on
    # the plain model at fit's iterates) is at or under gtol is the last one.
    plain = network("float64")
    norms = [gradient_norm(plain, x, y, w) for w in recorder.points]
    gtol = min(norms[2:]) * (1 + 1e-6)
    last = int(np.argmax(np.asarray(norms) <= gtol))
    stopped = trainer(network("float64")).solve(x, y, iterations=100, gtol=gtol)
    assert stopped["iterations"] == last + 1
    np.testing.assert_allclose(stopped["loss"], fitted["loss"][: last + 1], rtol=1e-6)


# The float64 target: the lowest loss a float64 model reaches in 1000
# iterations from this start (4.1e-6). With float64 solver arithmetic the
# float32 model gets within 1.1x of it; with float32 arithmetic (iterate,
# history and line search in float32) it stops at 7.3e-6 (1.8x), and a
# float32 iterate inside float64 arithmetic stops at 8.4e-6 (2.0x).
ITERATIONS = 1000


@pytest.fixture(scope="module")
def float64_target():
    x, y = sinc()
    return float(np.min(trainer(network("float64")).solve(x, y, iterations=ITERATIONS)["loss"]))


def test_float32_lbfgs_solve_reaches_the_float64_target(float64_target):
    x, y = sinc()
    losses = trainer(network("float32")).solve(x, y, iterations=ITERATIONS)["loss"]
    assert np.min(losses) <= 1.5 * float64_target


def test_float32_lbfgs_fit_reaches_the_float64_target(float64_target):
    x, y = sinc()
    history = trainer(network("float32")).fit(
        x, y, batch_size=len(x), epochs=ITERATIONS, verbose=0
    ).history
    assert np.min(history["loss"]) <= 1.5 * float64_target
