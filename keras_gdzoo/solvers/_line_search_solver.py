"""The one step the line-search solvers (steepest descent, CG, BFGS, L-BFGS)
share, and the two parts each supplies.

`LineSearchSolver.step` is fixed:

    E, g   = E and g at w (from the state when the objective is stationary
             and w is the point the last search returned, else evaluated)
    p      = direction(E, g, state, objective)      # the subclass: d, a0
    search along p.direction from p.initial_step; if that fails and d is
             not -g, search again along -g (a restart); if that fails too,
             do not move and ask training to stop
    w'     = w + a d
    memory, logs = update_memory(state, p, outcome) # the subclass:
             s = a d, y = g(w') - g; restarts, pairs, B...

so a subclass writes only the method: `memory_spec` (its state),
`direction` and `update_memory` (optax composes L-BFGS from a direction
transform and a line search the same way, optimistix its descents).
"""

from typing import Any
from typing import NamedTuple

import keras
import tensorflow as tf

from keras_gdzoo import line_search as line_search_module
from keras_gdzoo.line_search.base import _AutoGraphObjective
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver
from keras_gdzoo.solvers.base import reuses_evaluations


def dot(a, b):
    return tf.reduce_sum(a * b)


def unit_distance_step(gradient):
    """min(1, 1/||g||): the first trial step along -g moves w by at most 1
    (what SciPy's L-BFGS-B and torch.optim.LBFGS use on their first
    iteration, when nothing is known about the scale of E)."""
    return tf.minimum(tf.ones([], gradient.dtype), 1.0 / tf.norm(gradient))


class Proposal(NamedTuple):
    """What `direction` proposes for one iteration.

    Attributes:
        direction: d, shape [m].
        initial_step: the line search's first trial step a0.
        steepest: bool (Python or tensor), True when d is -g already: a
            failed search is then not repeated along -g.
        restart: bool, True when `direction` itself reset d to -g (counted
            in the `restarts` log with the retries along -g).
        memo: whatever `update_memory` needs from `direction` (a dict).
    """

    direction: tf.Tensor
    initial_step: tf.Tensor
    steepest: Any
    restart: Any
    memo: dict


class Outcome(NamedTuple):
    """What the iteration did, for `update_memory`.

    Attributes:
        value: E at w (before the move).
        gradient: g at w.
        direction: the direction searched along: the proposal's, or -g
            after a retry.
        result: the final `keras_gdzoo.line_search.LineSearchResult`.
        retried: bool tensor, the search along the proposal failed and -g
            was searched.
        restarted: bool tensor, `proposal.restart | retried`.
        s: a d, the move (0 when the search failed).
        y: g(w + a d) - g.
    """

    value: tf.Tensor
    gradient: tf.Tensor
    direction: tf.Tensor
    result: Any
    retried: tf.Tensor
    restarted: tf.Tensor
    s: tf.Tensor
    y: tf.Tensor


class LineSearchSolver(Solver):
    """Base of the solvers that take w + a*d with a from a line search.

    Subclasses implement:

    * `memory_spec(size, dtype)`: their state, as `Solver.state_spec` (the
      point kept for reuse is added here);
    * `direction(value, gradient, state, objective)` -> `Proposal`;
    * `update_memory(state, proposal, outcome)` -> `(memory, logs)`: the
      next values of the `memory_spec` entries and the method's own logs.

    Logs of every line-search solver: `step_size` (a), `evaluations`
    (objective calls this step), `line_search_failed` (1.0 when the search
    along d failed, whether or not the retry along -g succeeded) and
    `stop_training` (1.0 when no step was found at all: no move).
    """

    stop_message = (
        "the line search found no acceptable step along the search direction "
        "nor along -g (w is a stationary point to working precision, or the "
        "loss is not finite or too noisy around it)"
    )

    def __init__(self, line_search, name=None, line_search_defaults=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.line_search = line_search_module.get(
            line_search, **(line_search_defaults or {})
        )

    def get_config(self):
        config = super().get_config()
        config["line_search"] = keras.saving.serialize_keras_object(self.line_search)
        return config

    # -- to implement -------------------------------------------------------
    def memory_spec(self, size, dtype):
        return {}

    def direction(self, value, gradient, state, objective):
        raise NotImplementedError

    def update_memory(self, state, proposal, outcome):
        raise NotImplementedError

    # -- the step -----------------------------------------------------------
    def state_spec(self, size, dtype):
        spec = dict(self.memory_spec(size, dtype))
        # The last point reached, with E and g there (see `evaluate_start`).
        spec.update(
            {
                "point": ([size], 0.0),
                "point_value": ([], 0.0),
                "point_gradient": ([size], 0.0),
                "point_known": ([], 0.0),
            }
        )
        return spec

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        value, gradient, evaluations = self.evaluate_start(objective, w, state)
        proposal = self.direction(value, gradient, state, objective)
        result, direction, first_failed, retried = self.search(
            objective, w, value, gradient, proposal
        )
        # tf.where rather than w + 0*d: d may hold inf when g does.
        w_new = tf.where(result.failed, w, w + result.step * direction)
        outcome = Outcome(
            value=value,
            gradient=gradient,
            direction=direction,
            result=result,
            retried=retried,
            restarted=tf.logical_or(proposal.restart, retried),
            s=result.step * direction,
            y=result.gradient - gradient,
        )
        new_state, method_logs = self.update_memory(state, proposal, outcome)
        new_state = dict(new_state)
        new_state.update(
            {
                "point": w_new,
                "point_value": result.value,
                "point_gradient": result.gradient,
                "point_known": tf.ones([], w.dtype),
            }
        )
        as_float = lambda x: tf.cast(x, w.dtype)
        logs = {
            "step_size": as_float(result.step),
            "evaluations": as_float(evaluations + result.evaluations),
            "line_search_failed": as_float(first_failed),
            STOP: as_float(result.failed),
        }
        logs.update(method_logs)
        return w_new, new_state, logs

    def evaluate_start(self, objective, w, state):
        """(E(w), g(w), evaluations made), reusing the last line search's
        result when the objective is stationary and w is that point (it
        evaluated E and g at exactly w, so they are the same numbers)."""

        def evaluate():
            value, gradient = _AutoGraphObjective(objective).value_and_gradient(w)
            return value, gradient, tf.constant(1, tf.int32)

        if not reuses_evaluations(objective):
            return evaluate()
        known = (state["point_known"] > 0) & tf.reduce_all(tf.equal(w, state["point"]))
        return tf.cond(
            known,
            lambda: (
                state["point_value"],
                state["point_gradient"],
                tf.constant(0, tf.int32),
            ),
            evaluate,
        )

    def search(self, objective, w, value, gradient, proposal):
        """Line search along `proposal.direction`, then along -g if that
        failed and the direction was not -g already.

        Returns:
            `(result, direction, first_failed, retried)`: the final
            `LineSearchResult` (evaluations of both searches summed), the
            direction it searched along, whether the first search failed and
            whether the -g search was made.
        """
        if proposal.steepest is True:  # nothing to retry: one search
            result = self.line_search.search(
                objective, w, proposal.direction, value, gradient, proposal.initial_step
            )
            return result, proposal.direction, result.failed, tf.constant(False)
        steepest = tf.convert_to_tensor(proposal.steepest, tf.bool)

        # One traced search, run once or twice, rather than two searches.
        def attempt(count, direction, initial_step, evaluations, _):
            result = self.line_search.search(
                objective, w, direction, value, gradient, initial_step
            )
            evaluations = evaluations + result.evaluations
            return (
                count + 1,
                -gradient,
                unit_distance_step(gradient),
                evaluations,
                result._replace(evaluations=evaluations),
            )

        def again(count, direction, initial_step, evaluations, result):
            return tf.equal(count, 0) | (tf.equal(count, 1) & result.failed & ~steepest)

        nothing = line_search_module.LineSearchResult(
            step=tf.zeros([], w.dtype),
            value=value,
            gradient=gradient,
            evaluations=tf.constant(0, tf.int32),
            failed=tf.constant(True),
        )
        count, _, _, _, result = tf.while_loop(
            again,
            attempt,
            (
                tf.constant(0),
                proposal.direction,
                proposal.initial_step,
                tf.constant(0, tf.int32),
                nothing,
            ),
            maximum_iterations=2,
        )
        retried = tf.equal(count, 2)
        first_failed = retried | result.failed
        direction = tf.where(retried, -gradient, proposal.direction)
        return result, direction, first_failed, retried


def count_restarts(state, outcome):
    """The `restarts` log: restarts so far, this iteration's included."""
    return state["restarts"] + tf.cast(outcome.restarted, outcome.value.dtype)
