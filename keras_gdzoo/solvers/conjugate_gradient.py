"""Steepest descent and conjugate gradients, each step a line search."""

import keras
import tensorflow as tf

from keras_gdzoo import validation
from keras_gdzoo.solvers._line_search_solver import LineSearchSolver
from keras_gdzoo.solvers._line_search_solver import Proposal
from keras_gdzoo.solvers._line_search_solver import count_restarts
from keras_gdzoo.solvers._line_search_solver import dot
from keras_gdzoo.solvers._line_search_solver import unit_distance_step

_BETAS = ("polak-ribiere", "fletcher-reeves")


def _initial_step(value, previous_value, slope, has_previous, gradient):
    """Nocedal & Wright (2006) eq. 3.60: a0 = 2 (E(tau) - E(tau-1)) / phi'(0),
    the step at which a parabola with this slope drops by as much as E did
    on the last iteration; min(1, 1/||g||) on the first iteration."""
    guess = 2.0 * (value - previous_value) / slope
    usable = has_previous & tf.math.is_finite(guess) & (guess > 0)
    return tf.where(usable, guess, unit_distance_step(gradient))


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class SteepestDescent(LineSearchSolver):
    """Steepest descent with a line search (Cauchy, 1847).

        w(tau+1) = w(tau) - a(tau) g(tau),
        a(tau) = argmin_{a>0} E(w(tau) - a g(tau))

    with g(tau) = dE/dw at w(tau) on the batch and a(tau) found by
    `line_search` (by default the exact minimization along -g, so that
    successive gradients are orthogonal, g(tau+1).g(tau) = 0).

    Args:
        line_search: `"exact"` (default), `"strong-wolfe"`, `"armijo"` or a
            `keras_gdzoo.line_search.LineSearch`.
        name: optional name.
        **kwargs: the `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `use_ema`, ...) are refused by name: a solver cannot honour them.

    Logs per step: `step_size` (a), `evaluations` (objective calls this
    step), `line_search_failed` and `stop_training` (both 1.0 when the
    search failed: the solver does not move, and since d = -g there is
    nothing to retry).

    References:
        Cauchy, A. (1847). Méthode générale pour la résolution des systèmes
        d'équations simultanées. C. R. Acad. Sci. Paris 25.

    Note: the first trial step is Nocedal & Wright's eq. 3.60,
    a0 = 2 (E(tau) - E(tau-1)) / (g.d), and min(1, 1/||g||) on the first
    iteration. With `line_search="exact"` a step is a minimizer to the
    search's tolerance, not exactly argmin.

    Example:

    >>> solver = SteepestDescent()
    >>> w0 = tf.constant([1.0, -2.0], tf.float64)
    >>> w, history = solver.minimize(lambda w: tf.reduce_sum(w**2), w0, iterations=3)
    >>> round(history[1]["step_size"], 6)  # argmin of |w0 - a 2 w0|^2
    0.5
    >>> float(tf.norm(w)) < 1e-6
    True
    """

    def __init__(self, line_search="exact", name=None, **kwargs):
        super().__init__(line_search=line_search, name=name, **kwargs)

    def memory_spec(self, size, dtype):
        return {"previous_value": ([], 0.0), "steps": ([], 0.0)}

    def direction(self, value, gradient, state, objective):
        direction = -gradient
        initial = _initial_step(
            value,
            state["previous_value"],
            dot(gradient, direction),
            state["steps"] > 0,
            gradient,
        )
        return Proposal(direction, initial, steepest=True, restart=False, memo={})

    def update_memory(self, state, proposal, outcome):
        return {"previous_value": outcome.value, "steps": state["steps"] + 1.0}, {}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class ConjugateGradient(LineSearchSolver):
    """Nonlinear conjugate gradients with a line search.

        d(0) = -g(0),   d(tau) = -g(tau) + beta(tau) d(tau-1),
        w(tau+1) = w(tau) + a(tau) d(tau)

    with g(tau) = dE/dw at w(tau), a(tau) from `line_search`, and `beta`:

        "fletcher-reeves":  beta = g(tau).g(tau) / g(tau-1).g(tau-1)
        "polak-ribiere":    beta = max(0, g(tau).(g(tau) - g(tau-1))
                                      / g(tau-1).g(tau-1))

    (the lecture's recommended non-negative Polak-Ribiere, "PR+"). The
    direction restarts at d = -g (beta = 0) every `restart` iterations,
    whenever d is not a descent direction (g.d >= 0), and when the line
    search fails along d (the search is then repeated along -g; if that
    fails too the solver does not move and sets `stop_training`).

    Args:
        beta: `"polak-ribiere"` (default) or `"fletcher-reeves"`.
        restart: restart period in iterations, an integer >= 1; None (the
            default) restarts every m iterations, m the number of weights.
        line_search: `"strong-wolfe"` (default, built with c2=0.1),
            `"exact"`, `"armijo"` or a `keras_gdzoo.line_search.LineSearch`.
        name: optional name.
        **kwargs: the `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `use_ema`, ...) are refused by name: a solver cannot honour them.

    Logs per step: `step_size` (a), `evaluations` (objective calls this
    step), `beta` (the beta used, 0 on a restart), `restarts` (restarts so
    far: periodic, non-descent and failed-search ones; PR+ clipping beta to 0
    is not counted), `line_search_failed` (1.0 when the search along d
    failed, whether or not the retry along -g succeeded), `stop_training`
    (1.0 when the retry failed too: no move).

    On an m-dimensional quadratic with exact line searches both formulas
    give the same directions and reach the minimum in at most m iterations.

    References:
        Fletcher, R. & Reeves, C. M. (1964). Function minimization by
        conjugate gradients. The Computer Journal 7(2).
        Polak, E. & Ribière, G. (1969). Note sur la convergence de méthodes
        de directions conjuguées. Rev. Française Informat. Recherche
        Opérationnelle 3(16).
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        sec. 5.2 (eqs. 5.41a, 5.44, 5.45).

    Note: the strong-Wolfe search uses c2 = 0.1 (not 0.9): with c2 < 1/2
    every Fletcher-Reeves direction is a descent direction (Nocedal &
    Wright, Lemma 5.6). The first trial step is eq. 3.60,
    a0 = 2 (E(tau) - E(tau-1)) / (g.d), and min(1, 1/||g||) on the first
    iteration.

    Example:

    >>> solver = ConjugateGradient(beta="fletcher-reeves", restart=10)
    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=solver, loss="mse")
    """

    def __init__(
        self,
        beta="polak-ribiere",
        restart=None,
        line_search="strong-wolfe",
        name=None,
        **kwargs,
    ):
        validation.choice("beta", beta, _BETAS)
        if restart is not None:
            restart = validation.integer("restart", restart, minimum=1)
        super().__init__(
            line_search=line_search,
            name=name,
            line_search_defaults={"c2": 0.1},
            **kwargs,
        )
        self.beta = beta
        self.restart = restart

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "restart": self.restart})
        return config

    def memory_spec(self, size, dtype):
        return {
            "previous_value": ([], 0.0),
            "previous_gradient": ([size], 0.0),
            "direction": ([size], 0.0),
            "steps": ([], 0.0),
            "since_restart": ([], 0.0),
            "restarts": ([], 0.0),
        }

    def direction(self, value, gradient, state, objective):
        zero = tf.zeros([], gradient.dtype)
        first = state["steps"] <= 0
        previous = state["previous_gradient"]
        if self.beta == "fletcher-reeves":
            beta = dot(gradient, gradient) / dot(previous, previous)
        else:
            beta = tf.maximum(
                dot(gradient, gradient - previous) / dot(previous, previous), zero
            )
        period = self.restart if self.restart is not None else objective.size
        periodic = ~first & (state["since_restart"] >= period)
        beta = tf.where(first | periodic | ~tf.math.is_finite(beta), zero, beta)

        direction = -gradient + beta * state["direction"]
        not_descent = ~(dot(gradient, direction) < 0) & (beta != 0)
        beta = tf.where(not_descent, zero, beta)
        direction = tf.where(not_descent, -gradient, direction)

        initial = _initial_step(
            value, state["previous_value"], dot(gradient, direction), ~first, gradient
        )
        return Proposal(
            direction,
            initial,
            steepest=tf.equal(beta, 0),
            restart=periodic | not_descent,
            memo={"beta": beta},
        )

    def update_memory(self, state, proposal, outcome):
        dtype = outcome.value.dtype
        beta = tf.where(outcome.retried, tf.zeros([], dtype), proposal.memo["beta"])
        restarts = count_restarts(state, outcome)
        memory = {
            "previous_value": outcome.value,
            "previous_gradient": outcome.gradient,
            "direction": outcome.direction,
            "steps": state["steps"] + 1.0,
            "since_restart": tf.where(
                tf.equal(beta, 0), tf.ones([], dtype), state["since_restart"] + 1.0
            ),
            "restarts": restarts,
        }
        return memory, {"beta": beta, "restarts": restarts}
