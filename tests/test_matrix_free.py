"""keras_gdzoo.matrix_free: Gauss-Newton- and Hessian-vector products, CG.

References: the dense matrices of `keras_gdzoo.curvature` (themselves
checked against NumPy transcriptions in test_curvature.py), the naive
`tape.jacobian` of the whole batch output, central finite differences, and
`numpy.linalg.solve`.
"""

import resource

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo import matrix_free
from keras_gdzoo.model import ModelObjective


def objective_for(loss, activation=None, outputs=3, n=9, weighted=False, seed=0):
    """A ModelObjective of a small float64 tanh MLP (m = 3*4+4 + 4*K+K)."""
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(outputs, activation=activation),
        ]
    )
    x = rng.normal(size=(n, 3))
    labels = rng.integers(0, outputs, size=n)
    name = loss if isinstance(loss, str) else type(loss).__name__
    if "Sparse" in name or name.startswith("sparse"):
        y = labels
    elif "inary" in name:
        y = rng.integers(0, 2, size=(n, outputs)).astype("float64")
    elif "ategorical" in name:
        y = np.eye(outputs)[labels]
    else:
        y = rng.normal(size=(n, outputs))
    data = (x, y, rng.uniform(0.5, 2.0, size=n)) if weighted else (x, y)
    data = tuple(tf.constant(d) for d in data)
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Newton(), loss=loss)
    objective = ModelObjective(trainer, data, tf.distribute.get_strategy())
    return objective, objective.current(), rng


GAUSS_NEWTON_CASES = [
    ("mse", None),
    ("binary_crossentropy", "sigmoid"),
    (keras.losses.BinaryCrossentropy(from_logits=True), None),
    (keras.losses.CategoricalCrossentropy(from_logits=True), None),
    ("categorical_crossentropy", "softmax"),
    (keras.losses.SparseCategoricalCrossentropy(from_logits=True), None),
    ("sparse_categorical_crossentropy", "softmax"),
]
GAUSS_NEWTON_IDS = [
    "mse",
    "binary-probabilities",
    "binary-logits",
    "categorical-logits",
    "categorical-probabilities",
    "sparse-logits",
    "sparse-probabilities",
]


@pytest.mark.parametrize(
    "loss, activation, weighted",
    [case + (weighted,) for case, weighted in zip(GAUSS_NEWTON_CASES, [0, 1, 0, 1, 1, 0, 1])]
    + [("mse", None, 0), ("categorical_crossentropy", "softmax", 0)],
    ids=[
        name + ("-sample-weights" if weighted else "")
        for name, weighted in zip(GAUSS_NEWTON_IDS, [0, 1, 0, 1, 1, 0, 1])
    ]
    + ["mse", "categorical-probabilities"],
)
def test_gauss_newton_product_equals_dense_matrix_times_v(loss, activation, weighted):
    objective, w, rng = objective_for(loss, activation, weighted=weighted)
    value, gradient, matrix = objective.gauss_newton(w)
    product = tf.function(lambda w, v: matrix_free.gauss_newton_product(objective, w, v))
    for _ in range(2):
        v = rng.normal(size=objective.size)
        np.testing.assert_allclose(
            product(w, tf.constant(v)).numpy(), matrix.numpy() @ v, rtol=1e-10, atol=1e-12
        )
    value_mf, gradient_mf = matrix_free.gauss_newton_gradient(objective, w)
    np.testing.assert_allclose(value_mf.numpy(), value.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gradient_mf.numpy(), gradient.numpy(), rtol=1e-10, atol=1e-13)


def test_mse_gauss_newton_product_equals_numpy_with_naive_jacobian():
    objective, w, rng = objective_for("mse", weighted=True)
    x, _, s = objective.data
    s = s.numpy()
    with tf.GradientTape() as tape:
        tape.watch(w)
        y_pred = objective.predict(w, x)
    jacobian = tape.jacobian(y_pred, w).numpy()  # [n, K, m]
    v = rng.normal(size=objective.size)
    # Lecture scaling: A = 1/n sum s_i J_i'J_i.
    expected = np.einsum("i,ikm,ikl,l->m", s, jacobian, jacobian, v) / len(x)
    product = matrix_free.gauss_newton_product(objective, w, tf.constant(v))
    np.testing.assert_allclose(product.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "loss, activation",
    [
        ("mse", None),
        (keras.losses.CategoricalCrossentropy(from_logits=True), None),
        ("categorical_crossentropy", "softmax"),
        ("huber", None),
    ],
    ids=["mse", "categorical-logits", "categorical-probabilities", "huber"],
)
def test_hessian_product_equals_dense_hessian_times_v(loss, activation):
    objective, w, rng = objective_for(loss, activation, weighted=True)
    value, gradient, hessian = objective.hessian(w)
    product = tf.function(lambda w, v: matrix_free.hessian_product(objective, w, v))
    v = rng.normal(size=objective.size)
    np.testing.assert_allclose(
        product(w, tf.constant(v)).numpy(), hessian.numpy() @ v, rtol=1e-10, atol=1e-12
    )
    value_mf, gradient_mf = matrix_free.value_and_gradient(objective, w)
    np.testing.assert_allclose(value_mf.numpy(), value.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gradient_mf.numpy(), gradient.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", ["mse", keras.losses.CategoricalCrossentropy(from_logits=True)])
def test_products_include_weight_penalties_as_the_dense_matrices_do(loss):
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.3)),
            keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L1L2(0.0, 0.2)),
        ]
    )
    x = rng.normal(size=(7, 3))
    y = np.eye(3)[rng.integers(0, 3, size=7)]
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Newton(), loss=loss)
    objective = ModelObjective(
        trainer, (tf.constant(x), tf.constant(y)), tf.distribute.get_strategy()
    )
    w = objective.current()
    v = rng.normal(size=objective.size)
    value, gradient, matrix = objective.gauss_newton(w)
    np.testing.assert_allclose(
        matrix_free.gauss_newton_product(objective, w, tf.constant(v)).numpy(),
        matrix.numpy() @ v,
        rtol=1e-10,
        atol=1e-12,
    )
    value_mf, gradient_mf = matrix_free.gauss_newton_gradient(objective, w)
    np.testing.assert_allclose(value_mf.numpy(), value.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gradient_mf.numpy(), gradient.numpy(), rtol=1e-10, atol=1e-13)
    _, _, hessian = objective.hessian(w)
    np.testing.assert_allclose(
        matrix_free.hessian_product(objective, w, tf.constant(v)).numpy(),
        hessian.numpy() @ v,
        rtol=1e-10,
        atol=1e-12,
    )
    # L1 and L2 penalties have a diagonal Hessian: the diagonal is exact.
    np.testing.assert_allclose(
        matrix_free.gauss_newton_diagonal(objective, w).numpy(),
        np.diag(matrix.numpy()),
        rtol=1e-10,
        atol=1e-13,
    )


def test_gauss_newton_product_refuses_other_losses():
    objective, w, _ = objective_for("huber")
    with pytest.raises(ValueError, match="Received: loss=.?huber"):
        matrix_free.gauss_newton_product(objective, w, w)


def test_function_objective_hessian_product_uses_its_own_hessian_vector_product():
    rosen = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2  # noqa: E731
    objective = gz.solvers.base.FunctionObjective(rosen, size=2, dtype="float64")
    x, y = -1.2, 1.0
    hessian = np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200.0]])
    v = np.array([0.3, -0.7])
    w = tf.constant([x, y], tf.float64)
    product = matrix_free.hessian_product(objective, w, tf.constant(v))
    np.testing.assert_allclose(product.numpy(), hessian @ v, rtol=1e-12)


# -- conjugate gradients -------------------------------------------------------


def spd(rng, m, condition=100.0):
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    return q @ np.diag(np.geomspace(1.0, condition, m)) @ q.T


def matvec_of(matrix):
    matrix = tf.constant(matrix)
    return lambda v: tf.linalg.matvec(matrix, v)


@pytest.mark.parametrize("preconditioned", [False, True])
def test_conjugate_gradient_equals_numpy_solve(preconditioned, rng):
    m = 30
    a = spd(rng, m)
    scale = np.diag(rng.uniform(1.0, 30.0, size=m))
    a = scale @ a @ scale  # badly scaled: the diagonal preconditioner helps
    b = rng.normal(size=m)
    diagonal = tf.constant(np.diag(a))
    preconditioner = (lambda r: r / diagonal) if preconditioned else None
    solve = tf.function(
        lambda b: matrix_free.conjugate_gradient(
            matvec_of(a), b, preconditioner=preconditioner, tolerance=1e-12, max_iterations=500
        )
    )
    x, iterations, ok = solve(tf.constant(b))
    assert bool(ok)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    # The relative residual criterion holds at the returned point.
    assert np.linalg.norm(b - a @ x.numpy()) <= 1e-12 * np.linalg.norm(b) * 1.0001
    assert 0 < int(iterations) <= 500


def test_conjugate_gradient_converges_in_as_many_steps_as_distinct_eigenvalues(rng):
    # Nocedal & Wright, Theorem 5.4: r distinct eigenvalues, at most r steps.
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    a = q @ np.diag(np.repeat([1.0, 3.0, 10.0], [10, 20, 10])) @ q.T
    b = rng.normal(size=40)
    x, iterations, ok = matrix_free.conjugate_gradient(
        matvec_of(a), tf.constant(b), tolerance=1e-10, max_iterations=40
    )
    assert bool(ok) and int(iterations) == 3
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a, b), rtol=1e-8)


def test_conjugate_gradient_warm_start_and_iteration_cap(rng):
    a = spd(rng, 20)
    b = rng.normal(size=20)
    exact = np.linalg.solve(a, b)
    x, iterations, ok = matrix_free.conjugate_gradient(
        matvec_of(a), tf.constant(b), x0=tf.constant(exact), tolerance=1e-8
    )
    assert bool(ok) and int(iterations) == 0
    np.testing.assert_allclose(x.numpy(), exact, rtol=1e-12)
    x, iterations, ok = matrix_free.conjugate_gradient(
        matvec_of(a), tf.constant(b), tolerance=1e-14, max_iterations=3
    )
    assert bool(ok) and int(iterations) == 3  # truncated, still usable
    assert np.linalg.norm(b - a @ x.numpy()) < np.linalg.norm(b)


def test_conjugate_gradient_stops_on_negative_curvature_with_the_last_good_iterate():
    a = np.diag([2.0, 1.0, -1.0])
    # First direction p = b = e1 + e3: p'Ap = 1 > 0, then the residual lies
    # in the negative-curvature direction.
    b = np.array([1.0, 0.0, 1.0])
    x, iterations, ok = matrix_free.conjugate_gradient(
        matvec_of(a), tf.constant(b), tolerance=1e-12, max_iterations=10
    )
    assert not bool(ok) and int(iterations) == 2
    # One CG step: alpha = b'b / b'Ab = 2 / 1.
    np.testing.assert_allclose(x.numpy(), 2.0 * b, rtol=1e-12)
    # At the first iteration: x stays x0.
    x, iterations, ok = matrix_free.conjugate_gradient(
        matvec_of(a), tf.constant([0.0, 0.0, 1.0], tf.float64), tolerance=1e-12
    )
    assert not bool(ok) and int(iterations) == 1
    np.testing.assert_array_equal(x.numpy(), [0.0, 0.0, 0.0])


def test_matrix_free_system_solve_equals_dense_damped_solve():
    objective, w, _ = objective_for(keras.losses.CategoricalCrossentropy(from_logits=True))
    _, gradient, matrix = objective.gauss_newton(w)
    system = matrix_free.MatrixFreeSystem(objective, w, tolerance=1e-12, max_iterations=300)
    for damping in [1e-2, 1.0]:
        delta, ok = system.solve(damping)
        damped = matrix.numpy() + damping * np.eye(objective.size)
        expected = np.linalg.solve(damped, gradient)
        assert bool(ok)
        # Relative residual at the tolerance; the error within cond(damped) of it.
        residual = np.linalg.norm(damped @ delta.numpy() - gradient) / np.linalg.norm(gradient)
        assert residual <= 1e-11
        error = np.linalg.norm(delta.numpy() - expected) / np.linalg.norm(expected)
        assert error <= 1e-11 * np.linalg.cond(damped)
    # A warm start from the answer needs no product.
    delta, iterations, ok = system.solve_from(1.0, x0=tf.constant(expected))
    assert bool(ok) and int(iterations) == 0
    # The Hessian system; the trace estimate is v'Av >= 0.
    hessian_system = matrix_free.MatrixFreeSystem(
        objective, w, curvature="hessian", tolerance=1e-10, max_iterations=200
    )
    _, gradient, hessian = objective.hessian(w)
    delta, iterations, ok = hessian_system.solve_from(10.0)
    expected = np.linalg.solve(hessian.numpy() + 10.0 * np.eye(objective.size), gradient)
    np.testing.assert_allclose(delta.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert 0 < float(system.trace) < np.inf


@pytest.mark.parametrize(
    "loss, activation, weighted",
    [
        ("mse", None, True),
        ("binary_crossentropy", "sigmoid", False),
        ("categorical_crossentropy", "softmax", True),
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), None, True),
    ],
    ids=["mse-weighted", "binary-probabilities", "categorical-probabilities", "sparse-logits"],
)
def test_gauss_newton_diagonal_equals_the_dense_diagonal(loss, activation, weighted):
    objective, w, _ = objective_for(loss, activation, weighted=weighted)
    _, _, matrix = objective.gauss_newton(w)
    expected = np.diag(matrix.numpy())
    np.testing.assert_allclose(
        matrix_free.gauss_newton_diagonal(objective, w).numpy(), expected, rtol=1e-10, atol=1e-13
    )
    # Chunks of 4 examples (9 = 4 + 4 + 1, padded and masked).
    outputs = 3
    chunked = matrix_free.gauss_newton_diagonal(
        objective, w, memory_budget=4 * 3 * outputs * objective.size * 8
    )
    np.testing.assert_allclose(chunked.numpy(), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", ["mse", keras.losses.CategoricalCrossentropy(from_logits=True)])
def test_squared_gradient_diagonal_equals_per_example_gradients(loss):
    objective, w, _ = objective_for(loss, weighted=True)
    x, y, s = objective.data
    expected = np.zeros(objective.size)
    for i in range(len(x)):
        one = ModelObjective(
            objective.model, (x[i : i + 1], y[i : i + 1], s[i : i + 1]), objective.strategy
        )
        expected += matrix_free.gauss_newton_gradient(one, w)[1].numpy() ** 2 / len(x)
    whole = matrix_free.squared_gradient_diagonal(objective, w)
    # Chunks of 4 examples: 9 = 4 + 4 + 1 (padded, masked).
    chunked = matrix_free.squared_gradient_diagonal(
        objective, w, memory_budget=4 * 4 * objective.size * 8
    )
    np.testing.assert_allclose(whole.numpy(), expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(chunked.numpy(), expected, rtol=1e-10, atol=1e-14)


def test_hutchinson_diagonal_estimate_is_unbiased_for_a_diagonal_matrix():
    # For a diagonal A, v * (A v) = diag(A) exactly for any sign vector v.
    objective, w, _ = objective_for("mse", outputs=1)
    objective_linear = objective  # tanh MLP: A is not diagonal in general
    estimate = matrix_free.gauss_newton_diagonal(objective_linear, w, probes=200).numpy()
    exact = matrix_free.gauss_newton_diagonal(objective_linear, w).numpy()
    assert np.all(estimate >= 0)
    # 200 probes: within a few standard errors of the exact diagonal.
    _, _, matrix = objective.gauss_newton(w)
    off = matrix.numpy() - np.diag(exact)
    standard_error = np.sqrt(np.sum(off**2, axis=1) / 200)
    assert np.all(np.abs(estimate - exact) <= 5 * standard_error + 1e-12)


def test_scaled_system_solves_for_s_delta():
    objective, w, _ = objective_for(keras.losses.CategoricalCrossentropy(from_logits=True))
    _, gradient, matrix = objective.gauss_newton(w)
    s = np.sqrt(np.diag(matrix.numpy()) + 1.0)
    system = matrix_free.MatrixFreeSystem(
        objective, w, tolerance=1e-11, max_iterations=200, scale=tf.constant(s)
    )
    u, ok = system.solve(0.3)
    scaled = matrix.numpy() / np.outer(s, s)
    expected = np.linalg.solve(scaled + 0.3 * np.eye(len(s)), gradient.numpy() / s)
    assert bool(ok)
    np.testing.assert_allclose(u.numpy(), expected, rtol=1e-8, atol=1e-11)


def test_preconditioned_and_diagonally_damped_solves_equal_numpy():
    objective, w, _ = objective_for(keras.losses.CategoricalCrossentropy(from_logits=True))
    _, gradient, matrix = objective.gauss_newton(w)
    diagonal = matrix_free.squared_gradient_diagonal(objective, w)
    system = matrix_free.MatrixFreeSystem(
        objective,
        w,
        tolerance=1e-11,
        max_iterations=200,
        preconditioner=lambda mu: matrix_free.diagonal_preconditioner(diagonal, mu),
    )
    d = np.diag(matrix.numpy()) + 0.1
    delta, _, ok = system.solve_from(0.5, diagonal=tf.constant(d))
    expected = np.linalg.solve(matrix.numpy() + 0.5 * np.diag(d), gradient.numpy())
    assert bool(ok)
    np.testing.assert_allclose(delta.numpy(), expected, rtol=1e-8, atol=1e-11)


# -- memory: m whose dense matrix would not fit --------------------------------


def test_products_and_cg_on_300k_weights_without_an_m_by_m_matrix():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [keras.Input((100,)), keras.layers.Dense(3000, activation="tanh"), keras.layers.Dense(1)]
    )
    x = rng.normal(size=(32, 100)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Newton(), loss="mse")
    objective = ModelObjective(
        trainer, (tf.constant(x), tf.constant(y)), tf.distribute.get_strategy()
    )
    m = objective.size
    assert m > 300_000  # a float32 m x m matrix: m^2 * 4 bytes > 360 GB
    w = objective.current()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    v = tf.constant(rng.normal(size=m) / np.sqrt(m), w.dtype)
    product = matrix_free.gauss_newton_product(objective, w, v)
    system = matrix_free.MatrixFreeSystem(objective, w, tolerance=1e-3, max_iterations=3)
    delta, iterations, ok = system.solve_from(1e-3)
    hessian_product = matrix_free.hessian_product(objective, w, v)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak - before < 2**30
    assert bool(ok) and int(iterations) >= 1
    assert np.all(np.isfinite(delta.numpy())) and np.all(np.isfinite(hessian_product.numpy()))
    # For the mean squared error v'Av = ||J v||^2 / n; J v by central
    # differences of the model output.
    h = 1e-2
    up = objective.predict(w + h * v, x).numpy().astype(np.float64)
    down = objective.predict(w - h * v, x).numpy().astype(np.float64)
    jv = (up - down) / (2 * h)
    np.testing.assert_allclose(
        float(tf.tensordot(v, product, 1)), np.sum(jv**2) / len(x), rtol=1e-2
    )


def test_gpu_check_quick_mode_runs_newton_cg_and_lm_cg_on_a_million_weights(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    results = gpu_check.main(
        ["--quick", "--methods", "newton-cg", "lm-cg", "--steps", "1", "--no-xla"]
    )
    printed = capsys.readouterr().out
    assert "failed" not in printed
    assert sorted(row[:2] for row in results) == [("large", "lm-cg"), ("large", "newton-cg")]
    assert all(row[2] >= 1_000_000 for row in results)
    assert all(np.isfinite(row[5]) for row in results)


# -- several outputs and residual objectives -----------------------------------


def two_output_objective(rng):
    """A float64 3-4-(1, 3) tanh model, mse (weight 0.3) on the first
    output and softmax cross-entropy on logits (weight 2) on the second,
    an L2 penalty (0.01) on the hidden kernel."""
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    regularizer = keras.regularizers.L2(0.01)
    hidden = keras.layers.Dense(4, activation="tanh", kernel_regularizer=regularizer)(inputs)
    model = keras.Model(
        inputs, [keras.layers.Dense(1, name="first")(hidden), keras.layers.Dense(3)(hidden)]
    )
    x = rng.normal(size=(12, 3))
    y = (rng.normal(size=(12, 1)), np.eye(3)[rng.integers(0, 3, size=12)])
    trainer = gz.wrap(model)
    trainer.compile(
        optimizer=gz.LevenbergMarquardt(),
        loss=["mse", keras.losses.CategoricalCrossentropy(from_logits=True)],
        loss_weights=[0.3, 2.0],
    )
    data = (tf.constant(x), tuple(tf.constant(t) for t in y))
    return ModelObjective(trainer, data, tf.distribute.get_strategy()), x, y


def _split_residuals(model, x, y):
    prediction = model(x)
    return [prediction[:5] - y[:5], 0.5 * (prediction[5:] - y[5:]) ** 2]


def residual_objective(rng):
    """A float64 3-4-2 tanh model with two residual entries (rows 0-4:
    f - y; rows 5-11: (f - y)^2 / 2) weighted 2 and 0.5, and an L2 penalty
    (0.01) on the hidden kernel."""
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(0)
    regularizer = keras.regularizers.L2(0.01)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=regularizer),
            keras.layers.Dense(2),
        ]
    )
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    trainer = gz.wrap(model, residuals=_split_residuals, residual_weights=[2.0, 0.5])
    trainer.compile(optimizer=gz.LevenbergMarquardt())
    data = (tf.constant(x), tf.constant(y))
    return ModelObjective(trainer, data, tf.distribute.get_strategy()), x, y


# Keras's L2 regularizer multiplies by l2 in float32.
L2 = float(np.float32(0.01))


def _penalty_hessian(objective):
    """d2P/dw2 of L2 * ||hidden kernel||^2: 2 L2 on the kernel's entries
    (the first 3 x 4 weights of w)."""
    diagonal = np.zeros(objective.size)
    diagonal[:12] = 2 * L2
    return np.diag(diagonal)


def test_two_output_gauss_newton_products_equal_numpy_with_naive_jacobians(rng):
    objective, x, (y_first, labels) = two_output_objective(rng)
    w = objective.current()
    with tf.GradientTape() as tape:
        tape.watch(w)
        y_pred = objective.predict(w, tf.constant(x))  # [n, 1 + 3]
    jacobian = tape.jacobian(y_pred, w).numpy()  # [n, 4, m]
    logits = y_pred.numpy()[:, 1:]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = len(x)
    # H_i: 0.3 * d2/df2 (f - y)^2 = 0.6 and 2 (diag(p) - p p') for the logits.
    hessians = np.zeros((n, 4, 4))
    hessians[:, 0, 0] = 0.6
    softmax_hessians = np.einsum("ik,kl->ikl", p, np.eye(3)) - np.einsum("ik,il->ikl", p, p)
    hessians[:, 1:, 1:] = 2.0 * softmax_hessians
    matrix = np.einsum("iam,iab,ibl->ml", jacobian, hessians, jacobian) / n
    matrix += _penalty_hessian(objective)
    kernel = w.numpy()[:12]
    residual = y_pred.numpy()[:, 0] - y_first[:, 0]
    value = 0.3 * np.mean(residual**2) - 2.0 * np.mean(np.sum(labels * np.log(p), axis=1))
    value += L2 * np.sum(kernel**2)
    output_gradient = np.concatenate([0.6 * residual[:, None], 2.0 * (p - labels)], axis=1)
    gradient = np.einsum("iam,ia->m", jacobian, output_gradient) / n
    gradient[:12] += 2 * L2 * kernel

    _assert_matrix_free_equals(objective, w, matrix, value, gradient, rng)


def test_residual_gauss_newton_products_equal_numpy_with_the_stacked_jacobian(rng):
    objective, x, y = residual_objective(rng)
    w = objective.current()
    with tf.GradientTape() as tape:
        tape.watch(w)
        with objective._scope(w):
            prediction = objective.network(tf.constant(x))
        first = tf.reshape(prediction[:5] - y[:5], [-1]) * np.sqrt(2.0 / 5)
        second = tf.reshape(0.5 * (prediction[5:] - y[5:]) ** 2, [-1]) * np.sqrt(0.5 / 7)
        stacked = tf.concat([first, second], 0)
    jacobian = tape.jacobian(stacked, w).numpy()
    r = stacked.numpy()
    kernel = w.numpy()[:12]
    matrix = jacobian.T @ jacobian + _penalty_hessian(objective)
    gradient = jacobian.T @ r
    gradient[:12] += 2 * L2 * kernel

    _assert_matrix_free_equals(
        objective, w, matrix, 0.5 * r @ r + L2 * kernel @ kernel, gradient, rng
    )


def _assert_matrix_free_equals(objective, w, matrix, value, gradient, rng):
    """The matrix-free products, value, gradient and diagonal of `objective`
    at w against the NumPy A, E and g; the dense path's A is the same."""
    assert matrix_free.has_gauss_newton_products(objective)
    product = tf.function(lambda w, v: matrix_free.gauss_newton_product(objective, w, v))
    for _ in range(2):
        v = rng.normal(size=objective.size)
        np.testing.assert_allclose(
            product(w, tf.constant(v)).numpy(), matrix @ v, rtol=1e-10, atol=1e-12
        )
    value_mf, gradient_mf = matrix_free.gauss_newton_gradient(objective, w)
    np.testing.assert_allclose(value_mf.numpy(), value, rtol=1e-12)
    np.testing.assert_allclose(gradient_mf.numpy(), gradient, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        matrix_free.gauss_newton_diagonal(objective, w).numpy(),
        np.diag(matrix),
        rtol=1e-10,
        atol=1e-13,
    )
    np.testing.assert_allclose(objective.gauss_newton(w)[2].numpy(), matrix, rtol=1e-10, atol=1e-12)


def test_custom_compute_loss_has_no_gauss_newton_products():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return tf.reduce_mean((y_pred - y) ** 4)

    model = Custom()
    model(np.zeros((1, 2)))
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Newton())
    data = (tf.zeros((3, 2)), tf.zeros((3, 1)))
    objective = ModelObjective(trainer, data, tf.distribute.get_strategy())
    assert not matrix_free.has_gauss_newton_products(objective)
    with pytest.raises(ValueError, match="Received: loss="):
        matrix_free.gauss_newton_product(objective, objective.current(), objective.current())


@pytest.mark.parametrize("kind", ["two-output", "residuals"])
def test_lm_cg_and_dense_iterates_agree_on_several_outputs_and_residuals(kind):
    runs = {}
    for linear_solver in ["cholesky", "cg"]:
        rng = np.random.default_rng(1)
        make = two_output_objective if kind == "two-output" else residual_objective
        objective, x, y = make(rng)
        trainer = objective.model
        extra = {"cg_max_iterations": 200, "cg_tolerance": 1e-10} if linear_solver == "cg" else {}
        # One damping rule for both ("auto" takes another one for factorizations).
        solver = gz.LevenbergMarquardt(
            damping_rule="scaled-gain-ratio", linear_solver=linear_solver, **extra
        )
        if kind == "two-output":
            trainer.compile(
                optimizer=solver,
                loss=["mse", keras.losses.CategoricalCrossentropy(from_logits=True)],
                loss_weights=[0.3, 2.0],
            )
            y = list(y)
        else:
            trainer.compile(optimizer=solver)
        # shuffle=False: the residual function splits the batch by position.
        history = trainer.fit(
            x, y, batch_size=len(x), epochs=4, verbose=0, shuffle=False
        ).history
        runs[linear_solver] = (objective.current().numpy(), history)
    (w_dense, dense), (w_cg, cg) = runs["cholesky"], runs["cg"]
    assert dense["loss"][-1] < 0.8 * dense["loss"][0]  # a run that moves
    np.testing.assert_allclose(cg["loss"], dense["loss"], rtol=1e-6)
    np.testing.assert_allclose(cg["damping"], dense["damping"], rtol=1e-6)
    assert cg["attempts"] == dense["attempts"]
    np.testing.assert_allclose(w_cg, w_dense, rtol=1e-5, atol=1e-7)
    assert all(k >= 1 for k in cg["cg_iterations"])


# -- the sampled diagonal (Chapelle & Erhan, 2011) --------------------------------


@pytest.mark.parametrize(
    "loss, activation, weighted",
    [
        ("mse", None, True),
        ("categorical_crossentropy", "softmax", True),
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), None, False),
        ("two-output", None, False),
        ("residuals", None, False),
    ],
    ids=["mse-weighted", "categorical-probabilities", "sparse-logits", "two-output", "residuals"],
)
def test_sampled_gauss_newton_diagonal_is_unbiased_with_bounded_spread(loss, activation, weighted):
    rng = np.random.default_rng(0)
    if loss == "two-output":
        objective, _, _ = two_output_objective(rng)
    elif loss == "residuals":
        objective, _, _ = residual_objective(rng)
    else:
        objective, _, _ = objective_for(loss, activation, weighted=weighted)
    w = objective.current()
    exact = matrix_free.gauss_newton_diagonal(objective, w).numpy()
    samples = 500
    estimate = matrix_free.sampled_gauss_newton_diagonal(objective, w, samples=samples).numpy()
    assert np.all(estimate >= 0) and np.all(exact > 0)
    # Relative standard deviation <= sqrt(2 / p) per weight: within 5 of them.
    np.testing.assert_array_less(np.abs(estimate / exact - 1), 5 * np.sqrt(2 / samples))
    # Penalties: the L2 term 2 * L2 enters whole (it is not sampled).
    if loss in ("two-output", "residuals"):
        assert np.all(estimate[:12] >= 2 * L2)


@pytest.mark.parametrize("loss", ["mse", keras.losses.CategoricalCrossentropy(from_logits=True)])
def test_sampled_diagonal_of_one_example_and_one_output_is_exact(loss):
    # n = K = 1: s = z J' b, z = +-1, so s * s = J' H J exactly (H = b^2).
    objective, w, _ = objective_for(loss, outputs=1, n=1, weighted=True)
    if not isinstance(loss, str):  # one logit: a constant softmax, A = 0
        objective, w, _ = objective_for(
            keras.losses.BinaryCrossentropy(from_logits=True), outputs=1, n=1, weighted=True
        )
    exact = matrix_free.gauss_newton_diagonal(objective, w).numpy()
    estimate = matrix_free.sampled_gauss_newton_diagonal(objective, w, samples=1).numpy()
    assert np.all(exact > 0)
    np.testing.assert_allclose(estimate, exact, rtol=1e-12, atol=1e-15)

