"""Every full-batch solver end to end through gz.wrap(model).fit.

One table of solvers drives the generic checks: a convex problem solved to
numpy.linalg.lstsq's answer, `.keras` save -> load -> continue equal to an
uninterrupted run, MirroredStrategy iterates equal to one device's, finite
weights; then a small MLP regression against scipy.optimize.minimize.
"""

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import keras_gdzoo as gz

SOLVERS = {
    "sd": lambda: gz.SteepestDescent(),
    "cg-fr": lambda: gz.ConjugateGradient(beta="fletcher-reeves"),
    "cg-pr": lambda: gz.ConjugateGradient(),
    "bfgs": lambda: gz.BFGS(),
    "lbfgs": lambda: gz.LBFGS(history=5),
    "rprop+": lambda: gz.Rprop(variant="rprop+"),
    "rprop-": lambda: gz.Rprop(variant="rprop-"),
    "irprop+": lambda: gz.Rprop(variant="irprop+"),
    "irprop-": lambda: gz.Rprop(variant="irprop-"),
    "newton": lambda: gz.Newton(),
    "lm": lambda: gz.LevenbergMarquardt(),
}


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(32, 2)).astype("float32")
    y = (np.sin(2 * x[:, :1]) + 0.5 * x[:, 1:] ** 2).astype("float32")
    return x, y


def weights(model):
    return [v.numpy() for v in model.weights]


@pytest.mark.parametrize("name", ["sd", "cg-fr", "cg-pr", "bfgs", "lbfgs", "newton", "lm"])
def test_convex_least_squares_reaches_lstsq(name):
    """A linear Keras model under MSE: the minimizer is lstsq's answer."""
    keras.config.set_floatx("float64")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    y = x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.05 * rng.normal(size=(40, 1))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=SOLVERS[name](), loss="mse")
    epochs = {"sd": 60}.get(name, 20)
    trainer.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0)
    design = np.hstack([x, np.ones((len(x), 1))])
    expected, *_ = np.linalg.lstsq(design, y, rcond=None)
    kernel, bias = weights(model)
    np.testing.assert_allclose(
        np.vstack([kernel, bias[None]]), expected, atol={"sd": 1e-4}.get(name, 1e-6)
    )


class _SaveAfterEpoch(keras.callbacks.Callback):
    """Saves the trainer, solver state included, at the end of one epoch
    (as ModelCheckpoint does): the uninterrupted run is also the one that
    is interrupted, so it is traced once."""

    def __init__(self, epoch, path):
        super().__init__()
        self.epoch, self.path = epoch, path

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.save(self.path)


# The four Rprop variants share one state and one serialization, as do the two
# CG formulas: one non-default variant each (its `variant` / `beta` must come
# back from the file) and the default Rprop, which reads every state entry.
@pytest.mark.parametrize(
    "name", ["sd", "cg-fr", "bfgs", "lbfgs", "rprop-", "irprop+", "newton", "lm"]
)
def test_save_load_continue_equals_uninterrupted(name, regression, tmp_path):
    x, y = regression
    straight = mlp()
    trainer = gz.wrap(straight)
    trainer.compile(optimizer=SOLVERS[name](), loss="mse")
    half = tmp_path / "half.keras"
    trainer.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False,
                callbacks=[_SaveAfterEpoch(1, half)])

    resumed = keras.saving.load_model(half)
    resumed.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)

    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(np.isfinite(w).all() for w in weights(resumed))
    for key, variable in trainer.optimizer.solver_state.items():
        np.testing.assert_allclose(
            variable.numpy(), resumed.optimizer.solver_state[key].numpy(), rtol=1e-5, atol=1e-6,
            err_msg=key,
        )


# What the replicas share is each solver's loss, gradient and curvature sums
# and its line search: one CG formula and one Rprop variant (irprop+, which
# reads the loss as well as the gradient) cover the rest of the table.
@pytest.mark.parametrize("name", ["sd", "cg-pr", "bfgs", "lbfgs", "irprop+", "newton", "lm"])
def test_mirrored_strategy_iterates_equal_single_device(name, regression, mirrored):
    # float64, so that the replicas' summation order (which differs from one
    # device's) cannot be amplified into a visible difference by line searches.
    # LM's default trust-region rule takes undamped Gauss-Newton steps
    # (mu = 0) whenever they fit the radius; on this over-parameterized net
    # J'J is nearly singular and such a step amplifies the summation order's
    # rounding (1e-7 relative in 3 epochs, as MINPACK would). The damped
    # rule tests what is claimed here: the replicas' sums equal one device's.
    make = (lambda: gz.LevenbergMarquardt(damping_rule="scaled-gain-ratio")) if name == "lm" else SOLVERS[name]
    keras.config.set_floatx("float64")
    x, y = (a.astype("float64") for a in regression)
    single = mlp()
    trainer = gz.wrap(single)
    trainer.compile(optimizer=make(), loss="mse")
    trainer.fit(x, y, batch_size=len(x), epochs=3, verbose=0, shuffle=False)
    with mirrored.scope():
        distributed = mlp()
        trainer = gz.wrap(distributed)
        trainer.compile(optimizer=make(), loss="mse")
    trainer.fit(x, y, batch_size=len(x), epochs=3, verbose=0, shuffle=False)
    for a, b in zip(weights(single), weights(distributed)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name, method", [("bfgs", "BFGS"), ("lbfgs", "L-BFGS-B"), ("cg-pr", "CG")])
def test_small_mlp_regression_matches_scipy(name, method):
    """Same network, same start, float64: SciPy's minimizer and ours agree.

    A little L2 weight decay (part of the compiled loss, through the layers'
    regularizers) gives the problem an isolated minimizer, so "the same
    minimizer" is well defined; without it a tanh net drifts along flat
    valleys for thousands of iterations.
    """
    keras.config.set_floatx("float64")
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(64, 2))
    y = np.sin(2 * x[:, :1]) + 0.5 * x[:, 1:] ** 2 + 0.3 * rng.normal(size=(64, 1))
    decay = 1e-2
    keras.utils.set_random_seed(2)
    l2 = keras.regularizers.L2(decay)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(3, activation="tanh", kernel_regularizer=l2, bias_regularizer=l2),
            keras.layers.Dense(1, kernel_regularizer=l2, bias_regularizer=l2),
        ]
    )
    shapes = [v.shape for v in model.trainable_variables]
    sizes = [int(np.prod(s)) for s in shapes]
    w0 = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])

    def unflatten(w):
        return [tf.reshape(tf.constant(p), s) for p, s in zip(np.split(w, np.cumsum(sizes)[:-1]), shapes)]

    def loss_and_grad(w):
        tensors = unflatten(w)
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out = model.stateless_call(tensors, [], x)[0]
            loss = tf.reduce_mean((out - y) ** 2) + decay * tf.add_n(
                [tf.reduce_sum(t**2) for t in tensors]
            )
        grads = tape.gradient(loss, tensors)
        return float(loss), np.concatenate([g.numpy().ravel() for g in grads])

    reference = scipy.optimize.minimize(
        loss_and_grad, w0, jac=True, method=method, options={"maxiter": 1000, "gtol": 1e-10}
    )
    trainer = gz.wrap(model)
    trainer.compile(optimizer=SOLVERS[name](), loss="mse")
    # A repeated dataset: fit on NumPy arrays would rebuild its input
    # pipeline every epoch, which costs more than these iterations.
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    with pytest.warns(UserWarning, match="stopped training"):
        # converged: the line search finds nothing lower, and says so
        trainer.fit(dataset, steps_per_epoch=100, epochs=3, verbose=0)
    ours = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    final_loss, final_grad = loss_and_grad(ours)
    # SciPy stops on its own tolerances (L-BFGS-B's ftol a few 1e-9 early):
    # the same loss to 1e-7, never worse than SciPy's by more than rounding.
    assert final_loss == pytest.approx(reference.fun, rel=1e-7)
    assert final_loss <= reference.fun * (1 + 1e-12)
    assert np.linalg.norm(final_grad) < 1e-5
    np.testing.assert_allclose(ours, reference.x, atol=1e-3)
