"""Bayesian regularization on top of Levenberg-Marquardt (MATLAB's trainbr)."""

import inspect

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo import validation
from keras_gdzoo.solvers.levenberg_marquardt import NOT_FINITE
from keras_gdzoo.solvers.levenberg_marquardt import LevenbergMarquardt
from keras_gdzoo.solvers.levenberg_marquardt import _DenseTerms

#: `weight_groups`: one alpha for all weights (trainbr), or one per trainable
#: variable (MacKay 1992b's weight classes).
WEIGHT_GROUPS = ("model", "variable")

#: The default damping rule: the scaled gain-ratio rule, not LM's default
#: (see the class docstring).
DAMPING_RULE = "scaled-gain-ratio"


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class BayesianRegularization(LevenbergMarquardt):
    """Levenberg-Marquardt with Bayesian regularization (MATLAB's `trainbr`).

    Minimizes F(w) = beta E_D + sum_c alpha_c E_c, E_D the sum of squared
    errors over the N residuals and E_c = w_c'w_c the squared norm of group
    c of the weights (k_c of them), and re-estimates the hyper-parameters
    after every iteration (MacKay 1992a, b; Foresee & Hagan 1997):

        H = 2 beta J'J + 2 diag(alpha),  alpha_c on the weights of group c,
        gamma_c = k_c - 2 alpha_c tr_c(H^-1),   gamma = sum_c gamma_c,
        alpha_c = gamma_c / (2 E_c(w)),          beta = (N - gamma) / (2 E_D(w)),

    tr_c the trace over group c's weights; gamma_c is the effective number
    of parameters of the group, gamma of the model. The groups
    (`weight_groups`):

    * `"variable"` (default): one alpha_c per trainable variable (each
      kernel, each bias), MacKay's (1992b) weight classes. One alpha for
      all weights is a prior that depends on the scale of the inputs and
      targets (trainbr makes it work by scaling both to [-1, 1]); with a
      group per variable the evidence sets the scale of each layer, and can
      switch off a group the data do not need (alpha_c large, w_c ~ 0).
    * `"model"`: one alpha for all weights, as trainbr.

    Measured (`benchmarks/bench_bayesian.py`, 1-5-1 tanh network, 41 noisy
    points, 10 noise draws): the test error relative to the best of a
    sweep of fixed penalties E_D + lambda w'w (lambda from 1e-5 to 1, the
    best chosen in hindsight) is 0.51 ("variable") and 0.97 ("model") on
    sin(pi x), 0.92 and 1.03 on sin(pi x + 0.7) + 0.3, 0.40 and 0.99 on
    sin(pi x / 5) with inputs on [-5, 5]. On the two odd functions the
    evidence switches off both biases (gamma ~ 3 of 16), and the errors
    with inputs on [-1, 1] and [-5, 5] are the same, as they should be.

    Starting from alpha = 0, beta = 1 (the first iteration is plain LM).
    Each LM iteration is the parent class's on F: in the lecture's scaling,
    E + 1/2 sum_i lambda_i w_i^2 with lambda_i = alpha_c / (beta n) for the
    group of weight i, so g + lambda w and A + diag(lambda) replace g and A.

    Args:
        weight_groups: `"variable"` or `"model"` (above).
        damping_rule: as `LevenbergMarquardt`'s, default
            `"scaled-gain-ratio"` (not LM's trust-region rule; see the notes).
        *args, **kwargs: the other arguments of `LevenbergMarquardt`.

    Logs: `LevenbergMarquardt`'s, `gamma`, `beta` and, with one group,
    `alpha`; with several, `alpha_0`, `alpha_1`, ... (alpha_c of
    `model.trainable_variables[c]`).

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.BayesianRegularization(), loss="mse")
    >>> history = trainer.fit(x, y, batch_size=len(x), epochs=5, verbose=0)
    >>> 0 < history.history["gamma"][-1] <= 16  # effective parameters of 16
    True
    >>> sorted(key for key in history.history if key.startswith("alpha"))
    ['alpha_0', 'alpha_1', 'alpha_2', 'alpha_3']

    Note:
        * For the mean squared error (or a `FunctionObjective` with
          residuals, one group); the Gauss-Newton system is always solved in
          parameter space (H's trace needs the m x m matrix).
        * gamma is computed from the Gauss-Newton matrix at the iteration's
          starting point, as trainbr, as gamma_c = the sum over group c of
          diag((beta J'J + diag(alpha))^-1 beta J'J), equal to the form
          above without its cancellation when alpha_c is large.
        * trainbr scales inputs and targets to [-1, 1]; here the data are
          used as given.
        * The damping rule defaults to the scaled gain-ratio rule: with the
          trust-region rule (LM's default for factorized solves) the damping
          settles high while alpha and beta move, and on sin(pi x / 5) over
          [-5, 5] (3 noise draws, 300 iterations) 5 of 6 fits had not
          converged, with 3 to 14 times the test error of the gain-ratio
          rule, which converges in 100-230 iterations.
        * A hyper-parameter update that is not finite or not positive
          (E_c = 0, E_D = 0, N <= gamma) keeps the previous value: the alpha
          of a group the evidence switches off grows with each iteration
          until its weights are 0 to round-off, and then stays.

    References:
        MacKay, D. J. C. (1992a). Bayesian interpolation. Neural Computation
        4(3), 415-447.
        MacKay, D. J. C. (1992b). A practical Bayesian framework for
        backpropagation networks. Neural Computation 4(3), 448-472.
        Foresee, F. D. & Hagan, M. T. (1997). Gauss-Newton approximation to
        Bayesian learning. Proc. International Conference on Neural
        Networks, 1930-1935.
    """

    def __init__(self, *args, damping_rule=DAMPING_RULE, weight_groups="variable", **kwargs):
        weight_groups = validation.choice("weight_groups", weight_groups, WEIGHT_GROUPS)
        super().__init__(*args, damping_rule=damping_rule, **kwargs)
        self.weight_groups = weight_groups

    def get_config(self):
        config = super().get_config()
        config["weight_groups"] = self.weight_groups
        return config

    def state_spec(self, size, dtype):
        spec = super().state_spec(size, dtype)
        spec["alpha"] = ([size], 0.0)  # alpha of each weight's group
        spec["beta"] = ([], 1.0)
        return spec

    def group_ids(self, objective, size):
        """The group (0, 1, ...) of each of the `size` weights, a list."""
        sizes = getattr(objective, "sizes", None)
        if self.weight_groups == "model" or not sizes or sum(sizes) != size:
            return [0] * size
        return [index for index, count in enumerate(sizes) for _ in range(count)]

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        dtype = w.dtype
        size = w.shape[0]
        groups = self.group_ids(objective, size)
        group_count = max(groups) + 1
        ids = tf.constant(groups, tf.int32)
        group_sizes = tf.math.segment_sum(tf.ones([size], dtype), ids)
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
        penalty = alpha / (beta * count)  # lambda of each weight

        def regularized(t):
            return tf.cast(objective.value(t), dtype) + units * 0.5 * tf.reduce_sum(penalty * t * t)

        half_norm = 0.5 * tf.reduce_sum(penalty * w * w)
        terms = _DenseTerms(
            energy + half_norm,
            gradient + penalty * w,
            matrix + tf.linalg.diag(penalty),
        )
        new_w, new_state, logs = self._iterate(
            w, state, value + units * half_norm, regularized, terms, False, objective
        )
        # E_D and E_W at the new point, from the loss the iteration kept.
        data_value = new_state["loss"] - units * 0.5 * tf.reduce_sum(penalty * new_w * new_w)
        sum_of_squares = 2.0 * count * data_value / units
        weight_norms = tf.math.segment_sum(new_w * new_w, ids)
        # gamma_c = k_c - lambda_c tr_c((A + P)^-1) = sum over group c of
        # diag((A + P)^-1 A), in [0, k_c]; the second form has no
        # cancellation when lambda_c is large (a group pruned to ~0).
        wide = tf.float64 if dtype.size < 8 else dtype
        factor = tf.linalg.cholesky(tf.cast(matrix + tf.linalg.diag(penalty), wide))
        shares = tf.linalg.diag_part(tf.linalg.cholesky_solve(factor, tf.cast(matrix, wide)))
        shares = tf.where(penalty > 0, tf.cast(shares, dtype), tf.ones_like(penalty))
        group_gammas = tf.clip_by_value(tf.math.segment_sum(shares, ids), 0.0, group_sizes)
        gamma = tf.reduce_sum(group_gammas)
        new_alphas = group_gammas / (2.0 * weight_norms)
        new_beta = (residual_count - gamma) / (2.0 * sum_of_squares)
        update = (
            tf.reduce_all(tf.math.is_finite(group_gammas))
            & tf.math.is_finite(new_beta)
            & (new_beta > 0)
            & (logs["status"] != NOT_FINITE)
        )
        old_alphas = tf.math.segment_max(alpha, ids)
        update_alphas = update & tf.math.is_finite(new_alphas) & (new_alphas > 0)
        alphas = tf.where(update_alphas, new_alphas, old_alphas)
        new_state = dict(new_state)
        new_state["alpha"] = tf.gather(alphas, ids)
        new_state["beta"] = tf.where(update, new_beta, beta)
        new_state["point_known"] = tf.zeros([], dtype)
        logs = dict(logs)
        logs["gamma"] = tf.where(tf.math.is_finite(gamma), gamma, tf.zeros_like(gamma))
        if group_count == 1:
            logs["alpha"] = alphas[0]
        else:
            for index in range(group_count):
                logs[f"alpha_{index}"] = alphas[index]
        logs["beta"] = new_state["beta"]
        return new_w, new_state, logs


def _signature():
    """`LevenbergMarquardt`'s arguments, from `damping_rule` on keyword-only,
    with this class's `damping_rule` default and `weight_groups` (for `help`
    and the documentation)."""
    base = inspect.signature(LevenbergMarquardt.__init__)
    parameters, keyword_only = [], False
    for parameter in base.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            continue
        if parameter.name == "damping_rule":
            keyword_only = True
            parameter = parameter.replace(default=DAMPING_RULE)
        if keyword_only:
            parameter = parameter.replace(kind=parameter.KEYWORD_ONLY)
        parameters.append(parameter)
    groups = inspect.Parameter("weight_groups", inspect.Parameter.KEYWORD_ONLY, default="variable")
    return base.replace(parameters=parameters + [groups, base.parameters["kwargs"]])


BayesianRegularization.__init__.__signature__ = _signature()


def _residual_count(objective, w, dtype):
    """N, the number of residuals of the current batch."""
    residuals = getattr(objective, "residuals", None)
    if callable(residuals) and not hasattr(objective, "replica_sum"):
        return tf.cast(tf.size(residuals(w)), dtype)

    def local(x, y, sample_weight):
        return tf.cast(tf.size(y), dtype)

    return objective.replica_sum(local)
