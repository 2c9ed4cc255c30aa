"""Quasi-Newton solvers: BFGS (dense inverse Hessian) and L-BFGS."""

import keras
import numpy as np
import tensorflow as tf

from keras_gdzoo import validation
from keras_gdzoo.solvers._line_search_solver import LineSearchSolver
from keras_gdzoo.solvers._line_search_solver import Proposal
from keras_gdzoo.solvers._line_search_solver import count_restarts
from keras_gdzoo.solvers._line_search_solver import dot
from keras_gdzoo.solvers._line_search_solver import unit_distance_step
from keras_gdzoo.solvers.base import _available_memory
from keras_gdzoo.solvers.base import dense_matrix_guard


def _quasi_newton_proposal(direction, gradient, fresh, memo, first_step=unit_distance_step):
    """d = -B g, or -g when B g is not a descent direction (a restart);
    the first trial step is 1, or `first_step(g)` along -g."""
    not_descent = ~(dot(gradient, direction) < 0) & ~fresh
    steepest = fresh | not_descent
    return Proposal(
        direction=tf.where(not_descent, -gradient, direction),
        initial_step=tf.where(
            steepest, first_step(gradient), tf.ones([], gradient.dtype)
        ),
        steepest=steepest,
        restart=not_descent,
        memo=memo,
    )


def _unit_move_step(gradient):
    """1/||g||: the first step along -g moves w by 1 (L-BFGS-B's first
    trial; the line search caps steps at 1e10)."""
    return 1.0 / tf.norm(gradient)


def _usable_pair(outcome):
    """Whether (s, y) of a step that moved may update the inverse-Hessian
    approximation: the lecture's y's > 0, with a floating-point margin."""
    s, y = outcome.s, outcome.y
    eps = np.finfo(s.dtype.as_numpy_dtype).eps
    return ~outcome.result.failed & (dot(s, y) > eps * tf.norm(s) * tf.norm(y))


def _pair_logs(memory, usable):
    return {
        "update_skipped": tf.cast(~usable, memory["restarts"].dtype),
        "restarts": memory["restarts"],
    }


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
        **kwargs: the `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `use_ema`, ...) are refused by name: a solver cannot honour them.

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

    >>> rosenbrock = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
    >>> w0 = tf.constant([-1.2, 1.0], tf.float64)
    >>> w, history = BFGS().minimize(rosenbrock, w0, iterations=100)
    >>> np.round(w.numpy(), 6)
    array([1., 1.])
    """

    def __init__(self, line_search="strong-wolfe", name=None, **kwargs):
        super().__init__(line_search=line_search, name=name, **kwargs)

    def check_size(self, size, dtype):
        # B and the update being built.
        dense_matrix_guard("BFGS", size, dtype, copies=2)

    def memory_spec(self, size, dtype):
        return {
            "inverse_hessian": ([size, size], 0.0),
            "updates": ([], 0.0),
            "restarts": ([], 0.0),
        }

    def direction(self, value, gradient, state, objective):
        identity = tf.eye(objective.size, dtype=gradient.dtype)
        fresh = state["updates"] <= 0
        inverse_hessian = tf.where(fresh, identity, state["inverse_hessian"])
        return _quasi_newton_proposal(
            -tf.linalg.matvec(inverse_hessian, gradient),
            gradient,
            fresh,
            memo={"inverse_hessian": inverse_hessian, "identity": identity},
        )

    def update_memory(self, state, proposal, outcome):
        restarted = outcome.restarted
        inverse_hessian = tf.where(
            restarted, proposal.memo["identity"], proposal.memo["inverse_hessian"]
        )
        updates = tf.where(restarted, tf.zeros_like(state["updates"]), state["updates"])
        usable = _usable_pair(outcome)
        updated = _bfgs_update(inverse_hessian, outcome.s, outcome.y)
        memory = {
            "inverse_hessian": tf.where(usable, updated, inverse_hessian),
            "updates": tf.where(usable, updates + 1.0, updates),
            "restarts": count_restarts(state, outcome),
        }
        return memory, _pair_logs(memory, usable)


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
    eq. 7.20): the matrix of the two-loop recursion (Algorithm 7.4), with
    rho(i) = 1/y(i)'s(i),

        q = g
        for i = newest ... oldest:  alpha(i) = rho(i) s(i)'q ;  q -= alpha(i) y(i)
        r = gamma q
        for i = oldest ... newest:  b = rho(i) y(i)'r ;  r += s(i) (alpha(i) - b)
        B g = r

    computed from its compact representation (Byrd, Nocedal & Schnabel
    1994; see `inverse_hessian_product`): the same vector in a few dense
    products, with no sequential loop (measured 4x cheaper per iteration
    in a TensorFlow graph, `benchmarks/bench_fullbatch.py`).

    Args:
        history: how many (s, y) pairs are kept, an integer >= 1.
        line_search: `"more-thuente"` (default: Moré & Thuente's strong
            Wolfe search with c1 = 1e-3, c2 = 0.9, xtol = 0.1, at most 20
            evaluations, as SciPy's L-BFGS-B), `"strong-wolfe"`, `"exact"`,
            `"armijo"` or a `keras_gdzoo.line_search.LineSearch`.
        name: optional name.
        **kwargs: the `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `use_ema`, ...) are refused by name: a solver cannot honour them.

    State: `s_history` and `y_history` (a ring buffer of `history` x m),
    `pairs` (how many slots hold a pair) and `head` (the slot the next pair
    goes to), so memory is 2 * history * m numbers; a `history` whose
    buffers would not fit in memory is refused before anything is allocated.

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
        Byrd, R. H., Nocedal, J. & Schnabel, R. B. (1994). Representations
        of quasi-Newton matrices and their use in limited memory methods.
        Mathematical Programming 63.
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        Algorithms 7.4 and 7.5, eq. 7.20.

    Note: a pair with y's <= eps ||s|| ||y|| is not stored. When -B g is not
    a descent direction, or the search along it fails, the memory is
    cleared and the step is taken along -g (a restart). The first trial
    step is 1, or 1/||g|| while the memory is empty (a first move of length
    1, as SciPy's L-BFGS-B). With the default search, the iterates are
    those of SciPy's `minimize(method="L-BFGS-B", options={"maxcor":
    history})` on an unconstrained problem, to rounding (L-BFGS-B computes
    B g from the compact representation of Byrd, Nocedal & Schnabel (1994),
    the same matrix in exact arithmetic).

    Example:

    >>> solver = LBFGS(history=20)
    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=solver, loss="mse")
    """

    def __init__(self, history=10, line_search="more-thuente", name=None, **kwargs):
        history = validation.integer("history", history, minimum=1)
        super().__init__(line_search=line_search, name=name, **kwargs)
        self.history = history

    def check_size(self, size, dtype, budget_bytes=None):
        # The s and y ring buffers, 2 * history * m numbers.
        needed = 2 * self.history * size * tf.as_dtype(dtype).size
        if budget_bytes is None:
            budget_bytes = _available_memory() // 2
        if needed > budget_bytes:
            raise ValueError(
                f"LBFGS with history={self.history} needs 2 x {self.history} x "
                f"{size} numbers (the s and y histories) for a model with m={size} "
                f"trainable weights: {needed / 2**30:.1f} GiB, more than the "
                f"{budget_bytes / 2**30:.1f} GiB allowed. Use a smaller `history`."
            )

    def get_config(self):
        config = super().get_config()
        config["history"] = self.history
        return config

    def memory_spec(self, size, dtype):
        return {
            "s_history": ([self.history, size], 0.0),
            "y_history": ([self.history, size], 0.0),
            "pairs": ([], 0.0),
            "head": ([], 0.0),
            "restarts": ([], 0.0),
        }

    def inverse_hessian_product(self, gradient, s_history, y_history, pairs, head):
        """B g over the `pairs` newest pairs of the ring buffer (the newest
        in slot `head - 1`), from the compact representation; g itself when
        the buffer is empty.

        With S, Y the pairs as rows, oldest first, R the upper triangle of
        S Y' (R_ij = s(i)'y(j), i <= j), D its diagonal, a = S g, b = Y g:

            u = R^-1 a
            p = R^-T ((D + gamma Y Y') u - gamma b)
            B g = gamma g + S'p - gamma Y'u

        (Byrd, Nocedal & Schnabel 1994: the matrix of the two-loop recursion,
        Nocedal & Wright Algorithm 7.4, in a few dense products and two
        k x k triangular solves instead of 2k sequential steps.)
        The products are taken on the ring buffer as it lies (no m-sized
        copy); only the k x k and k-sized results are put in order. Slots
        not in use count as zero pairs, with 1 on R's diagonal.
        """
        dtype = gradient.dtype
        size = self.history
        pairs = tf.cast(pairs, tf.int32)
        head = tf.cast(head, tf.int32)
        slot = tf.range(size)
        oldest_first = (head - pairs + slot) % size  # ring slot of the j-th oldest
        used = tf.cast(slot < pairs, dtype)
        in_order = lambda v: tf.gather(v, oldest_first) * used
        square = lambda a: (
            tf.gather(tf.gather(a, oldest_first), oldest_first, axis=1)
            * used[:, None] * used[None, :]
        )
        sy = square(tf.matmul(s_history, y_history, transpose_b=True))
        yy = square(tf.matmul(y_history, y_history, transpose_b=True))
        a = in_order(tf.linalg.matvec(s_history, gradient))[:, None]
        b = in_order(tf.linalg.matvec(y_history, gradient))[:, None]
        # tf.gather, not sy[i, i]: XLA compiles a slice at a computed index
        # for each value of the index.
        newest = tf.maximum(pairs - 1, 0)
        sy_diagonal = tf.linalg.diag_part(sy)
        gamma = tf.where(
            pairs > 0,
            tf.gather(sy_diagonal, newest) / tf.gather(tf.linalg.diag_part(yy), newest),
            tf.ones([], dtype),
        )
        gamma = tf.where(tf.math.is_finite(gamma), gamma, tf.ones([], dtype))
        r = tf.linalg.band_part(sy, 0, -1) + tf.linalg.diag(1.0 - used)
        u = tf.linalg.triangular_solve(r, a, lower=False)
        v = sy_diagonal[:, None] * u + gamma * (tf.matmul(yy, u) - b)
        p = tf.linalg.triangular_solve(r, v, lower=False, adjoint=True)
        # Back to ring order: slot i holds the pair at position (i - oldest).
        position = (slot - head + pairs) % size
        in_ring = lambda v: tf.gather(v[:, 0], position)
        return (
            gamma * gradient
            + tf.linalg.matvec(s_history, in_ring(p), transpose_a=True)
            - gamma * tf.linalg.matvec(y_history, in_ring(u), transpose_a=True)
        )

    def direction(self, value, gradient, state, objective):
        pairs, head = state["pairs"], state["head"]
        return _quasi_newton_proposal(
            -self.inverse_hessian_product(
                gradient, state["s_history"], state["y_history"], pairs, head
            ),
            gradient,
            fresh=pairs <= 0,
            memo={},
            first_step=_unit_move_step,
        )

    def update_memory(self, state, proposal, outcome):
        zero = tf.zeros_like(state["pairs"])
        pairs = tf.where(outcome.restarted, zero, state["pairs"])
        head = tf.where(outcome.restarted, zero, state["head"])
        usable = _usable_pair(outcome)
        index = tf.reshape(tf.cast(head, tf.int32), [1, 1])
        store = lambda history, new: tf.where(
            usable, tf.tensor_scatter_nd_update(history, index, new[None]), history
        )
        memory = {
            "s_history": store(state["s_history"], outcome.s),
            "y_history": store(state["y_history"], outcome.y),
            "pairs": tf.where(
                usable, tf.minimum(pairs + 1.0, float(self.history)), pairs
            ),
            "head": tf.where(
                usable, tf.math.floormod(head + 1.0, float(self.history)), head
            ),
            "restarts": count_restarts(state, outcome),
        }
        return memory, _pair_logs(memory, usable)
