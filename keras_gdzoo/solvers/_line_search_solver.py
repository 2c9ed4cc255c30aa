"""What the line-search solvers (steepest descent, CG, BFGS, L-BFGS) share.

Each iteration: evaluate E and g at w, choose a direction d, search along
it, and if the search fails along d retry along -g (a restart); if that
fails too, do not move and ask training to stop. On a stationary objective
(the same function at every step) E and g at w are those the previous
line search returned, so an iteration costs its line search's evaluations.
"""

import keras
import tensorflow as tf

from keras_gdzoo import line_search as line_search_module
from keras_gdzoo.line_search import _AutoGraphObjective
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import FunctionObjective
from keras_gdzoo.solvers.base import Solver


def dot(a, b):
    return tf.reduce_sum(a * b)


def reuses_evaluations(objective):
    """Whether E and g computed at the end of one step still hold at the next.

    True when every call sees the same function (`objective.stationary`, by
    default True for a `FunctionObjective` only): the line search already
    evaluated E and g at the point it returned, so the next step takes them
    from the state instead of paying one more evaluation. A mini-batch
    objective sees a new batch each step and must re-evaluate.
    """
    return bool(
        getattr(objective, "stationary", isinstance(objective, FunctionObjective))
    )


def unit_distance_step(gradient):
    """min(1, 1/||g||): the first trial step along -g moves w by at most 1
    (what SciPy's L-BFGS-B and torch.optim.LBFGS use on their first
    iteration, when nothing is known about the scale of E)."""
    return tf.minimum(tf.ones([], gradient.dtype), 1.0 / tf.norm(gradient))


class LineSearchSolver(Solver):
    """Base of the solvers that take w + a*d with a from a line search.

    Subclasses call `evaluate_start`, `search` and `remember_point` from
    their `step`, and add `self.point_spec(size)` to their `state_spec`.
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

    @staticmethod
    def point_spec(size):
        """The last point reached with E and g there (see `evaluate_start`)."""
        return {
            "point": ([size], 0.0),
            "point_value": ([], 0.0),
            "point_gradient": ([size], 0.0),
            "point_known": ([], 0.0),
        }

    def evaluate_start(self, objective, w, state):
        """(E(w), g(w), evaluations made), reusing the last line search's
        result when the objective is stationary and w is that point."""

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

    @staticmethod
    def remember_point(w, result):
        return {
            "point": w,
            "point_value": result.value,
            "point_gradient": result.gradient,
            "point_known": tf.ones([], w.dtype),
        }

    def search(self, objective, w, direction, value, gradient, initial_step, steepest):
        """Line search along `direction`, then along -g if that failed.

        Args:
            steepest: bool tensor, True when `direction` is already -g (no
                retry then: it would repeat the same search).

        Returns:
            `(result, direction, first_failed, retried)`: the final
            `LineSearchResult` (evaluations of both searches summed), the
            direction it searched along, whether the first search failed and
            whether the -g search was made.
        """
        steepest = tf.convert_to_tensor(steepest, tf.bool)

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
                direction,
                initial_step,
                tf.constant(0, tf.int32),
                nothing,
            ),
            maximum_iterations=2,
        )
        retried = tf.equal(count, 2)
        first_failed = retried | result.failed
        direction = tf.where(retried, -gradient, direction)
        return result, direction, first_failed, retried

    @staticmethod
    def move(w, result, direction):
        # tf.where rather than w + 0*d: d may hold inf when g does.
        return tf.where(result.failed, w, w + result.step * direction)

    @staticmethod
    def common_logs(dtype, result, evaluations, first_failed):
        as_float = lambda x: tf.cast(x, dtype)
        return {
            "step_size": as_float(result.step),
            "evaluations": as_float(evaluations + result.evaluations),
            "line_search_failed": as_float(first_failed),
            STOP: as_float(result.failed),
        }
