"""The scalar Moré-Thuente line search (MINPACK-2's dcsrch and dcstep).

The search SciPy's L-BFGS-B and `line_search_wolfe1` run, written as one
`tf.while_loop` over a `NamedTuple` state: each iteration evaluates phi and
phi' at the trial step, tests the strong Wolfe conditions and, if they do
not hold, computes the next trial by `step_update` (dcstep). The rules are
those `keras_gdzoo.line_search.MoreThuente` documents.
"""

from typing import Any
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_gdzoo.line_search.scalar import Point
from keras_gdzoo.line_search.scalar import compiled
from keras_gdzoo.line_search.scalar import evaluate_then
from keras_gdzoo.line_search.scalar import loop
from keras_gdzoo.line_search.scalar import result
from keras_gdzoo.line_search.scalar import select

#: Bounds of the extrapolated trial while no minimizer is bracketed:
#: [a + 1.1 (a - a_x), a + 4 (a - a_x)] (Moré & Thuente, section 4).
EXTRAPOLATE_LOW = 1.1
EXTRAPOLATE_HIGH = 4.0
#: A bracket that did not shrink below this fraction of its width two
#: iterations ago is bisected.
SHRINK = 0.66

_RUNNING, _ACCEPTED, _FAILED = 0, 1, 2


class Bracket(NamedTuple):
    """dcstep's variables: the best step so far `x` (lowest psi or phi),
    the other end `y` of the interval, the trial `t`, each a `Point`, and
    whether a minimizer is bracketed."""

    x: Point
    y: Point
    t: Point
    bracketed: tf.Tensor


def _cubic_terms(a, b):
    """theta and the radical gamma of the cubic through Points a and b
    (Moré & Thuente, section 4), gamma >= 0."""
    theta = 3.0 * (a.value - b.value) / (b.step - a.step) + a.derivative + b.derivative
    scale = tf.maximum(
        tf.abs(theta), tf.maximum(tf.abs(a.derivative), tf.abs(b.derivative))
    )
    radicand = (theta / scale) ** 2 - (a.derivative / scale) * (b.derivative / scale)
    return theta, scale * tf.sqrt(tf.maximum(radicand, 0.0))


def step_update(bracket, low, high):
    """The next trial step and the updated interval (dcstep).

    Four cases (Moré & Thuente, section 4), with x the best point so far
    and t the new trial:

    1. phi(t) > phi(x): the minimizer is bracketed in (x, t); the cubic
       minimizer if it is closer to x than the parabola's (through phi(x),
       phi'(x), phi(t)), else the mean of the two.
    2. phi(t) <= phi(x), phi'(t) of the other sign than phi'(x): bracketed
       between x and t; the cubic or the secant step, whichever is further
       from t.
    3. same sign, |phi'(t)| < |phi'(x)|: the cubic step if it goes beyond t
       (else the far bound), or the secant step: the closer one once
       bracketed (at most 0.66 of the way to y), the further one otherwise,
       kept in [low, high].
    4. same sign, |phi'(t)| >= |phi'(x)|: the cubic through t and y once
       bracketed, else the bound `high` (or `low`) in the direction of t.

    Args:
        bracket: a `Bracket`.
        low, high: the bounds of the trial step while not bracketed.

    Returns:
        `(trial, bracket)`: the next step and the `Bracket` with x and y
        updated (its `t` unchanged).
    """
    x, y, t, bracketed = bracket
    sign_change = t.derivative * tf.sign(x.derivative) < 0
    towards = tf.sign(t.step - x.step)  # +1 when t is beyond x

    # Case 1.
    theta, gamma = _cubic_terms(x, t)
    gamma1 = gamma * towards
    p = (gamma1 - x.derivative) + theta
    q = ((gamma1 - x.derivative) + gamma1) + t.derivative
    cubic1 = x.step + (p / q) * (t.step - x.step)
    quadratic1 = x.step + (
        (x.derivative / ((x.value - t.value) / (t.step - x.step) + x.derivative)) / 2.0
    ) * (t.step - x.step)
    case1 = tf.where(
        tf.abs(cubic1 - x.step) < tf.abs(quadratic1 - x.step),
        cubic1,
        cubic1 + (quadratic1 - cubic1) / 2.0,
    )

    # Cases 2 and 3 share theta and gamma (with the sign for t beyond x
    # reversed) and the secant step.
    gamma23 = -gamma * towards
    secant = t.step + (t.derivative / (t.derivative - x.derivative)) * (x.step - t.step)
    p = (gamma23 - t.derivative) + theta
    q = ((gamma23 - t.derivative) + gamma23) + x.derivative
    cubic2 = t.step + (p / q) * (x.step - t.step)
    case2 = tf.where(
        tf.abs(cubic2 - t.step) > tf.abs(secant - t.step), cubic2, secant
    )

    q3 = (gamma23 + (x.derivative - t.derivative)) + gamma23
    r3 = ((gamma23 - t.derivative) + theta) / q3
    far = tf.where(t.step > x.step, high, low)
    cubic3 = tf.where((r3 < 0) & (gamma23 != 0), t.step + r3 * (x.step - t.step), far)
    closer = tf.where(tf.abs(cubic3 - t.step) < tf.abs(secant - t.step), cubic3, secant)
    limit = t.step + SHRINK * (y.step - t.step)
    closer = tf.where(
        t.step > x.step, tf.minimum(limit, closer), tf.maximum(limit, closer)
    )
    further = tf.where(tf.abs(cubic3 - t.step) > tf.abs(secant - t.step), cubic3, secant)
    further = tf.clip_by_value(further, low, high)
    case3 = tf.where(bracketed, closer, further)

    # Case 4.
    theta4, gamma4 = _cubic_terms(t, y)
    gamma4 = gamma4 * tf.sign(y.step - t.step)
    p = (gamma4 - t.derivative) + theta4
    q = ((gamma4 - t.derivative) + gamma4) + y.derivative
    cubic4 = t.step + (p / q) * (y.step - t.step)
    case4 = tf.where(bracketed, cubic4, far)

    higher = t.value > x.value
    trial = tf.where(
        higher,
        case1,
        tf.where(
            sign_change,
            case2,
            tf.where(tf.abs(t.derivative) < tf.abs(x.derivative), case3, case4),
        ),
    )
    # The new interval: t replaces y when it is higher than x; otherwise t
    # becomes the best point, and x the other end if the slope changed sign.
    new_y = select(higher, t, select(sign_change, x, y))
    new_x = select(higher, x, t)
    return trial, Bracket(new_x, new_y, t, bracketed | higher | sign_change)


class _State(NamedTuple):
    evaluations: tf.Tensor
    status: tf.Tensor  # _RUNNING, _ACCEPTED or _FAILED
    trial: tf.Tensor  # the step the next iteration evaluates
    x: Point  # dcsrch's stx, fx, gx
    y: Point  # sty, fy, gy
    bracketed: tf.Tensor
    second_stage: tf.Tensor  # dcsrch's stage 2: psi(a) <= 0 and phi'(a) >= 0 seen
    low: tf.Tensor  # dcsrch's stmin
    high: tf.Tensor  # stmax
    width: tf.Tensor  # |y - x| after the last update
    width_before: tf.Tensor  # the width one update before
    bad_step: tf.Tensor  # the shortest step whose phi or phi' was not finite
    best: Point
    best_aux: Any


class _Tests(NamedTuple):
    """The constants of one search: phi(0), phi'(0), c1 phi'(0) (psi's
    shift), c2, xtol and the largest step."""

    value: tf.Tensor
    slope: tf.Tensor
    shift: tf.Tensor
    c2: tf.Tensor
    xtol: tf.Tensor
    max_step: tf.Tensor


def _advance_graph(state, point, tests):
    """dcsrch's tests at the new `point` and dcstep's next trial: the
    search's state after one evaluation (its `best_aux` left to the
    caller)."""
    a, f, df = point
    value, slope, shift, c2, xtol, max_step = tests
    dtype = value.dtype
    zero = tf.zeros([], dtype)
    finite = tf.math.is_finite(f) & tf.math.is_finite(df)
    decrease = f <= value + a * shift
    second_stage = state.second_stage | (decrease & (df >= 0))

    # dcsrch's tests: convergence, else a warning that stops the search.
    converged = decrease & (tf.abs(df) <= -c2 * slope)
    stuck = state.bracketed & (
        (a <= state.low)
        | (a >= state.high)
        | (state.high - state.low <= xtol * state.high)
    )
    at_max = (a >= max_step) & decrease & (df <= shift)
    stop = finite & (converged | stuck | at_max)
    # Stopped short of both conditions (an interval narrower than xtol,
    # or rounding), the search fails; at the largest step, still going
    # down, it accepts.
    accept = finite & (converged | at_max)

    # While psi has not been seen to turn up, and phi(a) <= phi(x)
    # but psi(a) > 0, the trials follow psi rather than phi.
    on_psi = ~second_stage & (f <= state.x.value) & ~decrease
    s = tf.where(on_psi, shift, zero)
    to_psi = lambda p: Point(p.step, p.value - p.step * s, p.derivative - s)
    from_psi = lambda p: Point(p.step, p.value + p.step * s, p.derivative + s)
    trial, bracket = step_update(
        Bracket(to_psi(state.x), to_psi(state.y), to_psi(point), state.bracketed),
        state.low,
        state.high,
    )
    x, y, bracketed = from_psi(bracket.x), from_psi(bracket.y), bracket.bracketed
    width = tf.abs(y.step - x.step)
    # A bracket that does not shrink fast enough is bisected.
    trial = tf.where(
        bracketed & (width >= SHRINK * state.width_before),
        x.step + 0.5 * (y.step - x.step),
        trial,
    )
    width_before = tf.where(bracketed, state.width, state.width_before)
    width = tf.where(bracketed, width, state.width)
    low = tf.where(
        bracketed, tf.minimum(x.step, y.step), trial + EXTRAPOLATE_LOW * (trial - x.step)
    )
    high = tf.where(
        bracketed, tf.maximum(x.step, y.step), trial + EXTRAPOLATE_HIGH * (trial - x.step)
    )
    trial = tf.clip_by_value(trial, zero, max_step)
    # No progress possible: evaluate the best point again (the search
    # then stops there).
    trial = tf.where(
        bracketed & ((trial <= low) | (trial >= high) | (high - low <= xtol * high)),
        x.step,
        trial,
    )
    # Never beyond a step known to give a non-finite phi: halfway there.
    bad_step = tf.where(finite, state.bad_step, tf.minimum(state.bad_step, a))
    keep = lambda new, old: select(finite, new, old)
    best_step = keep(x, state.x).step
    trial = tf.where(finite, trial, best_step + 0.5 * (a - best_step))
    trial = tf.where(
        trial >= bad_step, best_step + 0.5 * (bad_step - best_step), trial
    )
    return _State(
        evaluations=state.evaluations + 1,
        status=tf.where(
            accept, _ACCEPTED, tf.where(stop, _FAILED, _RUNNING)
        ),
        trial=trial,
        x=keep(x, state.x),
        y=keep(y, state.y),
        bracketed=tf.where(finite, bracketed, state.bracketed),
        second_stage=tf.where(finite, second_stage, state.second_stage),
        low=tf.where(finite, low, state.low),
        high=tf.where(finite, high, state.high),
        width=tf.where(finite, width, state.width),
        width_before=tf.where(finite, width_before, state.width_before),
        bad_step=bad_step,
        best=select(accept, point, state.best),
        best_aux=(),
    )


# One XLA computation per evaluation (see `scalar.compiled`).
_advance = compiled(_advance_graph)


def more_thuente(
    phi_and_derivative,
    value,
    slope,
    initial_step,
    c1,
    c2,
    xtol,
    max_evaluations,
    max_step=1e10,
    aux=(),
):
    """A step satisfying phi(a) <= phi(0) + c1 a phi'(0) and
    |phi'(a)| <= c2 |phi'(0)|, by Moré & Thuente's search.

    Args:
        phi_and_derivative: a -> (phi(a), phi'(a), aux).
        value: phi(0), finite; slope: phi'(0) < 0.
        initial_step: the first trial step, > 0 (clipped to `max_step`).
        c1, c2: the constants, 0 < c1 < c2 < 1 (MINPACK's ftol and gtol).
        xtol: the relative width of the interval of uncertainty under which
            the search stops (Python float).
        max_evaluations: the most phi calls (a Python int).
        max_step: the largest step tried (the smallest is 0).
        aux: the auxiliary data at a = 0, returned when no step is found.

    Returns:
        A `ScalarResult`.
    """
    dtype = value.dtype
    constant = lambda v: tf.constant(v, dtype)
    zero, max_step = tf.zeros([], dtype), constant(max_step)
    inf = constant(np.inf)
    # psi(a) = phi(a) - phi(0) - c1 a phi'(0) has slope psi' = phi' - shift.
    tests = _Tests(value, slope, constant(c1) * slope, constant(c2), constant(xtol), max_step)

    body = evaluate_then(
        phi_and_derivative, _advance, tests, lambda s: tf.equal(s.status, _ACCEPTED)
    )

    initial_step = tf.minimum(tf.cast(initial_step, dtype), max_step)
    origin = Point(zero, value, slope)
    start = _State(
        evaluations=tf.constant(0, tf.int32),
        status=tf.constant(_RUNNING, tf.int32),
        trial=initial_step,
        x=origin,
        y=origin,
        bracketed=tf.constant(False),
        second_stage=tf.constant(False),
        low=zero,
        high=initial_step + EXTRAPOLATE_HIGH * initial_step,
        width=max_step,
        width_before=2.0 * max_step,
        bad_step=inf,
        best=origin,
        best_aux=aux,
    )
    state = loop(
        lambda state: tf.equal(state.status, _RUNNING)
        & (state.evaluations < max_evaluations),
        body,
        start,
        max_evaluations,
    )
    found = tf.equal(state.status, _ACCEPTED)
    return result(found, state.best, state.best_aux, origin, aux, state.evaluations)
