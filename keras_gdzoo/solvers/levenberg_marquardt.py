"""The Levenberg-Marquardt method."""

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver
from keras_gdzoo.solvers.base import dense_matrix_guard


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class LevenbergMarquardt(Solver):
    """Levenberg-Marquardt: Gauss-Newton steps with adaptive damping.

    For the quadratic loss E(w) = 1/(2n) sum_i e_i(w)'e_i(w), with J_i the
    K x m Jacobian of the error e_i of example i, one iteration is

        w(tau+1) = w(tau) - (mu I + 1/n sum_i J_i'J_i)^-1 (1/n sum_i J_i'e_i)

    and the damping mu (`damping`) adapts: a step that lowers E is kept and
    mu *= `damping_decrease`; a step that does not lower E (or gives a
    non-finite E) is undone, mu *= `damping_increase` and the step is solved
    again, at most `attempts` times per iteration. Small mu gives Newton's
    method on the Gauss-Newton approximation of the Hessian, large mu
    gradient descent with learning rate 1/mu. Training stops (`stop_training`
    in the logs) once mu exceeds `max_damping`: no step lowers the loss.

    Each fit batch is one iteration (batch mode with `batch_size=len(x)`,
    mini-batch mode otherwise). The state is mu alone, kept in an optimizer
    variable, so a resumed run continues with the same damping.

    Args:
        damping: mu at the first iteration, > 0.
        damping_decrease: factor applied to mu after a step that lowers E,
            in (0, 1).
        damping_increase: factor applied to mu after a step that does not,
            > 1.
        max_damping: training stops once mu exceeds it; > damping.
        attempts: most trial steps per iteration, an integer >= 1.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments.

    Logs: `damping` (mu after the iteration), `attempts` (trial steps
    solved in this iteration), `accepted` (1.0 when a step was kept).

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.LevenbergMarquardt(), loss="mse")
    >>> trainer.fit(x, y, batch_size=len(x), epochs=20)

    Note:
        * Mean squared error uses the lecture's scaling above (g and A of
          1/(2n) sum e'e); Keras's "mse" is 1/(nK) sum e^2, proportional, so
          steps are accepted by comparing the compiled loss (which also
          counts regularization penalties, absent from g and A).
        * The cross-entropies use the generalized Gauss-Newton matrix
          1/n sum J_i' H_i J_i with H_i the Hessian of the loss of example i
          with respect to the model output (Schraudolph, 2002); see
          `keras_gdzoo.curvature`. Other losses are refused.
        * When n*K < m (fewer residuals than weights) the step is solved in
          sample space, J'(n mu I + J J')^-1 e, an (nK) x (nK) system (single
          replica only). The linear systems are solved by Cholesky
          factorization, in float64 for float32 models; when that fails (mu
          too small for the round-off in A), the attempt counts as a
          rejected step and mu rises to at least eps * trace(A) besides the
          factor `damping_increase`.
        * mu never falls below the smallest normal number of the dtype, so
          `damping_increase` can always raise it again.

    References:
        Levenberg, K. (1944). A method for the solution of certain non-linear
        problems in least squares. Quarterly of Applied Mathematics 2(2).
        Marquardt, D. W. (1963). An algorithm for least-squares estimation of
        nonlinear parameters. SIAM J. Applied Mathematics 11(2).
        Hagan, M. T. & Menhaj, M. B. (1994). Training feedforward networks
        with the Marquardt algorithm. IEEE Trans. Neural Networks 5(6).
    """

    needs_curvature = True
    stop_message = (
        "the damping exceeded max_damping: no step lowers the loss (a minimum, "
        "or a loss the model cannot lower)"
    )

    def __init__(
        self,
        damping=1e-3,
        damping_decrease=0.1,
        damping_increase=10.0,
        max_damping=1e10,
        attempts=10,
        name=None,
        **kwargs,
    ):
        _check_number("damping", damping)
        if not damping > 0:
            raise ValueError(f"Argument `damping` must be > 0. Received: damping={damping}")
        _check_number("damping_decrease", damping_decrease)
        if not 0 < damping_decrease < 1:
            raise ValueError(
                "Argument `damping_decrease` must be in (0, 1). "
                f"Received: damping_decrease={damping_decrease}"
            )
        _check_number("damping_increase", damping_increase)
        if not damping_increase > 1:
            raise ValueError(
                "Argument `damping_increase` must be > 1. "
                f"Received: damping_increase={damping_increase}"
            )
        _check_number("max_damping", max_damping)
        if not max_damping > damping:
            raise ValueError(
                f"Argument `max_damping` must be > damping={damping}. "
                f"Received: max_damping={max_damping}"
            )
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(
                f"Argument `attempts` must be an integer >= 1. Received: attempts={attempts}"
            )
        super().__init__(name=name, **kwargs)
        self.damping = float(damping)
        self.damping_decrease = float(damping_decrease)
        self.damping_increase = float(damping_increase)
        self.max_damping = float(max_damping)
        self.attempts = attempts

    def get_config(self):
        config = super().get_config()
        config.update(
            damping=self.damping,
            damping_decrease=self.damping_decrease,
            damping_increase=self.damping_increase,
            max_damping=self.max_damping,
            attempts=self.attempts,
        )
        return config

    def state_spec(self, size, dtype):
        return {"damping": ([], self.damping)}

    def check_size(self, size, dtype):
        # The matrix, and the damped copy and its Cholesky factor, which are
        # float64 (two float32-sized matrices each) for narrower dtypes.
        copies = 1 + 2 * max(1, 8 // tf.as_dtype(dtype).size)
        dense_matrix_guard("LevenbergMarquardt", size, dtype, copies=copies)

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        dtype = w.dtype
        value = objective.value(w)
        damping = tf.cast(state["damping"], dtype)

        def in_parameter_space():
            _, gradient, matrix = objective.gauss_newton(w)
            system = curvature.DenseSystem(curvature.symmetrize(matrix), gradient)
            return self._attempt_steps(w, value, damping, system, objective)

        def in_sample_space():
            _, _, system = objective.gauss_newton_sample_space(w)
            return self._attempt_steps(w, value, damping, system, objective)

        prefers = getattr(objective, "prefers_sample_space", None)
        use_sample_space = prefers(w) if prefers is not None else False
        if isinstance(use_sample_space, bool):
            branch = in_sample_space if use_sample_space else in_parameter_space
            new_w, new_damping, attempts, accepted = branch()
        else:
            new_w, new_damping, attempts, accepted = tf.cond(
                use_sample_space, in_sample_space, in_parameter_space
            )
        logs = {
            "damping": new_damping,
            "attempts": tf.cast(attempts, dtype),
            "accepted": tf.cast(accepted, dtype),
            STOP: tf.cast(new_damping > self.max_damping, dtype),
        }
        return new_w, {"damping": new_damping}, logs

    def _attempt_steps(self, w, value, damping, system, objective):
        """Try damped steps until one lowers E; returns (w, mu, tries, ok)."""
        dtype = w.dtype
        smallest = tf.constant(curvature.smallest_normal(dtype), dtype)
        eps = tf.constant(curvature.machine_epsilon(dtype), dtype)
        factorization_floor = eps * tf.abs(system.trace)

        def keep_going(tries, mu, accepted, new_w):
            return (~accepted) & (tries < self.attempts) & (mu <= self.max_damping)

        def attempt(tries, mu, accepted, new_w):
            delta, solved = system.solve(mu)
            trial = w - delta
            trial_value = tf.cond(
                solved,
                lambda: tf.cast(objective.value(trial), dtype),
                lambda: tf.constant(float("nan"), dtype),
            )
            lowered = solved & tf.math.is_finite(trial_value) & (trial_value < value)
            raised = mu * self.damping_increase
            raised = tf.where(solved, raised, tf.maximum(raised, factorization_floor))
            mu = tf.where(lowered, tf.maximum(mu * self.damping_decrease, smallest), raised)
            return tries + 1, mu, lowered, tf.where(lowered, trial, w)

        tries, mu, accepted, new_w = tf.while_loop(
            keep_going,
            attempt,
            (tf.constant(0), damping, tf.constant(False), w),
            maximum_iterations=self.attempts,
        )
        return new_w, mu, tries, accepted


def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Argument `{name}` must be a number. Received: {name}={value!r}")
