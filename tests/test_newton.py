"""Newton: one step on quadratics, the damping rule on indefinite Hessians,
Rosenbrock against a NumPy transcription with the analytic Hessian, a Keras
model against torch.autograd's Hessian, refusals."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo.solvers.base import STOP


def quadratic(q, b):
    q, b = tf.constant(q), tf.constant(b)
    return lambda w: 0.5 * tf.tensordot(w, tf.linalg.matvec(q, w), 1) - tf.tensordot(b, w, 1)


def test_solves_a_positive_definite_quadratic_in_one_step(rng):
    a = rng.normal(size=(5, 5))
    q = a @ a.T + np.eye(5)
    b = rng.normal(size=5)
    w, history = gz.Newton().minimize(quadratic(q, b), tf.zeros(5, tf.float64), iterations=1)
    np.testing.assert_allclose(w.numpy(), np.linalg.solve(q, b), rtol=1e-10)
    assert history[1]["damping"] == 0.0 and history[1]["accepted"] == 1.0


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_indefinite_hessian_raises_damping_until_positive_definite(damping, rng):
    q = np.diag([4.0, 1.0, -2.0])
    b = np.array([1.0, -1.0, 0.5])
    w0 = rng.normal(size=3)
    w, history = gz.Newton(damping=damping).minimize(
        quadratic(q, b), tf.constant(w0), iterations=1
    )
    # The rule: mu_0 = damping, mu_(k+1) = max(10 mu_k, 1e-8 ||H||_F), until
    # H + mu I is positive definite.
    mu, floor = damping, 1e-8 * np.linalg.norm(q)
    while np.linalg.eigvalsh(q + mu * np.eye(3)).min() <= 0:
        mu = max(10 * mu, floor)
    np.testing.assert_allclose(history[1]["damping"], mu, rtol=1e-12)
    gradient = q @ w0 - b
    expected = w0 - np.linalg.solve(q + mu * np.eye(3), gradient)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-9)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_rosenbrock_iterates_equal_numpy_newton_with_analytic_hessian(jit_compile):
    rosen = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2  # noqa: E731
    w, history = gz.Newton().minimize(
        rosen, tf.constant([-1.2, 1.0], tf.float64), iterations=7, jit_compile=jit_compile
    )
    v = np.array([-1.2, 1.0])
    for record in history[1:]:
        x, y = v
        g = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        h = np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200.0]])
        v = v - np.linalg.solve(h, g)
        np.testing.assert_allclose(record["w"], v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0], atol=1e-10)


def test_step_to_a_non_finite_loss_is_undone_and_stops():
    # E = w - log(w): from w = 3, g = 2/3, H = 1/9, the step lands on w = -3.
    energy = lambda w: tf.reduce_sum(w - tf.math.log(w))  # noqa: E731
    w, history = gz.Newton().minimize(energy, tf.constant([3.0], tf.float64), iterations=5)
    assert len(history) == 2
    assert history[1]["accepted"] == 0.0 and history[1][STOP] == 1.0
    np.testing.assert_array_equal(w.numpy(), [3.0])


def test_keras_model_step_equals_torch_hessian_step(rng):
    torch = pytest.importorskip("torch")
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)]
    )
    x = rng.uniform(-1, 1, size=(12, 2))
    y = np.sin(2 * x[:, :1]) * x[:, 1:]
    w0 = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    damping = 0.05

    def loss(w):  # Keras "mse" of the same network, in torch
        k1, b1, k2, b2 = torch.split(w, [6, 3, 3, 1])
        hidden = torch.tanh(torch.as_tensor(x) @ k1.reshape(2, 3) + b1)
        return torch.mean((hidden @ k2.reshape(3, 1) + b2 - torch.as_tensor(y)) ** 2)

    w_torch = torch.tensor(w0, requires_grad=True)
    gradient = torch.autograd.grad(loss(w_torch), w_torch)[0].numpy()
    hessian = torch.autograd.functional.hessian(loss, torch.tensor(w0)).numpy()
    # This Hessian is indefinite: the damping rises as the rule says.
    mu, floor = damping, 1e-8 * np.linalg.norm(hessian)
    while np.linalg.eigvalsh(hessian + mu * np.eye(13)).min() <= 0:
        mu = max(10 * mu, floor)
    assert mu > damping
    expected = w0 - np.linalg.solve(hessian + mu * np.eye(13), gradient)

    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Newton(damping=damping), loss="mse")
    history = trainer.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    w1 = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    np.testing.assert_allclose(w1, expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(history.history["damping"], [mu], rtol=1e-12)


def test_refuses_a_model_too_large_before_allocating():
    with pytest.raises(ValueError, match=r"Newton needs 3 dense .*m=200000 .*GiB"):
        gz.Newton().check_size(200_000, "float64")


def test_config_round_trip():
    solver = gz.Newton(damping=0.25)
    assert gz.Newton.from_config(solver.get_config()).damping == 0.25
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(solver))
    assert isinstance(restored, gz.Newton) and restored.damping == 0.25


@pytest.mark.parametrize("damping", [-1e-3, "0", None, True])
def test_bad_damping_is_refused_by_name(damping):
    with pytest.raises(ValueError, match=r"Argument `damping` must be >= 0. Received: damping="):
        gz.Newton(damping=damping)
