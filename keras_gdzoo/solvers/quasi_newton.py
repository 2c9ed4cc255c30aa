"""Quasi-Newton solvers: BFGS (dense inverse Hessian) and L-BFGS."""

import keras
import numpy as np
import tensorflow as tf

from keras_gdzoo.solvers._line_search_solver import LineSearchSolver
from keras_gdzoo.solvers._line_search_solver import dot
from keras_gdzoo.solvers._line_search_solver import unit_distance_step
from keras_gdzoo.solvers.base import dense_matrix_guard


def _usable_pair(s, y, moved):
    """Whether (s, y) may update the inverse-Hessian approximation: the
    lecture's y's > 0, with a floating-point margin."""
    eps = np.finfo(s.dtype.as_numpy_dtype).eps
    return moved & (dot(s, y) > eps * tf.norm(s) * tf.norm(y))


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class BFGS(LineSearchSolver):
    """The BFGS quasi-Newton method with a dense inverse-Hessian approximation.

        w(tau+1) = w(tau) - a(tau) B(tau) g(tau)

    with g(tau) = dE/dw at w(tau), a(tau) from `line_search` and
    B(tau) ~ H(w(tau))^-1 built from B(0) = I by the lecture's update

        B(tau) = (I - s y'/y's) B(tau-1) (I - y s'/y's) + s s'/y's,
        s = w(tau) - w(tau-1),  y = g(tau) - g(tau-1),

    skipped when y's <= 0 (the update would make B indefinite).

    Args:
        line_search: `"strong-wolfe"` (default, c2 = 0.9), `"exact"`,
            `"armijo"` or a `keras_gdzoo.line_search.LineSearch`.
        name: optional name.
        **kwargs: other `keras.optimizers.Optimizer` arguments.

    State: `inverse_hessian` (B, m x m) and `updates` (updates since B was
    last reset; while it is 0, B = I whatever the matrix holds).
    The m x m matrix makes BFGS refuse models whose B would not fit in
    memory (use `LBFGS` then).

    Logs per step: `step_size`, `evaluations` (objective calls this step),
    `update_skipped` (1.0 when y's <= 0 skipped the update), `restarts`
    (resets of B to I so far), `line_search_failed` (1.0 when the search
    along -B g failed, whether or not the retry along -g succeeded),
    `stop_training` (1.0 when the retry failed too: no move).

    References:
        Broyden (1970), Fletcher (1970), Goldfarb (1970), Shanno (1970);
        Dennis, J. E. & Schnabel, R. B. (1983). Numerical Methods for
        Unconstrained Optimization and Nonlinear Equations.
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        Algorithm 6.1 and eq. 6.17.

    Note: y and s come from the line search's last evaluation, so both
    gradients in y are taken on the same batch. The update is skipped when
    y's <= eps ||s|| ||y|| (the lecture's y's <= 0 with a floating-point
    margin). When -B g is not a descent direction, or the search along it
    fails, B is reset to I and the step is taken along -g (a restart). The
    first trial step is 1, or min(1, 1/||g||) while B = I.

    Example:

    >>> solver = BFGS()
    >>> w, history = solver.minimize(rosenbrock, w0)
    """

    def __init__(self, line_search="strong-wolfe", name=None, **kwargs):
        super().__init__(line_search=line_search, name=name, **kwargs)

    def check_size(self, size, dtype):
        # B and the update being built.
        dense_matrix_guard("BFGS", size, dtype, copies=2)

    def state_spec(self, size, dtype):
        spec = {
            "inverse_hessian": ([size, size], 0.0),
            "updates": ([], 0.0),
            "restarts": ([], 0.0),
        }
        spec.update(self.point_spec(size))
        return spec

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        dtype = w.dtype
        zero = tf.zeros([], dtype)
        value, gradient, evaluations = self.evaluate_start(objective, w, state)
        identity = tf.eye(objective.size, dtype=dtype)
        fresh = state["updates"] <= 0
        inverse_hessian = tf.where(fresh, identity, state["inverse_hessian"])

        direction = -tf.linalg.matvec(inverse_hessian, gradient)
        not_descent = ~(dot(gradient, direction) < 0) & ~fresh
        direction = tf.where(not_descent, -gradient, direction)
        steepest = fresh | not_descent
        initial = tf.where(steepest, unit_distance_step(gradient), tf.ones([], dtype))
        result, direction, first_failed, retried = self.search(
            objective, w, direction, value, gradient, initial, steepest
        )
        restarted = not_descent | retried
        inverse_hessian = tf.where(restarted, identity, inverse_hessian)
        updates = tf.where(restarted, zero, state["updates"])

        s = result.step * direction
        y = result.gradient - gradient
        usable = _usable_pair(s, y, ~result.failed)
        updated = _bfgs_update(inverse_hessian, s, y)
        inverse_hessian = tf.where(usable, updated, inverse_hessian)
        updates = tf.where(usable, updates + 1.0, updates)

        w_new = self.move(w, result, direction)
        restarts = state["restarts"] + tf.cast(restarted, dtype)
        new_state = {
            "inverse_hessian": inverse_hessian,
            "updates": updates,
            "restarts": restarts,
        }
        new_state.update(self.remember_point(w_new, result))
        logs = self.common_logs(dtype, result, evaluations, first_failed)
        logs.update({"update_skipped": tf.cast(~usable, dtype), "restarts": restarts})
        return w_new, new_state, logs


def _bfgs_update(inverse_hessian, s, y):
    """(I - rho s y') B (I - rho y s') + rho s s' with rho = 1/y's, expanded
    as B - rho (s (By)' + (By) s') + (rho^2 y'By + rho) s s' for symmetric
    B: two outer products instead of two m x m matrix products."""
    rho = 1.0 / dot(y, s)
    hy = tf.linalg.matvec(inverse_hessian, y)
    outer = lambda a, b: a[:, None] * b[None, :]
    return (
        inverse_hessian
        - rho * (outer(s, hy) + outer(hy, s))
        + (rho * rho * dot(y, hy) + rho) * outer(s, s)
    )


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class LBFGS(LineSearchSolver):
    """Limited-memory BFGS.

        w(tau+1) = w(tau) - a(tau) B(tau) g(tau)

    where B(tau) g(tau) is computed without forming B(tau): B(tau) is the
    lecture's BFGS update applied, oldest first, for the last `history`
    pairs s(i) = w(i+1) - w(i), y(i) = g(i+1) - g(i), starting from
    B0 = gamma I with gamma = s'y / y'y of the newest pair (Nocedal & Wright,
    eq. 7.20). The two-loop recursion (Algorithm 7.4), with rho(i) = 1/y(i)'s(i):

        q = g
        for i = newest ... oldest:  alpha(i) = rho(i) s(i)'q ;  q -= alpha(i) y(i)
        r = gamma q
        for i = oldest ... newest:  b = rho(i) y(i)'r ;  r += s(i) (alpha(i) - b)
        B g = r

    Args:
        history: how many (s, y) pairs are kept, an integer >= 1.
        line_search: `"strong-wolfe"` (default, c2 = 0.9), `"exact"`,
            `"armijo"` or a `keras_gdzoo.line_search.LineSearch`.
        name: optional name.
        **kwargs: other `keras.optimizers.Optimizer` arguments.

    State: `s_history` and `y_history` (a ring buffer of `history` x m),
    `pairs` (how many slots hold a pair) and `head` (the slot the next pair
    goes to), so memory is 2 * history * m numbers.

    Logs per step: `step_size`, `evaluations` (objective calls this step),
    `update_skipped` (1.0 when y's <= 0 kept the pair out of the memory),
    `restarts` (memory resets so far), `line_search_failed` (1.0 when the
    search along -B g failed, whether or not the retry along -g succeeded),
    `stop_training` (1.0 when the retry failed too: no move).

    References:
        Nocedal, J. (1980). Updating quasi-Newton matrices with limited
        storage. Mathematics of Computation 35(151).
        Liu, D. C. & Nocedal, J. (1989). On the limited memory BFGS method
        for large scale optimization. Mathematical Programming 45.
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        Algorithms 7.4 and 7.5, eq. 7.20.

    Note: a pair with y's <= eps ||s|| ||y|| is not stored. When -B g is not
    a descent direction, or the search along it fails, the memory is
    cleared and the step is taken along -g (a restart). The first trial
    step is 1, or min(1, 1/||g||) while the memory is empty (as SciPy's
    L-BFGS-B and torch.optim.LBFGS do).

    Example:

    >>> solver = LBFGS(history=20)
    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=solver, loss="mse")
    """

    def __init__(self, history=10, line_search="strong-wolfe", name=None, **kwargs):
        if (
            isinstance(history, bool)
            or not isinstance(history, (int, np.integer))
            or history < 1
        ):
            raise ValueError(
                f"Argument `history` must be an integer >= 1. Received: history={history!r}"
            )
        super().__init__(line_search=line_search, name=name, **kwargs)
        self.history = int(history)

    def get_config(self):
        config = super().get_config()
        config["history"] = self.history
        return config

    def state_spec(self, size, dtype):
        spec = {
            "s_history": ([self.history, size], 0.0),
            "y_history": ([self.history, size], 0.0),
            "pairs": ([], 0.0),
            "head": ([], 0.0),
            "restarts": ([], 0.0),
        }
        spec.update(self.point_spec(size))
        return spec

    def inverse_hessian_product(self, gradient, s_history, y_history, pairs, head):
        """B g by the two-loop recursion over the `pairs` newest pairs of
        the ring buffer, the newest in slot `head - 1`; g itself when empty."""
        dtype = gradient.dtype
        size = self.history
        pairs = tf.cast(pairs, tf.int32)
        head = tf.cast(head, tf.int32)
        # i-th newest pair. tf.gather, not s_history[k]: XLA compiles a slice
        # at a computed index for each value of the index.
        pair = lambda i: (
            tf.gather(s_history, (head - 1 - i) % size),
            tf.gather(y_history, (head - 1 - i) % size),
        )

        def backward(i, q, alphas):
            s, y = pair(i)
            alpha = dot(s, q) / dot(y, s)
            return (
                i + 1,
                q - alpha * y,
                alphas + alpha * tf.one_hot(i, size, dtype=dtype),
            )

        _, q, alphas = tf.while_loop(
            lambda i, q, alphas: i < pairs,
            backward,
            (tf.constant(0), gradient, tf.zeros([size], dtype)),
            maximum_iterations=size,
        )
        s_new, y_new = pair(0)
        gamma = tf.where(
            pairs > 0, dot(s_new, y_new) / dot(y_new, y_new), tf.ones([], dtype)
        )
        gamma = tf.where(tf.math.is_finite(gamma), gamma, tf.ones([], dtype))

        def forward(i, r):
            s, y = pair(i)
            b = dot(y, r) / dot(y, s)
            return i - 1, r + s * (tf.gather(alphas, i) - b)

        _, r = tf.while_loop(
            lambda i, r: i >= 0,
            forward,
            (pairs - 1, gamma * q),
            maximum_iterations=size,
        )
        return r

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        dtype = w.dtype
        zero = tf.zeros([], dtype)
        value, gradient, evaluations = self.evaluate_start(objective, w, state)
        pairs, head = state["pairs"], state["head"]
        fresh = pairs <= 0

        direction = -self.inverse_hessian_product(
            gradient, state["s_history"], state["y_history"], pairs, head
        )
        not_descent = ~(dot(gradient, direction) < 0) & ~fresh
        direction = tf.where(not_descent, -gradient, direction)
        steepest = fresh | not_descent
        initial = tf.where(steepest, unit_distance_step(gradient), tf.ones([], dtype))
        result, direction, first_failed, retried = self.search(
            objective, w, direction, value, gradient, initial, steepest
        )
        restarted = not_descent | retried
        pairs = tf.where(restarted, zero, pairs)
        head = tf.where(restarted, zero, head)

        s = result.step * direction
        y = result.gradient - gradient
        usable = _usable_pair(s, y, ~result.failed)
        index = tf.reshape(tf.cast(head, tf.int32), [1, 1])
        s_history = tf.where(
            usable,
            tf.tensor_scatter_nd_update(state["s_history"], index, s[None]),
            state["s_history"],
        )
        y_history = tf.where(
            usable,
            tf.tensor_scatter_nd_update(state["y_history"], index, y[None]),
            state["y_history"],
        )
        pairs = tf.where(usable, tf.minimum(pairs + 1.0, float(self.history)), pairs)
        head = tf.where(usable, tf.math.floormod(head + 1.0, float(self.history)), head)

        w_new = self.move(w, result, direction)
        restarts = state["restarts"] + tf.cast(restarted, dtype)
        new_state = {
            "s_history": s_history,
            "y_history": y_history,
            "pairs": pairs,
            "head": head,
            "restarts": restarts,
        }
        new_state.update(self.remember_point(w_new, result))
        logs = self.common_logs(dtype, result, evaluations, first_failed)
        logs.update({"update_skipped": tf.cast(~usable, dtype), "restarts": restarts})
        return w_new, new_state, logs
