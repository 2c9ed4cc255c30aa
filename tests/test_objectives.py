"""What `gz.wrap` minimizes: compiled losses (one or several outputs, with
penalties), a custom `compute_loss`, residual functions; float64 models.

Every expected value comes from an independent transcription: NumPy closed
forms (ridge normal equations, `numpy.linalg.lstsq`) or a hand-written
TensorFlow function of the flat weights that does not go through Keras.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo.model import ModelObjective


def _quiet_fit(trainer, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return trainer.fit(*args, verbose=0, **kwargs).history


def _objective(trainer, x, y):
    return ModelObjective(trainer, (x, y), tf.distribute.get_strategy())


# -- ridge: the penalty counts in value, gradient and curvature -----------------
RIDGE_L2 = 0.05


def _ridge_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3 + 0.2 * rng.normal(size=(30, 1))
    return x, y


def _ridge_closed_form(x, y, l2):
    # minimize 1/n ||X w + b - y||^2 + l2 ||w||^2 (b not penalized)
    n, m = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.diag([l2] * m + [0.0])
    lhs = design.T @ design / n + penalty
    rhs = design.T @ y[:, 0] / n
    solution = np.linalg.solve(lhs, rhs)
    return solution[:m], solution[m]


RIDGE_SOLVERS = {
    "sd": (lambda: gz.SteepestDescent(), 200, 1e-5),
    "cg-pr": (lambda: gz.ConjugateGradient(), 60, 1e-6),
    "bfgs": (lambda: gz.BFGS(), 40, 1e-6),
    "lbfgs": (lambda: gz.LBFGS(), 40, 1e-6),
    "rprop": (lambda: gz.Rprop(), 300, 1e-4),
    "newton": (lambda: gz.Newton(), 4, 1e-8),
    "lm": (lambda: gz.LevenbergMarquardt(), 30, 1e-6),
}


@pytest.mark.parametrize("name", sorted(RIDGE_SOLVERS))
def test_ridge_penalty_reaches_the_closed_form(name):
    keras.config.set_floatx("float64")
    make, epochs, tolerance = RIDGE_SOLVERS[name]
    x, y = _ridge_data()
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(RIDGE_L2))]
    )
    trainer = gz.wrap(model)
    trainer.compile(optimizer=make(), loss="mse")
    _quiet_fit(trainer, x, y, batch_size=len(x), epochs=epochs)
    kernel, bias = model.get_weights()
    expected_kernel, expected_bias = _ridge_closed_form(x, y, RIDGE_L2)
    np.testing.assert_allclose(kernel[:, 0], expected_kernel, atol=tolerance, err_msg=name)
    np.testing.assert_allclose(bias[0], expected_bias, atol=tolerance, err_msg=name)


def test_penalty_gradient_and_curvature_are_exact():
    keras.config.set_floatx("float64")
    x, y = _ridge_data()
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(RIDGE_L2))]
    )
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Newton(), loss="mse")
    objective = _objective(trainer, x, y)
    w = tf.constant([0.3, -0.1, 0.7, 0.2], tf.float64)
    design = np.hstack([x, np.ones((30, 1))])
    e = design @ w.numpy() - y[:, 0]
    # Keras's L2 regularizer multiplies by l2 in float32.
    penalty_matrix = np.diag([float(np.float32(RIDGE_L2))] * 3 + [0.0])
    value = np.mean(e**2) + w.numpy() @ penalty_matrix @ w.numpy()
    gradient = 2 * design.T @ e / 30 + 2 * penalty_matrix @ w.numpy()
    hessian = 2 * design.T @ design / 30 + 2 * penalty_matrix
    v, g, h = objective.hessian(w)
    np.testing.assert_allclose(v, value, rtol=1e-12)
    np.testing.assert_allclose(g, gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h, hessian, rtol=1e-12, atol=1e-14)
    # Gauss-Newton in the lecture's scaling E = 1/(2n) e'e: K/2 = 1/2 of the
    # Keras loss, the penalty included.
    v, g, a = objective.gauss_newton(w)
    np.testing.assert_allclose(v, 0.5 * value, rtol=1e-12)
    np.testing.assert_allclose(g, 0.5 * gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a, 0.5 * hessian, rtol=1e-12, atol=1e-14)


# -- float64 models keep float64 ---------------------------------------------------
def test_float64_model_keeps_its_precision_under_the_float32_policy():
    inputs = keras.Input((1,), dtype="float64")
    outputs = keras.layers.Dense(1, dtype="float64", kernel_initializer="ones")(inputs)
    model = keras.Model(inputs, outputs)
    trainer = gz.wrap(model)
    assert trainer.dtype_policy.name == "float64"
    trainer.compile(optimizer=gz.LBFGS(), loss="mse")
    x = np.array([[77.6]])
    y = np.array([[0.0]])
    objective = _objective(trainer, tf.constant(x), tf.constant(y))
    assert objective.dtype == tf.float64
    value = objective.value(objective.current())
    assert value.dtype == tf.float64
    assert float(value) == 77.6**2  # float32 would give 6021.7598...
    np.testing.assert_array_equal(trainer(tf.constant(x)), [[77.6]])


# -- a custom compute_loss (physics-informed style) ------------------------------
class SmoothFit(keras.Model):
    """u = W2 tanh(W1 x + b1) + b2; loss = mean (u - y)^2 + c mean (du/dx)^2."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(3, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, x, training=None):
        return self.out(self.hidden(x))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            u = self(x)
        slope = tape.gradient(u, x)
        return tf.reduce_mean((y_pred - y) ** 2) + 0.1 * tf.reduce_mean(slope**2)


def _smooth_fit_by_hand(w, x, y):
    """The same loss transcribed on the flat weights, without Keras."""
    w1 = tf.reshape(w[0:3], [1, 3])
    b1 = w[3:6]
    w2 = tf.reshape(w[6:9], [3, 1])
    b2 = w[9:10]
    hidden = tf.tanh(x @ w1 + b1)
    u = hidden @ w2 + b2
    slope = ((1 - hidden**2) * tf.reshape(w1, [-1])) @ w2  # du/dx
    return tf.reduce_mean((u - y) ** 2) + 0.1 * tf.reduce_mean(slope**2)


def _smooth_data():
    x = np.linspace(-1, 1, 25)[:, None]
    return x, np.sin(3 * x)


def test_custom_compute_loss_equals_the_hand_written_objective():
    keras.config.set_floatx("float64")
    x, y = _smooth_data()
    model = SmoothFit()
    model(x[:1])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LBFGS())  # no loss: the model's own
    objective = _objective(trainer, x, y)
    before = [v.numpy().copy() for v in model.weights]
    w = tf.constant(np.random.default_rng(0).normal(size=10))
    value, gradient = objective.value_and_gradient(w)
    with tf.GradientTape() as tape:
        tape.watch(w)
        expected = _smooth_fit_by_hand(w, tf.constant(x), tf.constant(y))
    np.testing.assert_allclose(value, expected, rtol=1e-10)
    np.testing.assert_allclose(gradient, tape.gradient(expected, w), rtol=1e-10, atol=1e-12)
    # Stateless: evaluating at a trial point (nested tapes included) leaves
    # the model's weights alone.
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(variable.numpy(), old)


@pytest.mark.parametrize(
    "make",
    [gz.SteepestDescent, gz.ConjugateGradient, gz.BFGS, gz.LBFGS, gz.Rprop, gz.Newton],
    ids=lambda c: c.__name__,
)
def test_custom_compute_loss_trains_with_every_solver(make):
    keras.config.set_floatx("float64")
    x, y = _smooth_data()
    keras.utils.set_random_seed(2)
    model = SmoothFit()
    model(x[:1])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=make())
    history = _quiet_fit(trainer, x, y, batch_size=len(x), epochs=8)
    w = tf.concat([tf.reshape(v, [-1]) for v in model.trainable_variables], 0)
    final = float(_smooth_fit_by_hand(w, tf.constant(x), tf.constant(y)))
    assert final < 0.5 * history["loss"][0]
    np.testing.assert_allclose(history["loss"][0], history["loss"][0])  # finite
    assert np.isfinite(final)


def test_levenberg_marquardt_refuses_a_custom_compute_loss_by_name():
    x, y = _smooth_data()
    model = SmoothFit()
    model(x[:1])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt())
    with pytest.raises(ValueError, match="residuals="):
        trainer.fit(x, y, batch_size=len(x), epochs=1, verbose=0)


def test_a_solver_without_any_objective_is_refused_at_compile():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="needs an objective"):
        gz.wrap(model).compile(optimizer=gz.LBFGS())


# -- residual objectives -------------------------------------------------------
def _split_residuals(model, x, y):
    prediction = model(x)
    return [prediction[:12] - y[:12], prediction[12:] - y[12:]]


def _lstsq_of_split(x, y, weights):
    # E = sum_e l_e/(2 n_e) ||r_e||^2: rows of entry e scaled by sqrt(l_e/n_e).
    design = np.hstack([x, np.ones((len(x), 1))])
    scale = np.concatenate(
        [np.full(12, np.sqrt(weights[0] / 12)), np.full(len(x) - 12, np.sqrt(weights[1] / (len(x) - 12)))]
    )
    solution, *_ = np.linalg.lstsq(design * scale[:, None], y[:, 0] * scale, rcond=None)
    return solution


@pytest.mark.parametrize("make,epochs", [(gz.LevenbergMarquardt, 20), (gz.BFGS, 40), (gz.Newton, 3)])
def test_residual_objective_equals_lstsq(make, epochs):
    keras.config.set_floatx("float64")
    x, y = _ridge_data()
    weights = [1.0, 3.0]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model, residuals=_split_residuals, residual_weights=weights)
    trainer.compile(optimizer=make())
    # shuffle=False: the residual function splits the batch by position.
    history = _quiet_fit(trainer, x, y, batch_size=len(x), epochs=epochs, shuffle=False)
    kernel, bias = model.get_weights()
    expected = _lstsq_of_split(x, y, weights)
    np.testing.assert_allclose(np.append(kernel[:, 0], bias), expected, atol=1e-7)
    # The logged loss is the documented objective at the step's start.
    design = np.hstack([x, np.ones((len(x), 1))])
    e = design @ expected - y[:, 0]
    floor = weights[0] / 24 * np.sum(e[:12] ** 2) + weights[1] / 36 * np.sum(e[12:] ** 2)
    assert history["loss"][-1] == pytest.approx(floor, rel=1e-6)


def test_residual_gauss_newton_matches_the_stacked_jacobian():
    keras.config.set_floatx("float64")
    x, y = _ridge_data()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model, residuals=_split_residuals, residual_weights=[2.0, 0.5])
    trainer.compile(optimizer=gz.LevenbergMarquardt())
    objective = _objective(trainer, x, y)
    w = tf.constant([0.1, 0.2, -0.3, 0.4], tf.float64)
    design = np.hstack([x, np.ones((30, 1))])
    scale = np.concatenate([np.full(12, np.sqrt(2.0 / 12)), np.full(18, np.sqrt(0.5 / 18))])
    jacobian = design * scale[:, None]
    r = (design @ w.numpy() - y[:, 0]) * scale
    value, gradient, matrix = objective.gauss_newton(w)
    np.testing.assert_allclose(value, 0.5 * r @ r, rtol=1e-12)
    np.testing.assert_allclose(gradient, jacobian.T @ r, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(matrix, jacobian.T @ jacobian, rtol=1e-12, atol=1e-14)


def test_residual_arguments_are_checked_by_name():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="`residuals`"):
        gz.wrap(model, residuals=3)
    with pytest.raises(ValueError, match="`residual_weights`"):
        gz.wrap(model, residual_weights=[1.0])
    with pytest.raises(ValueError, match="`residual_weights`"):
        gz.wrap(model, residuals=_split_residuals, residual_weights=[-1.0])
    trainer = gz.wrap(model, residuals=_split_residuals)
    with pytest.raises(ValueError, match="without a `loss`"):
        trainer.compile(optimizer=gz.LBFGS(), loss="mse")


# -- several outputs -----------------------------------------------------------
def _two_output_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    first = keras.layers.Dense(1, name="first")(hidden)
    second = keras.layers.Dense(2, name="second")(hidden)
    return keras.Model(inputs, [first, second])


def test_two_output_objective_is_the_weighted_sum_of_its_losses():
    keras.config.set_floatx("float64")
    x, y = _ridge_data()
    targets = [y, np.hstack([y, -2 * y])]
    keras.utils.set_random_seed(0)
    model = _two_output_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LBFGS(), loss=["mse", "mae"], loss_weights=[0.3, 2.0])
    objective = _objective(trainer, x, targets)
    first, second = model.predict(x, verbose=0)
    expected = 0.3 * np.mean((first - targets[0]) ** 2) + 2.0 * np.mean(np.abs(second - targets[1]))
    np.testing.assert_allclose(objective.value(objective.current()), expected, rtol=1e-12)
    # dict form, by output name
    trainer = gz.wrap(model)
    trainer.compile(
        optimizer=gz.LBFGS(), loss={"first": "mse", "second": "mae"}, loss_weights={"second": 2.0}
    )
    objective = _objective(trainer, x, {"first": targets[0], "second": targets[1]})
    expected = np.mean((first - targets[0]) ** 2) + 2.0 * np.mean(np.abs(second - targets[1]))
    np.testing.assert_allclose(objective.value(objective.current()), expected, rtol=1e-12)


@pytest.mark.parametrize("make", [gz.LBFGS, gz.Rprop, gz.LevenbergMarquardt, gz.Newton])
def test_two_output_model_trains_with_solvers(make):
    x, y = _ridge_data()
    x, y = x.astype("float32"), y.astype("float32")
    targets = [y, np.hstack([y, -2 * y])]
    keras.utils.set_random_seed(0)
    model = _two_output_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=make(), loss=["mse", "mse"], loss_weights=[0.3, 2.0])
    history = _quiet_fit(trainer, x, targets, batch_size=len(x), epochs=5)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    evaluated = trainer.evaluate(x, targets, verbose=0)
    first, second = model.predict(x, verbose=0)
    expected = 0.3 * np.mean((first - targets[0]) ** 2) + 2.0 * np.mean((second - targets[1]) ** 2)
    np.testing.assert_allclose(evaluated, expected, rtol=1e-5)


def test_two_output_gauss_newton_matches_the_dense_hessian_of_a_linear_model():
    # For linear outputs and mean squared errors the Gauss-Newton matrix is
    # the exact Hessian of E (Keras's scaling for several outputs).
    keras.config.set_floatx("float64")
    x, y = _ridge_data()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(2)(inputs)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss=["mse", "mse"], loss_weights=[0.3, 2.0])
    targets = [y, np.hstack([y, -2 * y])]
    objective = _objective(trainer, x, targets)
    w = objective.current()
    _, g_gn, a = objective.gauss_newton(w)
    _, g, h = objective.hessian(w)
    np.testing.assert_allclose(g_gn, g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a, h, rtol=1e-10, atol=1e-12)


# -- unclear crashes made clear -----------------------------------------------------
def test_a_model_without_trainable_weights_is_refused_clearly():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.trainable = False
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LBFGS(), loss="mse")
    with pytest.raises(ValueError, match="no trainable weights"):
        trainer.fit(np.ones((4, 2)), np.ones((4, 1)), batch_size=4, epochs=1, verbose=0)


def test_lm_names_targets_that_do_not_match_the_output():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    with pytest.raises(ValueError, match=r"targets of shape \(None, 2\)|targets of shape \(8, 2\)"):
        trainer.fit(np.ones((8, 2)), np.ones((8, 2)), batch_size=8, epochs=1, verbose=0)


def test_backup_and_restore_accepts_a_freshly_wrapped_model(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    assert trainer.built
    trainer.compile(optimizer=gz.LBFGS(), loss="mse")
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    history = _quiet_fit(
        trainer, np.ones((8, 2)), np.zeros((8, 1)), batch_size=8, epochs=2, callbacks=[backup]
    )
    assert len(history["loss"]) == 2


# -- batch mode: the last line-search point is reused --------------------------------
def _sinc_problem():
    x = np.linspace(-1, 1, 64)[:, None]
    y = np.sinc(3 * x)
    return x, y


def _lbfgs_run(batch_mode, epochs=12, **fit_kwargs):
    keras.config.set_floatx("float64")
    x, y = _sinc_problem()
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)]
    )
    trainer = gz.wrap(model, batch_mode=batch_mode)
    trainer.compile(optimizer=gz.LBFGS(), loss="mse")
    history = _quiet_fit(trainer, x, y, batch_size=len(x), epochs=epochs, shuffle=False, **fit_kwargs)
    return trainer, history


def test_batch_mode_reuses_the_last_point_with_the_same_iterates():
    _, reused = _lbfgs_run(None)  # detected: arrays in one batch per epoch
    _, fresh = _lbfgs_run(False)
    np.testing.assert_allclose(reused["loss"], fresh["loss"], rtol=1e-10)
    # Re-evaluating costs one evaluation more per iteration after the first.
    assert sum(fresh["evaluations"]) - sum(reused["evaluations"]) == len(fresh["loss"]) - 1


def test_mini_batches_and_new_data_are_never_reused():
    keras.config.set_floatx("float64")
    x, y = _sinc_problem()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LBFGS(), loss="mse")
    mini = _quiet_fit(trainer, x, y, batch_size=16, epochs=1)
    assert all(e >= 2 for e in mini["evaluations"])  # start + at least one trial
    _quiet_fit(trainer, x, y, batch_size=len(x), epochs=2)
    # A new fit call on other data starts by evaluating again.
    again = _quiet_fit(trainer, x, 2 * y, batch_size=len(x), epochs=1)
    assert again["evaluations"][0] >= 2


def test_a_per_parameter_optimizer_through_the_wrapper_logs_keras_loss():
    x, y = _ridge_data()
    x, y = x.astype("float32"), y.astype("float32")
    histories = []
    for wrapped in (False, True):
        keras.utils.set_random_seed(5)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        trainer = gz.wrap(model) if wrapped else model
        trainer.compile(optimizer=gz.Adam(0.02), loss="mse")
        histories.append(_quiet_fit(trainer, x, y, batch_size=10, epochs=3, shuffle=False))
    np.testing.assert_allclose(histories[1]["loss"], histories[0]["loss"], rtol=1e-6)
    assert min(histories[1]["loss"]) > 0
