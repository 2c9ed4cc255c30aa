"""The vector line search: what every search shares.

`LineSearch.search` takes the solver's view (w, d, E(w), g) and checks that
d is a descent direction; a subclass's `_search` turns the objective into
phi(a) = E(w + a*d) with `line_functions` and hands it to the scalar layer
(`keras_gdzoo.line_search.scalar`).
"""

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_gdzoo import validation


class LineSearchResult(NamedTuple):
    """What a line search returns (all tensors).

    Attributes:
        step: the accepted step a (scalar); 0 when the search failed.
        value: E(w + a*d) (scalar); E(w) when the search failed.
        gradient: dE/dw at w + a*d (shape [m]); the input gradient when the
            search failed.
        evaluations: int32 scalar, how many times the search called the
            objective (`value` and `value_and_gradient` calls alike).
        failed: bool scalar, True when no acceptable step was found within
            `max_evaluations` evaluations, or d was not a descent direction.
    """

    step: tf.Tensor
    value: tf.Tensor
    gradient: tf.Tensor
    evaluations: tf.Tensor
    failed: tf.Tensor


def _dot(a, b):
    return tf.reduce_sum(a * b)


def _all_finite(value, gradient):
    return tf.logical_and(
        tf.math.is_finite(value), tf.reduce_all(tf.math.is_finite(gradient))
    )


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class LineSearch:
    """Base class of line searches.

    Subclasses implement `_search`; `search` checks that d is a descent
    direction first (a search along a direction with g.d >= 0, a flat
    function included, fails at once without evaluating anything). The
    base class itself cannot search and refuses to be built (also from a
    `.keras` config that names it).

    Args:
        max_evaluations: the most objective evaluations one search may make,
            an integer >= `minimum_evaluations`.
    """

    #: The fewest evaluations a search needs, and what they are.
    minimum_evaluations = 1
    minimum_reason = ""

    def __init__(self, max_evaluations):
        if type(self) is LineSearch:
            raise ValueError(
                "`keras_gdzoo.line_search.LineSearch` is the abstract base class "
                "of the line searches and cannot search: use StrongWolfe, "
                "Backtracking, Exact or a subclass that implements `_search`. "
                f"Received: LineSearch(max_evaluations={max_evaluations!r})"
            )
        value = validation.integer("max_evaluations", max_evaluations, minimum=1)
        if value < self.minimum_evaluations:
            raise ValueError(
                f"Argument `max_evaluations` must be >= {self.minimum_evaluations} "
                f"for {type(self).__name__} ({self.minimum_reason}). "
                f"Received: max_evaluations={max_evaluations!r}"
            )
        self.max_evaluations = value

    # Plain TF control flow throughout: converting it with AutoGraph only
    # costs tracing time (seconds per search).
    @tf.autograph.experimental.do_not_convert
    def search(self, objective, w, direction, value, gradient, initial_step):
        """Search along `direction` from `w`.

        Args:
            objective: a `keras_gdzoo.solvers.base.Objective`.
            w: the current point, shape [m].
            direction: the search direction d, shape [m].
            value: E(w), scalar.
            gradient: dE/dw at w, shape [m].
            initial_step: the first trial step (scalar); a non-finite or
                non-positive value is replaced by 1.

        Returns:
            A `LineSearchResult`.
        """
        dtype = w.dtype
        value = tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)
        initial_step = tf.cast(
            tf.convert_to_tensor(initial_step, dtype_hint=dtype), dtype
        )
        initial_step = tf.where(
            tf.math.is_finite(initial_step) & (initial_step > 0),
            initial_step,
            tf.ones([], dtype),
        )
        objective = _AutoGraphObjective(objective)
        slope = _dot(gradient, direction)
        descent = (slope < 0) & tf.math.is_finite(slope) & tf.math.is_finite(value)
        return tf.cond(
            descent,
            lambda: self._search(
                objective, w, direction, value, gradient, slope, initial_step
            ),
            lambda: no_move(value, gradient, tf.constant(0, tf.int32)),
        )

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        """The search proper, for a descent direction (slope = g.d < 0) and
        a positive finite `initial_step`; returns a `LineSearchResult`."""
        raise NotImplementedError

    #: The constructor arguments, in `get_config` order.
    config_names = ("max_evaluations",)

    def get_config(self):
        return {name: getattr(self, name) for name in self.config_names}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def implements_search(search):
    """Whether `search`'s class overrides `_search` (the base class's only
    raises NotImplementedError)."""
    return type(search)._search is not LineSearch._search


class _AutoGraphObjective:
    """An objective whose calls are converted by AutoGraph.

    The searches and solvers write their control flow explicitly
    (`tf.while_loop`, `tf.cond`) and skip AutoGraph, which would only add
    tracing time; the objective may be user code that relies on AutoGraph
    (Python `if` on tensors), so its calls are converted as inside any
    `tf.function`.
    """

    def __init__(self, objective):
        self.objective = objective
        self.size = objective.size
        self.dtype = objective.dtype
        self._value = _converted(lambda w: objective.value(w))
        self._value_and_gradient = _converted(lambda w: objective.value_and_gradient(w))

    def value(self, w):
        return tf.cast(self._value(w), w.dtype)

    def value_and_gradient(self, w):
        value, gradient = self._value_and_gradient(w)
        return tf.cast(value, w.dtype), gradient


def _converted(function):
    try:
        return tf.autograph.to_graph(function)
    except Exception:  # noqa: BLE001 - no source to convert (frozen app...): call as is
        return function


def line_functions(objective, w, direction):
    """phi(a) = E(w + a*d) for the scalar layer, in its two forms.

    Returns:
        `(phi, phi_and_derivative)`: `phi(a)` is E(w + a*d) (one
        `objective.value` call); `phi_and_derivative(a)` is
        `(phi(a), phi'(a), g)` with phi'(a) = g.d and g = dE/dw at w + a*d
        carried as the point's auxiliary data (one `value_and_gradient`
        call). phi'(a) is NaN when g is not finite, so a scalar search that
        only checks phi and phi' never accepts a non-finite gradient.
    """
    nan = tf.constant(np.nan, w.dtype)

    def phi(a):
        return objective.value(w + a * direction)

    def phi_and_derivative(a):
        value, gradient = objective.value_and_gradient(w + a * direction)
        finite = tf.reduce_all(tf.math.is_finite(gradient))
        return value, tf.where(finite, _dot(gradient, direction), nan), gradient

    return phi, phi_and_derivative


def no_move(value, gradient, evaluations):
    """The result of a failed search: step 0, E and g those at w."""
    return LineSearchResult(
        step=tf.zeros([], value.dtype),
        value=value,
        gradient=gradient,
        evaluations=evaluations,
        failed=tf.constant(True),
    )


def with_gradient(objective, w, direction, value, gradient, scalar_result):
    """A `LineSearchResult` from a value-only scalar search: E and g at the
    step it accepted (one more `value_and_gradient`), or no move when it
    found none or g is not finite there."""

    def at_accepted():
        step = scalar_result.step
        f, g = objective.value_and_gradient(w + step * direction)
        good = _all_finite(f, g)
        return LineSearchResult(
            step=tf.where(good, step, tf.zeros([], step.dtype)),
            value=tf.where(good, f, value),
            gradient=tf.where(good, g, gradient),
            evaluations=scalar_result.evaluations + 1,
            failed=~good,
        )

    return tf.cond(
        scalar_result.found,
        at_accepted,
        lambda: no_move(value, gradient, scalar_result.evaluations),
    )
