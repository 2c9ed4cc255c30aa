"""Newton's method with the exact Hessian."""

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver
from keras_gdzoo.solvers.base import dense_matrix_guard

# Increases of the damping tried before giving up: from 1e-8 * ||H||_F, ten
# factors of 10 exceed ||H||_F, beyond which H + damping I is positive
# definite whatever H's eigenvalues.
_MAX_INCREASES = 12


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Newton(Solver):
    """Newton's method (Newton-Raphson) with the exact Hessian.

    From the quadratic model E(w + eps) ~ E(w) + g'eps + 1/2 eps'H eps, with
    g = dE/dw and H the Hessian of the batch loss E, one iteration is

        w(tau+1) = w(tau) - (H(w(tau)) + mu I)^-1 g(w(tau)),

    mu = `damping` (0: the lecture's pure Newton step). When H + mu I is not
    positive definite (its Cholesky factorization fails) the damping is
    raised: mu_1 = max(10 mu, 1e-8 ||H||_F), then x10 until the factorization
    succeeds, so the step is always a descent direction. The damping used is
    reported as `damping` in the logs; it does not carry over to the next
    iteration.

    Args:
        damping: mu >= 0, added to the Hessian's diagonal at every iteration.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments.

    Logs: `damping` (the mu used), `accepted` (1.0 when the step was taken).

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.Newton(), loss="mse")
    >>> trainer.fit(x, y, batch_size=len(x), epochs=10)

    Note:
        * The Hessian costs m backward passes per chunk of examples and m^2
          numbers; models whose m x m matrices would not fit are refused
          before anything is allocated.
        * A step whose loss is not finite (or a Hessian that no damping
          makes positive definite, i.e. a non-finite one) is not taken: the
          weights stay where they were and training stops
          (`stop_training`), as a repeated identical iteration could not do
          better.
        * Weight regularization penalties are not part of g and H on Keras
          models (see `keras_gdzoo.curvature`).

    References:
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        Section 3.4, Algorithm 3.3 (Cholesky with added multiple of the
        identity), p. 51.
    """

    needs_curvature = True
    stop_message = "the Newton step gave a non-finite loss, or the Hessian is not finite"

    def __init__(self, damping=0.0, name=None, **kwargs):
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
            raise ValueError(f"Argument `damping` must be >= 0. Received: damping={damping!r}")
        super().__init__(name=name, **kwargs)
        self.damping = float(damping)

    def get_config(self):
        config = super().get_config()
        config.update(damping=self.damping)
        return config

    def check_size(self, size, dtype):
        # The matrix, and the damped copy and its Cholesky factor, which are
        # float64 (two float32-sized matrices each) for narrower dtypes.
        copies = 1 + 2 * max(1, 8 // tf.as_dtype(dtype).size)
        dense_matrix_guard("Newton", size, dtype, copies=copies)

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        dtype = w.dtype
        _, gradient, hessian = objective.hessian(w)
        hessian = curvature.symmetrize(tf.cast(hessian, dtype))
        gradient = tf.cast(gradient, dtype)
        norm = tf.norm(hessian)
        scale = tf.where(norm > 0, norm, tf.ones_like(norm))
        floor = 1e-8 * scale

        delta, solved = curvature.damped_solve(hessian, gradient, self.damping)

        def not_solved(increases, damping, delta, solved):
            return ~solved

        def raise_damping(increases, damping, delta, solved):
            damping = tf.maximum(10.0 * damping, floor)
            delta, solved = curvature.damped_solve(hessian, gradient, damping)
            return increases + 1, damping, delta, solved

        _, damping, delta, solved = tf.while_loop(
            not_solved,
            raise_damping,
            (tf.constant(0), tf.constant(self.damping, dtype), delta, solved),
            maximum_iterations=_MAX_INCREASES,
        )
        trial = w - delta
        trial_value = tf.cond(
            solved,
            lambda: tf.cast(objective.value(trial), dtype),
            lambda: tf.constant(float("nan"), dtype),
        )
        accepted = solved & tf.math.is_finite(trial_value)
        logs = {
            "damping": damping,
            "accepted": tf.cast(accepted, dtype),
            STOP: tf.cast(~accepted, dtype),
        }
        return tf.where(accepted, trial, w), state, logs
