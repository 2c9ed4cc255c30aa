"""LevenbergMarquardt: least-squares problems with known answers, the damping
rule transcribed in NumPy, SciPy's MINPACK LM as an oracle, and Keras
training through gz.wrap (classification on scikit-learn's digits, sample-
space mini-batches, stopping, memory refusal)."""

import warnings

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import FunctionObjective


def least_squares_objective(residuals, size):
    """E(w) = 1/2 sum r(w)^2 in float64, with its residual form."""
    return FunctionObjective(
        lambda w: 0.5 * tf.reduce_sum(residuals(w) ** 2), size, "float64", residuals=residuals
    )


def rosenbrock(w, xp=tf):
    return xp.stack([10.0 * (w[1] - w[0] ** 2), 1.0 - w[0]])


def helical_valley(w, xp=tf):
    # More, Garbow & Hillstrom (1981), problem 7.
    if xp is np:
        theta = np.arctan(w[1] / w[0]) / (2 * np.pi) + (0.5 if w[0] < 0 else 0.0)
    else:
        half = tf.constant(0.5, w.dtype)
        theta = tf.atan(w[1] / w[0]) / (2 * np.pi) + tf.where(w[0] < 0, half, 0 * half)
    radius = xp.sqrt(w[0] ** 2 + w[1] ** 2)
    return xp.stack([10.0 * (w[2] - 10.0 * theta), 10.0 * (radius - 1.0), w[2]])


PROBLEMS = {
    # name: (residuals, start, minimum)
    "rosenbrock": (rosenbrock, [-1.2, 1.0], [1.0, 1.0]),
    "helical-valley": (helical_valley, [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]),
}


def numpy_jacobian(residuals, w, h=1e-7):
    columns = []
    for j in range(len(w)):
        step = np.zeros(len(w))
        step[j] = h
        columns.append((residuals(w + step, np) - residuals(w - step, np)) / (2 * h))
    return np.stack(columns, axis=1)


def numpy_levenberg_marquardt(residuals, w, iterations, damping=1e-3, decrease=0.1,
                              increase=10.0, max_damping=1e10, attempts=10):
    """The lecture's iteration and DESIGN.md's damping rule, in NumPy."""
    energy = lambda w: 0.5 * np.sum(residuals(w, np) ** 2)  # noqa: E731
    records = []
    mu = damping
    for _ in range(iterations):
        r = residuals(w, np)
        jacobian = numpy_jacobian(residuals, w)
        value = energy(w)
        tries, accepted = 0, False
        while not accepted and tries < attempts and mu <= max_damping:
            delta = np.linalg.solve(jacobian.T @ jacobian + mu * np.eye(len(w)), jacobian.T @ r)
            tries += 1
            trial = w - delta
            if np.isfinite(energy(trial)) and energy(trial) < value:
                w, accepted, mu = trial, True, mu * decrease
            else:
                mu = mu * increase
        records.append({"w": w, "damping": mu, "attempts": tries, "accepted": float(accepted)})
        if mu > max_damping:
            break
    return records


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_trajectory_equals_numpy_transcription_and_reaches_minimum(name):
    residuals, start, minimum = PROBLEMS[name]
    solver = gz.LevenbergMarquardt()
    w, history = solver.minimize(
        least_squares_objective(residuals, len(start)),
        tf.constant(start, tf.float64),
        iterations=40,
    )
    expected = numpy_levenberg_marquardt(residuals, np.array(start), iterations=40)
    for got, want in zip(history[1:], expected):
        np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(got["damping"], want["damping"], rtol=1e-9)
        assert got["attempts"] == want["attempts"]
        assert got["accepted"] == want["accepted"]
    # The damping rule was exercised both ways.
    assert any(r["accepted"] == 0.0 or r["attempts"] > 1 for r in history[1:])
    np.testing.assert_allclose(w.numpy(), minimum, atol=1e-6)
    scipy_result = scipy.optimize.least_squares(
        lambda v: residuals(v, np), np.array(start), method="lm"
    )
    np.testing.assert_allclose(w.numpy(), scipy_result.x, atol=1e-6)


def test_linear_least_squares_lands_on_lstsq_in_two_iterations(rng):
    x = rng.normal(size=(30, 4))
    y = rng.normal(size=30)
    residuals = lambda w: tf.linalg.matvec(tf.constant(x), w) - y  # noqa: E731
    w, history = gz.LevenbergMarquardt(damping=1e-9).minimize(
        least_squares_objective(residuals, 4), tf.zeros(4, tf.float64), iterations=2
    )
    expected = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(history[1]["w"], expected, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-9)


def test_non_finite_trial_point_is_undone_and_damping_raised():
    # r(w) = log(w) + 3: the Gauss-Newton step from w = 1 lands on w = -2,
    # where log is not finite.
    residuals = lambda w: tf.math.log(w) + 3.0  # noqa: E731
    solver = gz.LevenbergMarquardt(damping=1e-6)
    w, history = solver.minimize(
        least_squares_objective(residuals, 1), tf.constant([1.0], tf.float64), iterations=30
    )
    first = history[1]
    assert first["attempts"] > 1
    assert first["damping"] > 1e-6
    assert all(np.all(np.isfinite(r["w"])) for r in history)
    np.testing.assert_allclose(w.numpy(), [np.exp(-3.0)], rtol=1e-6)


def test_stops_when_damping_exceeds_max_damping():
    # Already at the minimum (E = 0): no step can lower E.
    residuals = lambda w: w - tf.constant([1.0, 2.0], tf.float64)  # noqa: E731
    solver = gz.LevenbergMarquardt(damping=1e-3, max_damping=1e3, attempts=4)
    w, history = solver.minimize(
        least_squares_objective(residuals, 2), tf.constant([1.0, 2.0], tf.float64), iterations=10
    )
    # 1e-3 -> 1e1 after four rejected attempts; then 1e2, 1e3, 1e4: over
    # max_damping after three more, which ends the iteration and training.
    assert [r["damping"] for r in history[1:]] == pytest.approx([1e1, 1e4])
    assert [r["attempts"] for r in history[1:]] == [4.0, 3.0]
    assert [r[STOP] for r in history[1:]] == [0.0, 1.0]
    assert [r["accepted"] for r in history[1:]] == [0.0, 0.0]
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])


def test_xla_iteration_equals_graph_iteration():
    residuals, start, _ = PROBLEMS["rosenbrock"]
    objective = least_squares_objective(residuals, 2)
    _, graph = gz.LevenbergMarquardt().minimize(objective, tf.constant(start, tf.float64), 5)
    _, xla = gz.LevenbergMarquardt().minimize(
        objective, tf.constant(start, tf.float64), 5, jit_compile=True
    )
    for a, b in zip(graph, xla):
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-10)


# -- through gz.wrap -------------------------------------------------------


def test_digits_classification_with_cross_entropy_reaches_95_percent():
    datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
    )
    trainer = gz.wrap(model)
    trainer.compile(
        optimizer=gz.LevenbergMarquardt(damping=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = trainer.fit(x_train, y_train, batch_size=len(x_train), epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
    assert accuracy >= 0.95, accuracy


def test_batches_smaller_than_the_model_use_sample_space(monkeypatch):
    # 1-20-1 has m = 61 weights; 30 examples: n K < m, the sample-space form.
    x = np.linspace(-1, 1, 30)[:, None].astype("float32")
    y = np.sinc(3 * x).astype("float32")

    def train(**fit_kwargs):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(20, activation="tanh"), keras.layers.Dense(1)]
        )
        trainer = gz.wrap(model)
        trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
        return model, trainer, trainer.fit(x, y, verbose=0, **fit_kwargs).history

    model, trainer, sample_space = train(batch_size=30, epochs=10)
    assert sample_space["loss"][-1] < 0.1 * sample_space["loss"][0]
    assert sample_space["accepted"] == [1.0] * 10

    # The same iterations solved in parameter space.
    with monkeypatch.context() as patch:
        patch.setattr(gz.curvature.CurvatureMixin, "prefers_sample_space", lambda self, w: False)
        _, _, parameter_space = train(batch_size=30, epochs=10)
    np.testing.assert_allclose(sample_space["loss"], parameter_space["loss"], rtol=1e-3)
    assert sample_space["attempts"] == parameter_space["attempts"]

    # Mini-batches of 16 and 14: the batch size is no longer static and the
    # choice between the two forms is made in the graph.
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert {"damping", "attempts", "accepted"} <= set(history)
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


def test_fit_stops_with_a_warning_when_no_step_lowers_the_loss():
    # Zero inputs and targets, zero bias: the loss is 0 and cannot fall.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    x = np.zeros((8, 2), "float32")
    before = [v.numpy() for v in model.trainable_variables]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(x, np.zeros((8, 1), "float32"), batch_size=8, epochs=5, verbose=0)
    # Ten rejected attempts, each mu *= 10 (in float32), then more until mu
    # exceeds max_damping = 1e10.
    mu, expected = np.float32(1e-3), []
    for _ in range(2):
        for _ in range(10):
            if mu > np.float32(1e10):
                break
            mu = mu * np.float32(10.0)
        expected.append(float(mu))
    assert history.history["damping"] == pytest.approx(expected, rel=1e-6)
    assert expected[-1] > 1e10
    assert any("max_damping" in str(w.message) for w in caught)
    for variable, value in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_refuses_a_model_too_large_before_allocating():
    solver = gz.LevenbergMarquardt()
    with pytest.raises(ValueError, match=r"m=1000000 .*GiB"):
        solver.check_size(10**6, "float32")
    model = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(1000)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    with pytest.raises(ValueError, match=r"LevenbergMarquardt needs 5 dense .*m=1001000"):
        trainer.fit(np.zeros((2, 1000), "float32"), np.zeros((2, 1000), "float32"), verbose=0)


# -- configuration ---------------------------------------------------------


def test_config_round_trip():
    solver = gz.LevenbergMarquardt(
        damping=0.5, damping_decrease=0.2, damping_increase=4.0, max_damping=1e6, attempts=3
    )
    clone = gz.LevenbergMarquardt.from_config(solver.get_config())
    for key in ["damping", "damping_decrease", "damping_increase", "max_damping", "attempts"]:
        assert getattr(clone, key) == getattr(solver, key)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(solver))
    assert isinstance(restored, gz.LevenbergMarquardt) and restored.attempts == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"damping": 0.0}, "Argument `damping` must be > 0. Received: damping=0.0"),
        ({"damping": -1}, "Received: damping=-1"),
        (
            {"damping_decrease": 1.0},
            "Argument `damping_decrease` must be in (0, 1). Received: damping_decrease=1.0",
        ),
        ({"damping_decrease": 0}, "Received: damping_decrease=0"),
        (
            {"damping_increase": 1.0},
            "Argument `damping_increase` must be > 1. Received: damping_increase=1.0",
        ),
        (
            {"max_damping": 1e-3},
            "Argument `max_damping` must be > damping=0.001. Received: max_damping=0.001",
        ),
        ({"attempts": 0}, "Argument `attempts` must be an integer >= 1. Received: attempts=0"),
        ({"attempts": 2.5}, "Received: attempts=2.5"),
        ({"damping": "big"}, "Argument `damping` must be a number. Received: damping='big'"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gz.LevenbergMarquardt(**kwargs)
