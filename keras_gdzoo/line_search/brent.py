"""The scalar exact line search: a = argmin_{a > 0} phi(a) by bracketing
and Brent's method, on phi alone (no derivative but phi'(0)).

The rules, and where they depart from Brent (1973), are those
`keras_gdzoo.line_search.Exact` documents; each loop carries a `NamedTuple`.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_gdzoo.line_search.scalar import ScalarResult
from keras_gdzoo.line_search.scalar import loop
from keras_gdzoo.line_search.scalar import quadratic_minimizer
from keras_gdzoo.line_search.scalar import select

GOLDEN = 0.3819660112501051  # (3 - sqrt(5)) / 2
GROWTH = 1.618033988749895  # (1 + sqrt(5)) / 2


class Sample(NamedTuple):
    """A step and phi there (+inf where phi is not finite)."""

    step: tf.Tensor
    value: tf.Tensor


class _BracketState(NamedTuple):
    evaluations: tf.Tensor
    low: Sample  # the point before `middle`
    middle: Sample  # the lowest point so far
    high: Sample  # the lowest point beyond `middle` that is above it
    has_high: tf.Tensor  # whether `high` has been found
    trial: tf.Tensor  # the step the next iteration evaluates


class _BrentState(NamedTuple):
    """Brent's variables (Numerical Recipes' names): the bracket (a, b), x
    the lowest point so far, w the second lowest, v the previous w, d the
    last move and e the one before."""

    evaluations: tf.Tensor
    a: tf.Tensor
    b: tf.Tensor
    x: Sample
    w: Sample
    v: Sample
    d: tf.Tensor
    e: tf.Tensor
    probed: tf.Tensor  # whether the one-sided probe was spent
    done: tf.Tensor  # converged


def exact(phi, value, slope, initial_step, tolerance, max_evaluations):
    """A minimizer of phi on a > 0, to a relative `tolerance`.

    Args:
        phi: a -> phi(a).
        value: phi(0), finite; slope: phi'(0) < 0.
        initial_step: the first trial step, > 0.
        tolerance: the relative accuracy wanted (a Python float); the one
            used is max(tolerance, sqrt(machine epsilon)).
        max_evaluations: the most phi calls (a Python int).

    Returns:
        A `ScalarResult` (its `derivative` NaN, its `aux` ()); `found` is
        False when no point below phi(0) was found or no minimum was
        bracketed within the budget.
    """
    dtype = value.dtype
    zero = tf.zeros([], dtype)
    inf = tf.constant(np.inf, dtype)
    eps = np.finfo(dtype.as_numpy_dtype).eps
    tolerance = tf.constant(max(tolerance, float(np.sqrt(eps))), dtype)

    def finite_phi(a):
        f = tf.cast(phi(a), dtype)
        return tf.where(tf.math.is_finite(f), f, inf)

    # A first trial so short that the decrease it should bring,
    # -a*phi'(0), is within rounding of phi(0) says nothing: phi(a) then
    # equals phi(0) to rounding, and taking it for a point above phi(0)
    # would shrink the trials towards 0 until the budget ran out.
    noise = 16.0 * eps * tf.abs(value)

    # Until some point is above phi(middle) trials grow; after that, while
    # middle is still a = 0, they shrink.
    def bracket_body(state):
        trial, lo, mid, hi = state.trial, state.low, state.middle, state.high
        f = finite_phi(trial)
        lower = f < mid.value
        unresolved = (
            ~lower
            & ~state.has_high
            & tf.equal(mid.step, 0)
            & (f <= value + noise)
            & (-trial * slope <= noise)
        )
        keep_hi = lower | unresolved
        point = Sample(trial, f)
        new_lo = select(lower, mid, lo)
        new_mid = select(lower, point, mid)
        new_hi = select(keep_hi, hi, point)
        has_hi = state.has_high | ~keep_hi
        # After an unresolved trial: at least 100 times further, and far
        # enough for the linear decrease to be 100 times the rounding.
        longer = tf.maximum(100.0 * trial, 100.0 * noise / -slope)
        # Growing: strides grow at least by the golden ratio, more (up to
        # 100 times) when the parabola through phi(0), phi'(0) and the
        # lowest point has its vertex further out.
        stride = new_mid.step - new_lo.step
        vertex, convex = quadratic_minimizer(zero, value, slope, *new_mid)
        golden = new_mid.step + GROWTH * stride
        grown = tf.where(
            convex,
            tf.clip_by_value(vertex, golden, new_mid.step + 100.0 * stride),
            golden,
        )
        # Shrinking: the vertex of the parabola through phi(0), phi'(0) and
        # phi(hi), kept in [0.1, 0.5] hi (0.5 hi if phi(hi) is not finite).
        vertex, convex = quadratic_minimizer(zero, value, slope, *new_hi)
        shrunk = tf.where(
            convex & tf.math.is_finite(new_hi.value),
            tf.clip_by_value(vertex, 0.1 * new_hi.step, 0.5 * new_hi.step),
            0.5 * new_hi.step,
        )
        return _BracketState(
            evaluations=state.evaluations + 1,
            low=new_lo,
            middle=new_mid,
            high=new_hi,
            has_high=has_hi,
            trial=tf.where(unresolved, longer, tf.where(has_hi, shrunk, grown)),
        )

    origin = Sample(zero, value)
    start = _BracketState(
        evaluations=tf.constant(0, tf.int32),
        low=origin,
        middle=origin,
        high=origin,
        has_high=tf.constant(False),
        trial=initial_step,
    )
    bracketing = lambda s: ~(s.has_high & (s.middle.step > 0))
    bracket = loop(
        lambda s: bracketing(s) & (s.evaluations < max_evaluations),
        bracket_body,
        start,
        max_evaluations,
    )
    lo, mid, hi = bracket.low, bracket.middle, bracket.high
    bracketed = (mid.step > 0) & (hi.step > mid.step)

    # The absolute part of the tolerance takes its scale from the bracketed
    # step, not from initial_step: a first trial far too long would
    # otherwise stop Brent at once, far from the minimizer.
    absolute = tolerance * 1e-3 * mid.step

    def brent_body(state):
        a, b, x, w_, v = state.a, state.b, state.x, state.w, state.v
        xm = 0.5 * (a + b)
        tol1 = tolerance * tf.abs(x.step) + absolute
        tol2 = 2.0 * tol1
        converged = tf.abs(x.step - xm) <= tol2 - 0.5 * (b - a)

        r = (x.step - w_.step) * (x.value - v.value)
        q = (x.step - v.step) * (x.value - w_.value)
        p = (x.step - v.step) * q - (x.step - w_.step) * r
        q = 2.0 * (q - r)
        p = tf.where(q > 0, -p, p)
        q = tf.abs(q)
        # Parabola only when it moves less than half the step before last
        # and lands inside (a, b); NaN from infinite values fails these.
        parabolic = (
            (tf.abs(state.e) > tol1)
            & (tf.abs(p) < tf.abs(0.5 * q * state.e))
            & (p > q * (a - x.step))
            & (p < q * (b - x.step))
        )
        golden_e = tf.where(x.step >= xm, a - x.step, b - x.step)
        parabola_d = p / q
        u_parabola = x.step + parabola_d
        near_end = (u_parabola - a < tol2) | (b - u_parabola < tol2)
        toward_middle = tf.where(xm - x.step >= 0, tol1, -tol1)
        parabola_d = tf.where(near_end, toward_middle, parabola_d)
        # Once one end is within tol2 of x, parabolas through points that
        # close are rounding noise and Brent would creep up on the other
        # end by golden sections: probe x -+ tol1 on that side once
        # instead (if it is no better, the bracket is tight).
        tight_right = b - x.step <= tol2
        interior = (x.step > a) & (x.step < b)
        probe = (
            ~parabolic & ~state.probed & interior & (tight_right | (x.step - a <= tol2))
        )
        probe_d = tf.where(tight_right, -tol1, tol1)
        new_e = tf.where(parabolic, state.d, golden_e)
        new_d = tf.where(
            parabolic, parabola_d, tf.where(probe, probe_d, GOLDEN * golden_e)
        )
        u = tf.where(
            tf.abs(new_d) >= tol1,
            x.step + new_d,
            x.step + tf.where(new_d >= 0, tol1, -tol1),
        )

        fu = tf.cond(converged, lambda: inf, lambda: finite_phi(u))
        n = tf.where(converged, state.evaluations, state.evaluations + 1)
        trial = Sample(u, fu)
        # Values within rounding of phi(x) count as no better: the bracket
        # then shrinks onto x instead of x wandering among ties.
        better = fu < x.value - 4.0 * eps * tf.abs(x.value)
        right, left = u >= x.step, u < x.step
        a_new = tf.where(better, tf.where(right, x.step, a), tf.where(left, u, a))
        b_new = tf.where(better, tf.where(right, b, x.step), tf.where(left, b, u))
        to_w = ~better & ((fu <= w_.value) | tf.equal(w_.step, x.step))
        to_v = (
            ~better
            & ~to_w
            & ((fu <= v.value) | tf.equal(v.step, x.step) | tf.equal(v.step, w_.step))
        )
        new = _BrentState(
            evaluations=n,
            a=a_new,
            b=b_new,
            x=select(better, trial, x),
            w=select(better, x, select(to_w, trial, w_)),
            v=select(better | to_w, w_, select(to_v, trial, v)),
            d=new_d,
            e=new_e,
            probed=state.probed | probe,
            done=converged,
        )
        # Once converged nothing moves (but `done` and the evaluations).
        kept = select(converged, state, new)
        return kept._replace(evaluations=n, probed=new.probed, done=converged)

    def refine():
        # The bracket ends are evaluated points: they seed w (the lower
        # end) and v, so the first parabola already uses all three.
        lo_first = lo.value <= hi.value
        start = _BrentState(
            evaluations=bracket.evaluations,
            a=lo.step,
            b=hi.step,
            x=mid,
            w=select(lo_first, lo, hi),
            v=select(lo_first, hi, lo),
            d=zero,
            e=hi.step - lo.step,
            probed=tf.constant(False),
            done=tf.constant(False),
        )
        state = loop(
            lambda s: ~s.done & (s.evaluations < max_evaluations),
            brent_body,
            start,
            max_evaluations,
        )
        return state.evaluations, state.x.step, state.x.value

    n, x, fx = tf.cond(bracketed, refine, lambda: (bracket.evaluations, zero, value))
    found = bracketed & (x > 0) & (fx < value)
    return ScalarResult(
        step=tf.where(found, x, zero),
        value=tf.where(found, fx, value),
        derivative=tf.constant(np.nan, dtype),
        aux=(),
        evaluations=n,
        found=found,
    )
