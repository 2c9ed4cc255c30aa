"""Parameter uncertainty of a least-squares fit: covariance and standard errors.

For residuals e(w) (N numbers) and m weights fitted by least squares, the
usual asymptotic covariance of the fitted weights is

    Cov(w) = sigma^2 (J'J)^-1,   sigma^2 = SSR / (N - m),

with J = de/dw at the fit and SSR = e'e the sum of squared residuals, the
same as `scipy.optimize.curve_fit`'s `pcov` (with `absolute_sigma=False`).
The standard errors are the square roots of its diagonal. For a prediction
y(x, w) at new inputs the delta method gives

    Var(y(x)) = J_x Cov(w) J_x',   J_x = dy(x)/dw.

J'J comes from the Gauss-Newton machinery the solvers use
(`objective.gauss_newton(w)` returns A = J'J / n and E = SSR / (2n) for the
mean squared error, see `keras_gdzoo.curvature`), so it is exact (automatic
differentiation, no finite differences).

Example:

>>> trainer = keras_gdzoo.wrap(model)
>>> trainer.compile(optimizer=keras_gdzoo.LevenbergMarquardt(), loss="mse")
>>> history = trainer.fit(x, y, batch_size=len(x), epochs=50, verbose=0)
>>> fit = keras_gdzoo.uncertainty.covariance(trainer, (x, y))
>>> fit.standard_errors.shape  # one per weight, in trainable_variables order
(16,)
>>> keras_gdzoo.uncertainty.prediction_standard_errors(trainer, x[:3], fit).shape
(3, 1)
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo.solvers.base import FunctionObjective
from keras_gdzoo.solvers.base import Objective


@dataclasses.dataclass
class Covariance:
    """The covariance of fitted least-squares weights.

    Attributes:
        weights: the flat weights w at which it was computed ([m]).
        covariance: sigma^2 (J'J)^-1 ([m, m]).
        standard_errors: sqrt of its diagonal ([m]).
        variance: sigma^2 = SSR / (N - m).
        residual_sum_of_squares: SSR.
        degrees_of_freedom: N - m.
    """

    weights: np.ndarray
    covariance: np.ndarray
    standard_errors: np.ndarray
    variance: float
    residual_sum_of_squares: float
    degrees_of_freedom: int


def covariance(trainer_or_objective, data=None, w=None):
    """Covariance matrix and standard errors of least-squares weights.

    Args:
        trainer_or_objective: a model from `keras_gdzoo.wrap`, compiled with
            the mean squared error (sample weights count as weights of the
            squared residuals); or an `Objective` with a residual form (for
            example `FunctionObjective(..., residuals=...)`, whose E is
            1/2 sum e^2).
        data: `(x, y)` or `(x, y, sample_weight)`, the data of the fit; for
            a model only.
        w: the weights (flat); default the model's current weights, needed
            for an objective.

    Returns:
        A `Covariance`, NumPy float64.

    Raises:
        ValueError: for a model not compiled with the mean squared error, no
            data, or N <= m (no degrees of freedom left for sigma^2).
    """
    objective, w, residual_count = _objective_and_point(trainer_or_objective, data, w)
    energy, _, matrix = objective.gauss_newton(w)
    count = float(getattr(objective, "count", 1.0))
    size = int(objective.size)
    residual_count = int(residual_count)
    dof = residual_count - size
    if dof <= 0:
        raise ValueError(
            "The covariance needs more residuals than weights (N > m) to "
            f"estimate sigma^2 = SSR / (N - m). Received: N={residual_count}, m={size}"
        )
    # A = J'J / n and E = SSR / (2 n) (n = 1 for a FunctionObjective).
    gram = count * np.asarray(curvature.symmetrize(tf.cast(matrix, tf.float64)))
    ssr = 2.0 * count * float(energy)
    variance = ssr / dof
    cov = variance * _inverse(gram)
    return Covariance(
        weights=np.asarray(tf.cast(w, tf.float64)),
        covariance=cov,
        standard_errors=np.sqrt(np.clip(np.diag(cov), 0.0, None)),
        variance=variance,
        residual_sum_of_squares=ssr,
        degrees_of_freedom=dof,
    )


def prediction_standard_errors(trainer, x, fit):
    """Standard errors of the model's predictions at inputs x (delta method).

    Args:
        trainer: the wrapped model `covariance` was computed for.
        x: new inputs (n examples).
        fit: the `Covariance` of its weights.

    Returns:
        NumPy array of the model's output shape, [n, ...]: sqrt of
        J_x Cov J_x' for each output of each example.
    """
    from keras_gdzoo.model import ModelObjective  # a model-only feature

    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    first = tf.nest.flatten(x)[0]
    dummy_y = tf.zeros([tf.shape(first)[0], 1], tf.float64)
    objective = ModelObjective(trainer, (x, dummy_y), tf.distribute.get_strategy())
    w = tf.constant(fit.weights, objective.dtype)
    y_pred, jacobian = curvature.per_example_jacobian(objective.predict, w, x)
    jacobian = np.asarray(tf.cast(jacobian, tf.float64))  # [n, K, m]
    variance = np.einsum("nkm,ml,nkl->nk", jacobian, fit.covariance, jacobian)
    return np.sqrt(np.clip(variance, 0.0, None)).reshape(tuple(y_pred.shape))


def _objective_and_point(trainer_or_objective, data, w):
    if isinstance(trainer_or_objective, Objective):
        objective = trainer_or_objective
        if w is None:
            raise ValueError("Argument `w` is required with an objective. Received: w=None")
        w = tf.convert_to_tensor(w, objective.dtype)
        residuals = getattr(objective, "residuals", None)
        if isinstance(objective, FunctionObjective) and callable(residuals):
            return objective, w, int(tf.size(objective.residuals(w)))
        return objective, w, _model_residual_count(objective)
    if not isinstance(trainer_or_objective, keras.Model):
        raise ValueError(
            "Argument `trainer_or_objective` must be a model from keras_gdzoo.wrap "
            "or a keras_gdzoo Objective. "
            f"Received: trainer_or_objective={trainer_or_objective!r}"
        )
    if data is None:
        raise ValueError("Argument `data` is required with a model: (x, y). Received: data=None")
    from keras_gdzoo.model import ModelObjective  # a model-only feature

    objective = ModelObjective(trainer_or_objective, data, tf.distribute.get_strategy())
    if objective.loss_name != "mean_squared_error":
        raise ValueError(
            "The covariance of least-squares weights needs a model compiled with "
            f'loss="mse". Received: loss={getattr(trainer_or_objective, "loss", None)!r}'
        )
    if w is None:
        w = objective.current()
    w = tf.convert_to_tensor(w, objective.dtype)
    return objective, w, _model_residual_count(objective)


def _model_residual_count(objective):
    def local(x, y, sample_weight):
        return tf.cast(tf.size(y), tf.float64)

    return int(round(float(objective.replica_sum(local))))


def _inverse(matrix):
    """(J'J)^-1 by Cholesky; a singular matrix gives inf, as curve_fit's."""
    try:
        factor = np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return np.full_like(matrix, np.inf)
    inverse_factor = np.linalg.solve(factor, np.eye(len(matrix)))
    return inverse_factor.T @ inverse_factor
