"""keras_gdzoo.curvature: per-example Jacobians, Gauss-Newton systems, Hessians.

References are computed independently: the naive `tape.jacobian` of the
whole batch output, central finite differences in float64, NumPy
transcriptions of A = 1/n sum J_i' H_i J_i with closed-form loss Hessians,
and gradients of Keras's own compiled losses.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo.solvers.base import Objective


class StatelessObjective(Objective):
    """What `ModelObjective` gives `curvature.ModelCurvature`, on fixed arrays.

    predict is `model.stateless_call` at the unflattened weights; there is a
    single replica, so `replica_sum` calls the function on the whole batch.
    """

    def __init__(self, model, loss, x, y, sample_weight=None, loss_name=None):
        self.model = model
        self.loss = loss
        config = loss.get_config()
        self.from_logits = bool(config.get("from_logits", False))
        self.loss_name = loss_name or config["name"]
        self.shapes = [tuple(v.shape) for v in model.trainable_variables]
        self.size = int(sum(math.prod(s) for s in self.shapes))
        self.dtype = tf.as_dtype(model.trainable_variables[0].dtype)
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.count = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], self.dtype)

    memory_budget = curvature.DEFAULT_MEMORY_BUDGET

    @property
    def curvature(self):
        return curvature.ModelCurvature(
            self.predict,
            self.per_example_loss,
            self.replica_sum,
            self.count,
            self.size,
            self.dtype,
            loss_name=self.loss_name,
            from_logits=self.from_logits,
            loss_description=self.loss.name,
            memory_budget=self.memory_budget,
        )

    def gauss_newton(self, w):
        return self.curvature.gauss_newton(w)

    def gauss_newton_sample_space(self, w):
        return self.curvature.gauss_newton_sample_space(w)

    def prefers_sample_space(self, w):
        return self.curvature.prefers_sample_space(w)

    def hessian(self, w):
        return self.curvature.hessian(w)

    def _chunk_size(self, numbers_per_example):
        return self.curvature._chunk_size(numbers_per_example)

    def weights(self):
        return tf.concat([tf.reshape(v.value, [-1]) for v in self.model.trainable_variables], 0)

    def predict(self, w, x):
        pieces = tf.split(w, [math.prod(s) for s in self.shapes])
        trainable = [tf.reshape(p, s) for p, s in zip(pieces, self.shapes)]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        y_pred, _ = self.model.stateless_call(trainable, non_trainable, x, training=True)
        return y_pred

    def per_example_loss(self, y, y_pred, sample_weight):
        return self.loss(y, y_pred, sample_weight=sample_weight)

    def replica_sum(self, fn, *args):
        return fn(self.x, self.y, self.sample_weight, *args)

    def value(self, w):
        losses = self.per_example_loss(self.y, self.predict(w, self.x), self.sample_weight)
        return tf.reduce_sum(losses) / self.count

    def value_and_gradient(self, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            value = self.value(w)
        return value, tape.gradient(value, w)


def mlp(inputs=3, hidden=4, outputs=2, activation=None, dtype=None, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="tanh", dtype=dtype),
            keras.layers.Dense(outputs, activation=activation, dtype=dtype),
        ]
    )


def naive_jacobian(objective, w, x):
    """tape.jacobian of the whole batch output: [n, K, m]."""
    with tf.GradientTape() as tape:
        tape.watch(w)
        y_pred = objective.predict(w, x)
    jacobian = tape.jacobian(y_pred, w)
    return tf.reshape(jacobian, [y_pred.shape[0], -1, w.shape[0]]).numpy()


def keras_gradient(objective, w):
    return objective.value_and_gradient(w)[1].numpy()


# -- per-example Jacobians ---------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "conv1d"])
def test_per_example_jacobian_equals_naive_jacobian(kind, rng, monkeypatch):
    keras.utils.set_random_seed(1)
    if kind == "conv1d":
        # Also the vectorized `tape.jacobian` used for many outputs.
        monkeypatch.setattr(curvature, "_UNROLLED_OUTPUTS", 1)
    if kind == "dense":
        model = mlp(inputs=3, hidden=5, outputs=2)
        x = rng.normal(size=(7, 3)).astype("float32")
    else:
        model = keras.Sequential(
            [
                keras.Input((6, 2)),
                keras.layers.Conv1D(3, 3, activation="tanh"),
                keras.layers.Flatten(),
                keras.layers.Dense(2, use_bias=True),
            ]
        )
        x = rng.normal(size=(5, 6, 2)).astype("float32")
    objective = StatelessObjective(
        model, keras.losses.MeanSquaredError(reduction=None), x, np.zeros((len(x), 2))
    )
    w = objective.weights()
    y_pred, jacobian = tf.function(curvature.per_example_jacobian, autograph=False)(
        objective.predict, w, tf.constant(x)
    )
    np.testing.assert_allclose(y_pred.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        jacobian.numpy(), naive_jacobian(objective, w, tf.constant(x)), rtol=1e-5, atol=1e-6
    )


def test_per_example_jacobian_equals_finite_differences(rng):
    model = mlp(inputs=2, hidden=3, outputs=2, dtype="float64")
    x = rng.normal(size=(4, 2))
    objective = StatelessObjective(
        model, keras.losses.MeanSquaredError(reduction=None), x, np.zeros((4, 2))
    )
    w = objective.weights()
    _, jacobian = curvature.per_example_jacobian(objective.predict, w, tf.constant(x))
    h = 1e-6
    reference = np.zeros(jacobian.shape)
    for j in range(objective.size):
        step = np.zeros(objective.size)
        step[j] = h
        up = objective.predict(w + step, x).numpy()
        down = objective.predict(w - step, x).numpy()
        reference[:, :, j] = (up - down) / (2 * h)
    np.testing.assert_allclose(jacobian.numpy(), reference, rtol=1e-6, atol=1e-8)


# -- Gauss-Newton systems ----------------------------------------------------


@pytest.mark.parametrize("weighted", [True, False])
def test_gauss_newton_mean_squared_error_matches_numpy(weighted, rng):
    model = mlp(inputs=3, hidden=4, outputs=2)
    x = rng.normal(size=(9, 3)).astype("float32")
    y = rng.normal(size=(9, 2)).astype("float32")
    s = rng.uniform(0.5, 2.0, size=9).astype("float32") if weighted else np.ones(9, "float32")
    objective = StatelessObjective(
        model,
        keras.losses.MeanSquaredError(reduction=None),
        x,
        y,
        tf.constant(s) if weighted else None,
    )
    w = objective.weights()
    value, gradient, matrix = objective.gauss_newton(w)

    jacobian = naive_jacobian(objective, w, tf.constant(x)).astype(np.float64)
    e = model(x).numpy().astype(np.float64) - y
    n = len(x)
    # Lecture: E = 1/(2n) sum s_i e_i'e_i, g = 1/n sum s_i J_i'e_i, A = 1/n sum s_i J_i'J_i.
    expected_value = np.sum(s * np.sum(e * e, axis=1)) / (2 * n)
    expected_gradient = np.einsum("i,ikm,ik->m", s, jacobian, e) / n
    expected_matrix = np.einsum("i,ikm,ikl->ml", s, jacobian, jacobian) / n
    np.testing.assert_allclose(value.numpy(), expected_value, rtol=1e-5)
    np.testing.assert_allclose(gradient.numpy(), expected_gradient, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(matrix.numpy(), expected_matrix, rtol=1e-4, atol=1e-6)
    # Keras's "mse" is (2/K) E: its gradient is (2/K) g.
    outputs = 2
    np.testing.assert_allclose(
        keras_gradient(objective, w), gradient.numpy() * 2 / outputs, rtol=1e-4, atol=1e-6
    )


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "loss, activation",
    [
        (keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None), None),
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None), None),
        (keras.losses.BinaryCrossentropy(from_logits=True, reduction=None), None),
    ],
    ids=["categorical", "sparse", "binary"],
)
def test_generalized_gauss_newton_on_logits_matches_closed_form(loss, activation, rng):
    model = mlp(inputs=3, hidden=4, outputs=3, activation=activation)
    n = 8
    x = rng.normal(size=(n, 3)).astype("float32")
    labels = rng.integers(0, 3, size=n)
    name = loss.get_config()["name"]
    if name == "sparse_categorical_crossentropy":
        y = labels
    elif name == "binary_crossentropy":
        y = rng.integers(0, 2, size=(n, 3)).astype("float32")
    else:
        y = np.eye(3, dtype="float32")[labels]
    s = rng.uniform(0.5, 2.0, size=n).astype("float32")
    objective = StatelessObjective(model, loss, x, y, tf.constant(s))
    w = objective.weights()
    value, gradient, matrix = objective.gauss_newton(w)

    jacobian = naive_jacobian(objective, w, tf.constant(x)).astype(np.float64)
    z = model(x).numpy().astype(np.float64)
    if name == "binary_crossentropy":
        p = 1 / (1 + np.exp(-z))
        # Keras averages the K binary losses: H = diag(p(1-p)) / K.
        hessians = np.stack([np.diag(pi * (1 - pi)) / 3 for pi in p])
    else:
        p = _softmax(z)
        hessians = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    hessians *= s[:, None, None]
    expected = np.einsum("ikm,ikl,ilj->mj", jacobian, hessians, jacobian) / n
    np.testing.assert_allclose(matrix.numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gradient.numpy(), keras_gradient(objective, w), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(value.numpy(), objective.value(w).numpy(), rtol=1e-6)


def test_categorical_crossentropy_on_probabilities_is_the_gradient_outer_product(rng):
    """With softmax outputs and one-hot targets, J_p' H_L J_p of example i is
    grad L_i grad L_i' (H_L = e_c e_c'/p_c^2 on the simplex)."""
    model = mlp(inputs=3, hidden=4, outputs=3, activation="softmax")
    n = 6
    x = rng.normal(size=(n, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=n)]
    loss = keras.losses.CategoricalCrossentropy(reduction=None)
    objective = StatelessObjective(model, loss, x, y)
    w = objective.weights()
    _, gradient, matrix = objective.gauss_newton(w)

    per_example = []
    for i in range(n):
        one = StatelessObjective(model, loss, x[i : i + 1], y[i : i + 1])
        per_example.append(keras_gradient(one, w))
    per_example = np.array(per_example, dtype=np.float64)
    np.testing.assert_allclose(
        matrix.numpy(), per_example.T @ per_example / n, rtol=1e-3, atol=1e-6
    )
    np.testing.assert_allclose(gradient.numpy(), per_example.mean(axis=0), rtol=1e-4, atol=1e-6)
    assert np.linalg.eigvalsh(matrix.numpy()).min() > -1e-6


@pytest.mark.parametrize(
    "loss, outputs",
    [
        (keras.losses.MeanSquaredError(reduction=None), 2),
        (keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None), 3),
        (keras.losses.BinaryCrossentropy(reduction=None), 2),
    ],
    ids=["mse", "categorical-logits", "binary-probabilities"],
)
def test_sample_space_solve_equals_parameter_space_solve(loss, outputs, rng):
    activation = "sigmoid" if isinstance(loss, keras.losses.BinaryCrossentropy) else None
    model = mlp(inputs=3, hidden=6, outputs=outputs, activation=activation)
    n = 4  # n K < m
    x = rng.normal(size=(n, 3)).astype("float32")
    if isinstance(loss, keras.losses.MeanSquaredError):
        y = rng.normal(size=(n, outputs)).astype("float32")
    elif isinstance(loss, keras.losses.BinaryCrossentropy):
        y = rng.integers(0, 2, size=(n, outputs)).astype("float32")
    else:
        y = np.eye(outputs, dtype="float32")[rng.integers(0, outputs, size=n)]
    s = tf.constant(rng.uniform(0.5, 2.0, size=n).astype("float32"))
    objective = StatelessObjective(model, loss, x, y, s)
    w = objective.weights()
    assert objective.prefers_sample_space(w) is True
    _, gradient, matrix = objective.gauss_newton(w)
    _, gradient_dual, system = objective.gauss_newton_sample_space(w)
    np.testing.assert_allclose(gradient_dual.numpy(), gradient.numpy(), rtol=1e-5, atol=1e-7)
    for damping in [1e-2, 1.0]:
        delta, ok = system.solve(damping)
        expected = np.linalg.solve(
            matrix.numpy().astype(np.float64) + damping * np.eye(objective.size),
            gradient.numpy().astype(np.float64),
        )
        assert bool(ok)
        np.testing.assert_allclose(delta.numpy(), expected, rtol=2e-3, atol=1e-5)


def test_prefers_parameter_space_when_more_residuals_than_weights(rng):
    model = mlp(inputs=2, hidden=2, outputs=1)  # m = 9
    x = rng.normal(size=(10, 2)).astype("float32")
    objective = StatelessObjective(
        model, keras.losses.MeanSquaredError(reduction=None), x, np.zeros((10, 1))
    )
    assert objective.prefers_sample_space(objective.weights()) is False


def test_chunked_and_dynamic_batch_equal_one_chunk(rng):
    model = mlp(inputs=3, hidden=4, outputs=3)
    x = rng.normal(size=(11, 3)).astype("float32")
    y = rng.integers(0, 3, size=11)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    whole = StatelessObjective(model, loss, x, y)
    w = whole.weights()
    expected = [t.numpy() for t in whole.gauss_newton(w)]
    expected_hessian = [t.numpy() for t in whole.hessian(w)]

    # A budget of 4 examples per chunk: three chunks, the last one padded.
    numbers = 4 * 3 * whole.size * 4
    chunked = StatelessObjective(model, loss, x, y)
    chunked.memory_budget = numbers * 4
    assert chunked._chunk_size(4 * 3 * chunked.size) == 4

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([whole.size], tf.float32),
        ]
    )
    def dynamic(x, y, w):
        objective = StatelessObjective(model, loss, x, y)
        objective.memory_budget = numbers * 4
        return objective.gauss_newton(w), objective.hessian(w), objective.prefers_sample_space(w)

    (value, gradient, matrix), (_, _, hessian), prefers = dynamic(x, y, w)
    for got, want in zip([value, gradient, matrix], expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hessian.numpy(), expected_hessian[2], rtol=1e-4, atol=1e-6)
    assert not bool(prefers)
    for got, want in zip(chunked.gauss_newton(w), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_levenberg_marquardt_step_with_dynamic_batch_size_equals_static(rng):
    """A batch of unknown size chooses the sample-space form in the graph."""
    from keras_gdzoo import LevenbergMarquardt

    model = mlp(inputs=2, hidden=6, outputs=1)  # m = 25 > n K = 9
    x = rng.normal(size=(9, 2)).astype("float32")
    y = rng.normal(size=(9, 1)).astype("float32")
    loss = keras.losses.MeanSquaredError(reduction=None)
    solver = LevenbergMarquardt(damping=1e-2)
    static = StatelessObjective(model, loss, x, y)
    w = static.weights()
    state = solver.initial_state(static.size, "float32")
    assert static.prefers_sample_space(w) is True
    w_static, state_static, logs_static = solver.step(w, state, static)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32),
            tf.TensorSpec([None, 1], tf.float32),
            tf.TensorSpec([static.size], tf.float32),
        ]
    )
    def dynamic(x, y, w):
        return solver.step(w, state, StatelessObjective(model, loss, x, y))

    w_dynamic, state_dynamic, logs_dynamic = dynamic(x, y, w)
    np.testing.assert_allclose(w_dynamic.numpy(), w_static.numpy(), rtol=1e-5, atol=1e-6)
    assert float(logs_dynamic["accepted"]) == float(logs_static["accepted"])
    np.testing.assert_allclose(state_dynamic["damping"], state_static["damping"])


# -- Hessians ---------------------------------------------------------------


def test_hessian_equals_nested_tape_hessian(rng):
    model = mlp(inputs=3, hidden=4, outputs=3, activation="softmax")
    x = rng.normal(size=(7, 3)).astype("float32")
    y = rng.integers(0, 3, size=7)
    objective = StatelessObjective(
        model, keras.losses.SparseCategoricalCrossentropy(reduction=None), x, y
    )
    w = objective.weights()
    value, gradient, hessian = objective.hessian(w)
    with tf.GradientTape() as outer:
        outer.watch(w)
        reference_value, reference_gradient = objective.value_and_gradient(w)
    reference = outer.jacobian(reference_gradient, w).numpy()
    np.testing.assert_allclose(value.numpy(), reference_value.numpy(), rtol=1e-6)
    np.testing.assert_allclose(gradient.numpy(), reference_gradient.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(hessian.numpy(), reference, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(hessian.numpy(), hessian.numpy().T)


# -- solves and refusals ----------------------------------------------------


def test_damped_solve_matches_numpy_and_reports_failure_without_raising(rng):
    a = rng.normal(size=(5, 5))
    matrix = a @ a.T
    rhs = rng.normal(size=5)
    solution, ok = curvature.damped_solve(tf.constant(matrix), tf.constant(rhs), 0.5)
    assert bool(ok)
    np.testing.assert_allclose(
        solution.numpy(), np.linalg.solve(matrix + 0.5 * np.eye(5), rhs), rtol=1e-10
    )
    indefinite = tf.constant(np.diag([1.0, -2.0, 3.0]))
    ones = tf.ones([3], tf.float64)
    assert not bool(curvature.damped_solve(indefinite, ones, 0.0)[1])
    assert bool(curvature.damped_solve(indefinite, ones, 2.5)[1])


def test_gauss_newton_refuses_other_losses(rng):
    model = mlp(inputs=2, hidden=2, outputs=1)
    x = rng.normal(size=(4, 2)).astype("float32")
    objective = StatelessObjective(
        model, keras.losses.Huber(reduction=None), x, np.zeros((4, 1)), loss_name=None
    )
    with pytest.raises(ValueError, match="Received: loss=huber"):
        objective.gauss_newton(objective.weights())
