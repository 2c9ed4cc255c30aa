"""Bayesian regularization on top of Levenberg-Marquardt (MATLAB's trainbr)."""

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo.solvers.levenberg_marquardt import NOT_FINITE
from keras_gdzoo.solvers.levenberg_marquardt import LevenbergMarquardt
from keras_gdzoo.solvers.levenberg_marquardt import _DenseTerms


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class BayesianRegularization(LevenbergMarquardt):
    """Levenberg-Marquardt with Bayesian regularization (MATLAB's `trainbr`).

    Minimizes F(w) = beta E_D + alpha E_W, with E_D = sum of squared errors
    over the N residuals and E_W = w'w, and re-estimates the
    hyper-parameters after every iteration (MacKay 1992; Foresee & Hagan
    1997):

        gamma = m - 2 alpha tr(H^-1),   H = 2 beta J'J + 2 alpha I,
        alpha = gamma / (2 E_W(w)),      beta = (N - gamma) / (2 E_D(w)),

    gamma being the effective number of parameters. Starting from alpha = 0,
    beta = 1 (the first iteration is plain LM). Each LM iteration is the
    parent class's on F: in the lecture's scaling, E + lambda/2 w'w with
    lambda = alpha / (beta n), so g + lambda w and A + lambda I replace g
    and A.

    Args: those of `LevenbergMarquardt`.

    Logs: `LevenbergMarquardt`'s and `gamma`, `alpha`, `beta`.

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.BayesianRegularization(), loss="mse")
    >>> history = trainer.fit(x, y, batch_size=len(x), epochs=5, verbose=0)
    >>> 0 < history.history["gamma"][-1] <= 16  # effective parameters of 16
    True

    Note:
        * For the mean squared error (or a `FunctionObjective` with
          residuals); the Gauss-Newton system is always solved in parameter
          space (H's trace needs the m x m matrix).
        * trainbr scales inputs and targets to [-1, 1]; here the data are
          used as given.
        * A hyper-parameter update that is not finite (E_W = 0, E_D = 0,
          N <= gamma) keeps the previous alpha and beta.

    References:
        MacKay, D. J. C. (1992). Bayesian interpolation. Neural Computation
        4(3), 415-447.
        Foresee, F. D. & Hagan, M. T. (1997). Gauss-Newton approximation to
        Bayesian learning. Proc. International Conference on Neural
        Networks, 1930-1935.
    """

    def state_spec(self, size, dtype):
        spec = super().state_spec(size, dtype)
        spec["alpha"] = ([], 0.0)
        spec["beta"] = ([], 1.0)
        return spec

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        dtype = w.dtype
        size = w.shape[0]
        energy, gradient, matrix = objective.gauss_newton(w)
        energy = tf.cast(energy, dtype)
        gradient = tf.cast(gradient, dtype)
        matrix = curvature.symmetrize(tf.cast(matrix, dtype))
        value = tf.cast(objective.value(w), dtype)
        # Compiled-loss units per unit of the lecture's E (2/K for "mse").
        units = tf.where(energy > 0, value / tf.where(energy > 0, energy, 1.0), 1.0)
        count = tf.cast(getattr(objective, "count", 1.0), dtype)
        residual_count = _residual_count(objective, w, dtype)
        alpha = tf.cast(state["alpha"], dtype)
        beta = tf.cast(state["beta"], dtype)
        penalty = alpha / (beta * count)  # lambda

        def regularized(t):
            return tf.cast(objective.value(t), dtype) + units * 0.5 * penalty * tf.reduce_sum(t * t)

        half_norm = 0.5 * tf.reduce_sum(w * w)
        identity = tf.eye(size, dtype=dtype)
        terms = _DenseTerms(
            energy + penalty * half_norm,
            gradient + penalty * w,
            matrix + penalty * identity,
        )
        new_w, new_state, logs = self._iterate(
            w, state, value + units * penalty * half_norm, regularized, terms, False, objective
        )
        # E_D and E_W at the new point, from the loss the iteration kept.
        data_value = new_state["loss"] - units * 0.5 * penalty * tf.reduce_sum(new_w * new_w)
        sum_of_squares = 2.0 * count * data_value / units
        weight_norm = tf.reduce_sum(new_w * new_w)
        damped = tf.cast(matrix + penalty * identity, tf.float64)
        factor = tf.linalg.cholesky(damped)
        inverse_factor = tf.linalg.triangular_solve(factor, tf.eye(size, dtype=tf.float64))
        trace = tf.cast(tf.reduce_sum(inverse_factor * inverse_factor), dtype)
        gamma = tf.where(penalty > 0, size - penalty * trace, tf.cast(size, dtype))
        gamma = tf.clip_by_value(gamma, 0.0, float(size))
        new_alpha = gamma / (2.0 * weight_norm)
        new_beta = (residual_count - gamma) / (2.0 * sum_of_squares)
        update = (
            tf.math.is_finite(new_alpha)
            & tf.math.is_finite(new_beta)
            & (new_alpha >= 0)
            & (new_beta > 0)
            & (logs["status"] != NOT_FINITE)
        )
        new_state = dict(new_state)
        new_state["alpha"] = tf.where(update, new_alpha, alpha)
        new_state["beta"] = tf.where(update, new_beta, beta)
        new_state["point_known"] = tf.zeros([], dtype)
        logs = dict(logs)
        logs["gamma"] = tf.where(tf.math.is_finite(gamma), gamma, tf.zeros_like(gamma))
        logs["alpha"] = new_state["alpha"]
        logs["beta"] = new_state["beta"]
        return new_w, new_state, logs


def _residual_count(objective, w, dtype):
    """N, the number of residuals of the current batch."""
    residuals = getattr(objective, "residuals", None)
    if callable(residuals) and not hasattr(objective, "replica_sum"):
        return tf.cast(tf.size(residuals(w)), dtype)

    def local(x, y, sample_weight):
        return tf.cast(tf.size(y), dtype)

    return objective.replica_sum(local)
