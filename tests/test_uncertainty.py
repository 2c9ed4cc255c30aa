"""keras_gdzoo.uncertainty: covariance of least-squares weights against
scipy.optimize.curve_fit's pcov, and delta-method prediction errors against
a NumPy transcription, on y = a exp(-b x) + c written as a Keras layer."""

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo import uncertainty
from keras_gdzoo.solvers.base import FunctionObjective


class ExponentialDecay(keras.layers.Layer):
    """y = a exp(-b x) + c, three scalar weights."""

    def build(self, input_shape):
        self.a = self.add_weight(shape=(), initializer=keras.initializers.Constant(1.0), name="a")
        self.b = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.5), name="b")
        self.c = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.0), name="c")

    def call(self, x):
        return self.a * keras.ops.exp(-self.b * x) + self.c


def curve(x, a, b, c):
    return a * np.exp(-b * x) + c


def curve_jacobian(x, a, b, c):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 4.0, 40)
    y = curve(x, 2.5, 1.3, 0.5) + 0.05 * rng.normal(size=x.shape)
    return x, y


def fitted_trainer(x, y):
    keras.config.set_floatx("float64")
    model = keras.Sequential([keras.Input((1,)), ExponentialDecay()])
    trainer = gz.wrap(model)
    trainer.compile(
        optimizer=gz.LevenbergMarquardt(gtol=0, ftol=0, xtol=1e-15), loss="mse"
    )
    trainer.fit(x[:, None], y[:, None], batch_size=len(x), epochs=100, verbose=0)
    return model, trainer


def test_covariance_equals_curve_fit_pcov(data):
    x, y = data
    model, trainer = fitted_trainer(x, y)
    popt, pcov = scipy.optimize.curve_fit(
        curve, x, y, p0=[1.0, 0.5, 0.0], jac=curve_jacobian, method="lm",
        ftol=1e-15, xtol=1e-15, gtol=1e-15,
    )
    fit = uncertainty.covariance(trainer, (x[:, None], y[:, None]))
    # A loss comparison resolves w to about sqrt(eps) only, both for LM and
    # for MINPACK: the two minimizers agree to ~1e-9.
    np.testing.assert_allclose(fit.weights, popt, rtol=1e-8)
    np.testing.assert_allclose(fit.covariance, pcov, rtol=1e-8)
    np.testing.assert_allclose(fit.standard_errors, np.sqrt(np.diag(pcov)), rtol=1e-8)
    assert fit.degrees_of_freedom == len(x) - 3
    ssr = np.sum((curve(x, *popt) - y) ** 2)
    np.testing.assert_allclose(fit.residual_sum_of_squares, ssr, rtol=1e-9)

    # The same from a FunctionObjective with the residual form.
    residuals = lambda w: w[0] * tf.exp(-w[1] * x) + w[2] - y  # noqa: E731
    objective = FunctionObjective(
        lambda w: 0.5 * tf.reduce_sum(residuals(w) ** 2), 3, "float64", residuals=residuals
    )
    direct = uncertainty.covariance(objective, w=fit.weights)
    np.testing.assert_allclose(direct.covariance, pcov, rtol=1e-8)


def test_prediction_standard_errors_by_the_delta_method(data):
    x, y = data
    model, trainer = fitted_trainer(x, y)
    fit = uncertainty.covariance(trainer, (x[:, None], y[:, None]))
    x_new = np.array([0.0, 0.7, 2.0, 5.0])
    got = uncertainty.prediction_standard_errors(trainer, x_new[:, None], fit)
    jac = curve_jacobian(x_new, *fit.weights)
    want = np.sqrt(np.einsum("nm,ml,nl->n", jac, fit.covariance, jac))
    assert got.shape == (4, 1)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-9)


def test_refusals():
    keras.config.set_floatx("float64")
    model = keras.Sequential([keras.Input((1,)), ExponentialDecay()])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mae")
    x = np.linspace(0, 1, 5)[:, None]
    with pytest.raises(ValueError, match='loss="mse"'):
        uncertainty.covariance(trainer, (x, x))
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    with pytest.raises(ValueError, match="Argument `data` is required"):
        uncertainty.covariance(trainer)
    with pytest.raises(ValueError, match=r"N=3, m=3"):
        uncertainty.covariance(trainer, (x[:3], x[:3]))
    with pytest.raises(ValueError, match="Argument `trainer_or_objective`"):
        uncertainty.covariance("model")
