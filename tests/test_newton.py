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
def test_rosenbrock_iterates_equal_numpy_damped_newton_with_analytic_hessian(jit_compile):
    # Pure Newton's second step from (-1.2, 1) raises E from 4.7 to 1412; the
    # damping rule (numpy_damped_newton_step below) refuses it.
    rosen = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2  # noqa: E731

    def gradient(v):
        x, y = v
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])

    def hessian(v):
        x, y = v
        return np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200.0]])

    w, history = gz.Newton().minimize(
        rosen, tf.constant([-1.2, 1.0], tf.float64), iterations=40, jit_compile=jit_compile
    )
    v = np.array([-1.2, 1.0])
    for record in history[1:]:
        v, mu, accepted = numpy_damped_newton_step(rosen, gradient, hessian, v, 0.0)
        assert record["accepted"] == float(accepted)
        np.testing.assert_allclose(record["damping"], mu, rtol=1e-12)
        np.testing.assert_allclose(record["w"], v, rtol=1e-9, atol=1e-12)
    assert any(record["damping"] > 0 for record in history[1:])
    # It stops at the minimum: the last step rounds to no decrease.
    assert history[-1][STOP] == 1.0 and len(history) < 41
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0], atol=1e-8)


def test_step_to_a_non_finite_loss_is_refused_and_damping_raised():
    # E = w - log(w): from w = 3, g = 2/3, H = 1/9, the pure step lands on
    # w = -3 where E is NaN; the damping rises until the step lowers E.
    energy = lambda w: tf.reduce_sum(w - tf.math.log(w))  # noqa: E731
    w, history = gz.Newton().minimize(energy, tf.constant([3.0], tf.float64), iterations=1)
    with np.errstate(invalid="ignore"):
        expected, mu, accepted = numpy_damped_newton_step(
            lambda v: float(v[0] - np.log(v[0])),
            lambda v: 1 - 1 / v,
            lambda v: np.array([[1 / v[0] ** 2]]),
            np.array([3.0]),
            0.0,
        )
    assert accepted and history[1]["accepted"] == 1.0 and mu > 0
    np.testing.assert_allclose(history[1]["damping"], mu, rtol=1e-12)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12)


def test_non_finite_loss_at_w_keeps_the_weights_and_stops():
    # E(-1) is NaN: no step can lower it.
    energy = lambda w: tf.reduce_sum(w - tf.math.log(w))  # noqa: E731
    w, history = gz.Newton().minimize(energy, tf.constant([-1.0], tf.float64), iterations=5)
    assert len(history) == 2
    assert history[1]["accepted"] == 0.0 and history[1][STOP] == 1.0
    np.testing.assert_array_equal(w.numpy(), [-1.0])


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
        gz.Newton(linear_solver="cholesky").check_size(200_000, "float64")
    # Matrix-free: nothing m x m to refuse.
    gz.Newton(linear_solver="cg").check_size(200_000, "float64")
    gz.Newton().check_size(200_000, "float64")


def test_config_round_trip():
    solver = gz.Newton(damping=0.25, linear_solver="cg", cg_max_iterations=7, cg_tolerance=1e-3)
    assert gz.Newton.from_config(solver.get_config()).damping == 0.25
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(solver))
    assert isinstance(restored, gz.Newton) and restored.damping == 0.25
    assert (restored.linear_solver, restored.cg_max_iterations, restored.cg_tolerance) == (
        "cg",
        7,
        1e-3,
    )
    assert gz.Newton().linear_solver == "auto"


@pytest.mark.parametrize("damping", [-1e-3, "0", None, True])
def test_bad_damping_is_refused_by_name(damping):
    with pytest.raises(ValueError, match=r"Argument `damping` must be .*Received: damping="):
        gz.Newton(damping=damping)


# -- issue 9.4: never accept a step that raises the loss ---------------------


def numpy_damped_newton_step(energy, gradient, hessian, w, damping, increases=20):
    """The rule in NumPy: mu_0 = damping, mu_(k+1) = max(10 mu_k, 1e-8 ||H||_F),
    until H + mu I has a Cholesky factor and the step lowers E."""
    g, h = gradient(w), hessian(w)
    norm = np.linalg.norm(h)
    floor = 1e-8 * (norm if norm > 0 else 1.0)
    mu = damping
    for k in range(increases + 1):
        if k:
            mu = max(10 * mu, floor)
        try:
            factor = np.linalg.cholesky(h + mu * np.eye(len(w)))
        except np.linalg.LinAlgError:
            continue
        trial = w - np.linalg.solve(factor.T, np.linalg.solve(factor, g))
        if np.isfinite(energy(trial)) and energy(trial) < energy(w):
            return trial, mu, True
    return w, mu, False


def test_uphill_pure_newton_step_is_refused_and_damping_raised():
    # E = sqrt(1 + w^2): H > 0 everywhere, but the pure Newton step maps w to
    # -w^3, from 2 to -8, where E is 8.06 > 2.24.
    energy = lambda w: np.sqrt(1 + w @ w)  # noqa: E731
    gradient = lambda w: w / np.sqrt(1 + w @ w)  # noqa: E731
    hessian = lambda w: np.array([[(1 + w @ w) ** -1.5]])  # noqa: E731
    w, history = gz.Newton().minimize(
        lambda w: tf.sqrt(1 + tf.reduce_sum(w * w)), tf.constant([2.0], tf.float64), iterations=4
    )
    v = np.array([2.0])
    for record in history[1:]:
        v_next, mu, accepted = numpy_damped_newton_step(energy, gradient, hessian, v, 0.0)
        assert accepted and record["accepted"] == 1.0
        np.testing.assert_allclose(record["damping"], mu, rtol=1e-12)
        np.testing.assert_allclose(record["w"], v_next, rtol=1e-10)
        assert energy(v_next) < energy(v)
        v = v_next
    assert history[1]["damping"] > 0


@pytest.mark.parametrize("linear_solver", ["cholesky", "cg"])
def test_keras_huber_loss_never_rises(linear_solver):
    # A linear model far from its huber targets: every residual is in the
    # linear region, so H = 0 and the old rule's damping floor 1e-8 gave a
    # step of 1e8 * g, accepted although the loss rose by orders of magnitude.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 2)).astype("float32")
    y = (50.0 + x @ np.array([[1.0], [-1.0]])).astype("float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Newton(linear_solver=linear_solver), loss="huber")
    history = trainer.fit(x, y, batch_size=len(x), epochs=6, verbose=0)
    losses = np.array(history.history["loss"])
    final = float(keras.losses.Huber()(y, model(x)))
    assert np.all(np.diff(np.append(losses, final)) < 0), losses
    assert history.history["accepted"] == [1.0] * len(losses)


def test_a_null_step_at_the_minimum_is_not_accepted_and_stops(rng):
    a = rng.normal(size=(3, 3))
    q = a @ a.T + np.eye(3)
    b = rng.normal(size=3)
    w0 = tf.constant(np.linalg.solve(q, b))
    w, history = gz.Newton().minimize(quadratic(q, b), w0, iterations=3)
    assert len(history) == 2
    assert history[1]["accepted"] == 0.0 and history[1][STOP] == 1.0
    np.testing.assert_array_equal(w.numpy(), w0.numpy())


def test_numpy_scalar_damping_is_accepted():
    solver = gz.Newton(damping=np.float32(0.1))
    assert solver.damping == pytest.approx(0.1) and isinstance(solver.damping, float)
    assert gz.Newton(damping=np.int64(2)).damping == 2.0


@pytest.mark.parametrize("damping", [float("inf"), float("nan"), np.float64("inf")])
def test_non_finite_damping_is_refused_by_name(damping):
    with pytest.raises(ValueError, match=r"Argument `damping` must be finite. Received: damping="):
        gz.Newton(damping=damping)


# -- issue 12: Newton-CG (linear_solver="cg") ---------------------------------


def logistic_regression(seed=0, n=40, inputs=4, labels=3):
    """Multi-label logistic regression: a positive definite Hessian (softmax
    regression's is singular, its logits being shift invariant)."""
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs))
    y = (rng.uniform(size=(n, labels)) < 1 / (1 + np.exp(-x[:, :labels]))).astype("float64")
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(labels)])
    return model, x, y


@pytest.mark.parametrize("damping", [0.0, 1e-2])
def test_cg_and_dense_newton_iterates_agree_to_the_cg_tolerance(damping):
    # Logistic regression: H is positive definite, so both solvers take the
    # same damped steps.
    runs = {}
    for linear_solver in ["cholesky", "cg"]:
        model, x, y = logistic_regression()
        trainer = gz.wrap(model)
        solver = gz.Newton(
            damping=damping,
            linear_solver=linear_solver,
            **({"cg_max_iterations": 200, "cg_tolerance": 1e-10} if linear_solver == "cg" else {}),
        )
        trainer.compile(
            optimizer=solver, loss=keras.losses.BinaryCrossentropy(from_logits=True)
        )
        history = trainer.fit(x, y, batch_size=len(x), epochs=3, verbose=0)
        w_before = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
        history_last = trainer.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history
        for key, values in history_last.items():
            history.history[key] += values
        runs[linear_solver] = (
            np.concatenate([v.numpy().ravel() for v in model.trainable_variables]),
            history.history,
        )
    (w_dense, dense), (w_cg, cg) = runs["cholesky"], runs["cg"]
    np.testing.assert_allclose(w_cg, w_dense, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cg["loss"], dense["loss"], rtol=1e-10)
    assert cg["damping"] == dense["damping"] and cg["accepted"] == [1.0] * 4
    # m = 15 weights: CG needs at most m products per solve (up to round-off).
    assert all(1 <= k <= 20 for k in cg["cg_iterations"]) and "cg_iterations" not in dense
    # The state keeps the last step, the next solve's starting point.
    kept = solver.solver_state["cg_solution"].numpy()
    np.testing.assert_allclose(kept, w_before - w_cg, rtol=1e-12)


def test_auto_is_dense_up_to_2000_weights_and_cg_beyond():
    solver = gz.Newton()
    assert not solver.uses_cg(2000) and solver.uses_cg(2001)
    assert gz.Newton(linear_solver="cg").uses_cg(3)
    assert not gz.Newton(linear_solver="cholesky").uses_cg(10**6)
    assert "cg_solution" in solver.state_spec(2001, "float32")
    assert solver.state_spec(2000, "float32") == {}


def test_cg_on_an_indefinite_quadratic_never_raises_the_loss(rng):
    # Negative curvature: CG stops there, and the truncated step (or, at the
    # first direction, a larger damping) must still lower E.
    q = np.diag([3.0, 1.0, -2.0, 0.5])
    b = np.array([1.0, -1.0, 0.5, 2.0])
    energy = quadratic(q, b)
    w, history = gz.Newton(linear_solver="cg").minimize(
        energy, tf.constant(rng.normal(size=4)), iterations=5
    )
    values = [float(energy(tf.constant(record["w"]))) for record in history]
    assert np.all(np.diff(values) < 0)
    assert all(record["accepted"] == 1.0 for record in history[1:])


def test_cg_rosenbrock_reaches_the_minimum_downhill():
    rosen = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2  # noqa: E731
    w, history = gz.Newton(linear_solver="cg", cg_tolerance=1e-10).minimize(
        rosen, tf.constant([-1.2, 1.0], tf.float64), iterations=60
    )
    values = [float(rosen(tf.constant(record["w"]))) for record in history]
    assert np.all(np.diff(values) <= 0)
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"linear_solver": "lu"}, "Argument `linear_solver` must be one of"),
        ({"cg_max_iterations": 0}, "Argument `cg_max_iterations` must be >= 1"),
        ({"cg_max_iterations": 2.5}, "Argument `cg_max_iterations` must be an integer"),
        ({"cg_tolerance": 0.0}, r"Argument `cg_tolerance` must be in \(0, 1\)"),
        ({"cg_tolerance": float("inf")}, "Argument `cg_tolerance` must be finite"),
    ],
)
def test_bad_cg_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gz.Newton(**kwargs)


def test_cg_under_mirrored_strategy_gives_single_device_iterates(mirrored):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = np.sin(x.sum(1, keepdims=True)).astype("float32")

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
        )

    def train(model):
        trainer = gz.wrap(model)
        trainer.compile(optimizer=gz.Newton(damping=0.1, linear_solver="cg"), loss="mse")
        return trainer

    single = build()
    history = train(single).fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    with mirrored.scope():
        distributed = build()
        trainer = train(distributed)
    history_d = trainer.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(single.weights, distributed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert history.history["cg_iterations"] == history_d.history["cg_iterations"]
    assert history.history["accepted"] == [1.0, 1.0]
