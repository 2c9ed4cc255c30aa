"""The scalar line-search layer: searches on phi(a), a function of one step.

As SciPy's `scalar_search_wolfe2` under its `line_search_wolfe2`, these
functions know nothing of weights or directions: they take phi(0) = `value`,
phi'(0) = `slope` (< 0: the caller checks that d is a descent direction) and
a function of the step a,

* `phi_and_derivative(a) -> (phi(a), phi'(a), aux)` for `strong_wolfe`, where
  `aux` is whatever the caller wants back for the accepted step (the
  vector searches carry the gradient there; `()` for a plain function);
* `phi(a) -> phi(a)` for `backtracking` and `exact` (`keras_gdzoo.line_search
  .brent`), which never need a derivative but at the start.

Every loop is a `tf.while_loop` over a `NamedTuple` state with at most
`max_evaluations` calls, so a search traces into the caller's `tf.function`.
Non-finite values of phi count as +inf (too long a step) and are never
accepted. The result is a `ScalarResult`.

Example: phi(a) = (a - 2)^2 from a = 0, where a = 1 already satisfies both
Wolfe conditions (phi(1) = 1, |phi'(1)| = 2 <= 0.9 |phi'(0)| = 3.6):

>>> import tensorflow as tf
>>> from keras_gdzoo.line_search import scalar
>>> phi = lambda a: ((a - 2.0) ** 2, 2.0 * (a - 2.0), ())
>>> result = scalar.strong_wolfe(phi, tf.constant(4.0), tf.constant(-4.0),
...                              tf.constant(1.0), c1=1e-4, c2=0.9,
...                              max_evaluations=10)
>>> float(result.step), float(result.value), int(result.evaluations)
(1.0, 1.0, 1)
"""

from typing import Any
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class ScalarResult(NamedTuple):
    """What a scalar search returns (all tensors).

    Attributes:
        step: the accepted step a; 0 when none was found.
        value: phi(a); phi(0) when none was found.
        derivative: phi'(a) where the search evaluated it (`strong_wolfe`);
            phi'(0) when none was found; NaN for the value-only searches.
        aux: the auxiliary data phi returned at a (`strong_wolfe`), the
            `aux` given for a = 0 when none was found; `()` otherwise.
        evaluations: int32, how many times phi was called.
        found: bool, whether an acceptable step was found.
    """

    step: tf.Tensor
    value: tf.Tensor
    derivative: tf.Tensor
    aux: Any
    evaluations: tf.Tensor
    found: tf.Tensor


class Point(NamedTuple):
    """A step and what is known of phi there."""

    step: tf.Tensor
    value: tf.Tensor
    derivative: tf.Tensor


def select(condition, x, y):
    """`x` where `condition` else `y`, for matching structures of tensors."""
    return tf.nest.map_structure(lambda u, v: tf.where(condition, u, v), x, y)


def compiled(update):
    """`update` (scalars in, scalars out: a search's work between two
    evaluations) as one XLA computation. TensorFlow's graph executor runs a
    search's ~100-200 scalar operations one by one, ~0.2 ms per evaluation
    on a CPU, more than a small model's evaluation; compiled, they cost one
    launch. With scalar inputs only, it is traced and compiled once per
    dtype for every search in the process, and inlined into an
    XLA-compiled caller."""
    return tf.function(update, jit_compile=True, autograph=False)


def evaluate_then(phi_and_derivative, advance, constants, accepted):
    """The body of a search's loop: phi and phi' at the state's trial step,
    then `advance(state, point, constants)` (a `compiled` update that
    leaves `best_aux` to the caller), keeping phi's aux for the best point
    when `accepted(new_state)`."""
    dtype = constants.value.dtype

    def body(state):
        a = state.trial
        f, df, point_aux = phi_and_derivative(a)
        point = Point(a, tf.cast(f, dtype), tf.cast(df, dtype))
        new = advance(state._replace(best_aux=()), point, constants)
        return new._replace(best_aux=select(accepted(new), point_aux, state.best_aux))

    return body


def loop(condition, body, start, maximum_iterations):
    """`tf.while_loop` over one `NamedTuple` state: `body(state)` returns
    the next state."""
    (state,) = tf.while_loop(
        condition,
        lambda state: (body(state),),
        (start,),
        maximum_iterations=maximum_iterations,
    )
    return state


def result(found, best, best_aux, origin, aux, evaluations):
    """The `ScalarResult` of a search: its best `Point` and aux when
    `found`, else the origin (step 0) and its aux."""
    best = select(found, best, origin)
    return ScalarResult(
        step=best.step,
        value=best.value,
        derivative=best.derivative,
        aux=select(found, best_aux, aux),
        evaluations=evaluations,
        found=found,
    )

def cubic_minimizer(a1, f1, df1, a2, f2, df2):
    """Minimizer of the cubic through (a1, f1, df1) and (a2, f2, df2).

    Nocedal & Wright (2006), eq. 3.59. Returns (a, valid)."""
    d1 = df1 + df2 - 3.0 * (f1 - f2) / (a1 - a2)
    radicand = d1 * d1 - df1 * df2
    d2 = tf.sign(a2 - a1) * tf.sqrt(tf.maximum(radicand, 0.0))
    a = a2 - (a2 - a1) * (df2 + d2 - d1) / (df2 - df1 + 2.0 * d2)
    return a, (radicand >= 0) & tf.math.is_finite(a)


def quadratic_minimizer(a1, f1, df1, a2, f2):
    """Minimizer of the parabola through (a1, f1, df1) and (a2, f2)."""
    width = a2 - a1
    curvature = f2 - f1 - df1 * width
    a = a1 - df1 * width * width / (2.0 * curvature)
    return a, (curvature > 0) & tf.math.is_finite(a)


def zoom_trial(lo, hi):
    """The next trial in [lo, hi] (two `Point`s): cubic, else parabola,
    else midpoint, kept at least a tenth of the interval from either end."""
    cubic, cubic_ok = cubic_minimizer(*lo, *hi)
    quadratic, quadratic_ok = quadratic_minimizer(*lo, hi.step, hi.value)
    midpoint = 0.5 * (lo.step + hi.step)
    left = tf.minimum(lo.step, hi.step)
    right = tf.maximum(lo.step, hi.step)
    margin = 0.1 * (right - left)
    inside = lambda a: (a >= left) & (a <= right)
    # The far end is non-finite after a NaN/inf trial: only bisect then.
    interpolate = tf.math.is_finite(hi.value) & tf.math.is_finite(hi.derivative)
    trial = tf.where(
        interpolate & cubic_ok & inside(cubic),
        cubic,
        tf.where(interpolate & quadratic_ok & inside(quadratic), quadratic, midpoint),
    )
    return tf.clip_by_value(trial, left + margin, right - margin)


# The stages of the strong-Wolfe loop.
_BRACKETING, _ZOOMING, _ACCEPTED, _FAILED = 0, 1, 2, 3


class _WolfeState(NamedTuple):
    evaluations: tf.Tensor  # phi calls so far
    stage: tf.Tensor  # one of _BRACKETING, _ZOOMING, _ACCEPTED, _FAILED
    trial: tf.Tensor  # the step the next iteration evaluates
    previous: Point  # the last trial while bracketing (Algorithm 3.5's a_{i-1})
    low: Point  # zoom's a_lo: the lowest end of the interval
    high: Point  # zoom's a_hi
    best: Point  # the accepted point, once there is one
    best_aux: Any  # what phi returned with it


class _WolfeConstants(NamedTuple):
    value: tf.Tensor  # phi(0)
    slope: tf.Tensor  # phi'(0)
    c1: tf.Tensor
    c2: tf.Tensor


def _wolfe_advance_graph(state, point, constants):
    """Algorithms 3.5 / 3.6 at the new `point` (a, phi(a), phi'(a)): the
    search's state after one evaluation, its `best_aux` left to the
    caller."""
    value, slope, c1, c2 = constants
    dtype = value.dtype
    inf = tf.constant(np.inf, dtype)
    nan = tf.constant(np.nan, dtype)
    eps = tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype)
    a, prev, lo, hi = state.trial, state.previous, state.low, state.high
    _, f, df = point
    finite = tf.math.is_finite(f) & tf.math.is_finite(df)
    # A non-finite point counts as a value too high: never accepted.
    f = tf.where(finite, f, inf)
    df = tf.where(finite, df, nan)
    decrease = finite & (f <= value + c1 * a * slope)
    curvature = finite & (tf.abs(df) <= -c2 * slope)
    point = Point(a, f, df)

    # Algorithm 3.5 (bracketing).
    too_far = ~decrease | (f >= prev.value)
    b_accept = ~too_far & curvature
    # Otherwise phi'(a) >= 0 reverses the interval (lo = a, hi = prev)
    # and phi'(a) < 0 extends it.
    b_extend = ~too_far & ~curvature & (df < 0)
    # Algorithm 3.6 (zoom) on [lo, hi].
    z_high = ~decrease | (f >= lo.value)
    z_accept = ~z_high & curvature
    z_flip = ~z_high & ~curvature & (df * (hi.step - lo.step) >= 0)

    in_bracketing = tf.equal(state.stage, _BRACKETING)
    new_lo = select(
        in_bracketing, select(too_far, prev, point), select(z_high, lo, point)
    )
    new_hi = select(
        in_bracketing,
        select(too_far, point, prev),
        select(z_high, point, select(z_flip, lo, hi)),
    )
    accept = tf.where(in_bracketing, b_accept, z_accept)
    extend = in_bracketing & b_extend
    stage = tf.where(accept, _ACCEPTED, tf.where(extend, _BRACKETING, _ZOOMING))
    best = select(accept, point, state.best)

    # Next trial: extrapolation while bracketing, interpolation in zoom.
    low_bound = a + 0.1 * (a - prev.step)
    high_bound = a + 4.0 * (a - prev.step)
    guess, valid = cubic_minimizer(*prev, a, f, df)
    guess = tf.where(valid & (guess > a), guess, high_bound)
    extrapolated = tf.clip_by_value(guess, low_bound, high_bound)
    interpolated = zoom_trial(new_lo, new_hi)

    # An interval narrower than the floating-point spacing of its ends
    # cannot yield a better trial.
    width = tf.abs(new_hi.step - new_lo.step)
    collapsed = width <= eps * tf.maximum(new_hi.step, new_lo.step)
    stage = tf.where(tf.equal(stage, _ZOOMING) & collapsed, _FAILED, stage)
    return _WolfeState(
        evaluations=state.evaluations + 1,
        stage=stage,
        trial=tf.where(extend, extrapolated, interpolated),
        previous=select(extend, point, prev),
        low=new_lo,
        high=new_hi,
        best=best,
        best_aux=(),
    )


# One XLA computation per evaluation instead of ~100 scalar operations run
# one by one by the graph executor (as `more_thuente._advance`).
_wolfe_advance = compiled(_wolfe_advance_graph)


def strong_wolfe(
    phi_and_derivative, value, slope, initial_step, c1, c2, max_evaluations, aux=()
):
    """A step satisfying the strong Wolfe conditions
    phi(a) <= phi(0) + c1 a phi'(0) and |phi'(a)| <= c2 |phi'(0)|.

    Nocedal & Wright (2006), Algorithms 3.5 (bracketing) and 3.6 (zoom); the
    trial rules are those `keras_gdzoo.line_search.StrongWolfe` documents.

    Args:
        phi_and_derivative: a -> (phi(a), phi'(a), aux).
        value: phi(0), a finite scalar tensor (its dtype is the search's).
        slope: phi'(0) < 0.
        initial_step: the first trial step, > 0.
        c1, c2: the constants, 0 < c1 < c2 < 1 (Python floats).
        max_evaluations: the most phi calls (a Python int).
        aux: the auxiliary data at a = 0, returned when no step is found.

    Returns:
        A `ScalarResult`.
    """
    dtype = value.dtype
    constants = _WolfeConstants(value, slope, tf.constant(c1, dtype), tf.constant(c2, dtype))
    zero = tf.zeros([], dtype)

    body = evaluate_then(
        phi_and_derivative, _wolfe_advance, constants, lambda s: tf.equal(s.stage, _ACCEPTED)
    )

    def condition(state):
        return (state.stage < _ACCEPTED) & (state.evaluations < max_evaluations)

    origin = Point(zero, value, slope)
    start = _WolfeState(
        evaluations=tf.constant(0, tf.int32),
        stage=tf.constant(_BRACKETING, tf.int32),
        trial=initial_step,
        previous=origin,
        low=origin,
        high=origin,
        best=origin,
        best_aux=aux,
    )
    state = loop(condition, body, start, max_evaluations)
    found = tf.equal(state.stage, _ACCEPTED)
    return result(found, state.best, state.best_aux, origin, aux, state.evaluations)


class _BacktrackingState(NamedTuple):
    evaluations: tf.Tensor
    step: tf.Tensor  # the trial; the accepted step once `done`
    value: tf.Tensor  # phi there once `done`
    done: tf.Tensor


def backtracking(phi, value, slope, initial_step, c1, shrink, max_evaluations):
    """The first a = initial_step * shrink^k (k = 0, 1, ...) with Armijo's
    phi(a) <= phi(0) + c1 a phi'(0) (Nocedal & Wright, Algorithm 3.1).

    Args:
        phi: a -> phi(a).
        value, slope, initial_step: phi(0), phi'(0) < 0 and the first trial.
        c1: the sufficient-decrease constant; shrink: the factor on a
            rejected step (Python floats in (0, 1)).
        max_evaluations: the most phi calls (a Python int).

    Returns:
        A `ScalarResult` (its `derivative` NaN, its `aux` ()).
    """
    dtype = value.dtype
    c1 = tf.constant(c1, dtype)
    shrink = tf.constant(shrink, dtype)

    def body(state):
        a = state.step
        f = tf.cast(phi(a), dtype)
        ok = tf.math.is_finite(f) & (f <= value + c1 * a * slope)
        return _BacktrackingState(
            state.evaluations + 1, tf.where(ok, a, a * shrink), f, ok
        )

    start = _BacktrackingState(
        tf.constant(0, tf.int32), initial_step, value, tf.constant(False)
    )
    state = loop(
        lambda state: ~state.done & (state.evaluations < max_evaluations),
        body,
        start,
        max_evaluations,
    )
    return ScalarResult(
        step=tf.where(state.done, state.step, tf.zeros([], dtype)),
        value=tf.where(state.done, state.value, value),
        derivative=tf.constant(np.nan, dtype),
        aux=(),
        evaluations=state.evaluations,
        found=state.done,
    )
