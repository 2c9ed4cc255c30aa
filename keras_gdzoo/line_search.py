"""Line searches: how far to go along a search direction.

A full-batch solver picks a direction d at w and asks a line search for a
step a > 0 along it. The search sees the one-dimensional function

    phi(a) = E(w + a*d),    phi'(a) = dE/dw(w + a*d) . d,

with phi(0) = E(w) and phi'(0) = g.d < 0 (d must be a descent direction),
and returns the step it accepted together with E and dE/dw there, so the
solver does not evaluate them again.

Three searches, each named by the string a solver's `line_search=` accepts:

* `"strong-wolfe"`: `StrongWolfe`, bracketing and zoom (Nocedal & Wright,
  Algorithms 3.5 and 3.6). The default of CG, BFGS and L-BFGS.
* `"armijo"`: `Backtracking`, Armijo's sufficient decrease by shrinking.
* `"exact"`: `Exact`, the lecture's a = argmin_{a>0} E(w + a*d), located by
  bracketing and Brent's method. The default of steepest descent.

Every search is a pure function of tensors whose loops are `tf.while_loop`s
with a bounded number of evaluations (`max_evaluations`), so it traces into
the solver's one `tf.function` and compiles with XLA. That control flow is
written out and skips AutoGraph (which only added seconds of tracing); the
objective's own code is still converted by AutoGraph, as in any
`tf.function`. A search never raises
and never accepts a non-finite loss: it returns a `LineSearchResult` whose
`failed` flag tells the solver to try something else, with `step` 0 and
`value`/`gradient` those at w (no move).
"""

import inspect
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf


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


def _check_max_evaluations(max_evaluations, minimum):
    if (
        isinstance(max_evaluations, bool)
        or not isinstance(max_evaluations, (int, np.integer))
        or max_evaluations < minimum
    ):
        raise ValueError(
            f"Argument `max_evaluations` must be an integer >= {minimum}. "
            f"Received: max_evaluations={max_evaluations!r}"
        )
    return int(max_evaluations)


def _check_open_interval(name, value, low, high, low_name=None):
    low_text = low_name or f"{low:g}"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating, np.integer))
        or not low < value < high
    ):
        raise ValueError(
            f"Argument `{name}` must be in ({low_text}, {high:g}). "
            f"Received: {name}={value!r}"
        )
    return float(value)


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
    function included, fails at once without evaluating anything).

    Args:
        max_evaluations: the most objective evaluations one search may make.
    """

    def __init__(self, max_evaluations):
        self.max_evaluations = _check_max_evaluations(max_evaluations, 1)

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
            lambda: _no_move(value, gradient, tf.constant(0, tf.int32)),
        )

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        raise NotImplementedError

    def get_config(self):
        return {"max_evaluations": self.max_evaluations}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


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


def _no_move(value, gradient, evaluations):
    return LineSearchResult(
        step=tf.zeros([], value.dtype),
        value=value,
        gradient=gradient,
        evaluations=evaluations,
        failed=tf.constant(True),
    )


def _cubic_minimizer(a1, f1, df1, a2, f2, df2):
    """Minimizer of the cubic through (a1, f1, df1) and (a2, f2, df2).

    Nocedal & Wright (2006), eq. 3.59. Returns (a, valid)."""
    d1 = df1 + df2 - 3.0 * (f1 - f2) / (a1 - a2)
    radicand = d1 * d1 - df1 * df2
    d2 = tf.sign(a2 - a1) * tf.sqrt(tf.maximum(radicand, 0.0))
    a = a2 - (a2 - a1) * (df2 + d2 - d1) / (df2 - df1 + 2.0 * d2)
    return a, (radicand >= 0) & tf.math.is_finite(a)


def _quadratic_minimizer(a1, f1, df1, a2, f2):
    """Minimizer of the parabola through (a1, f1, df1) and (a2, f2)."""
    width = a2 - a1
    curvature = f2 - f1 - df1 * width
    a = a1 - df1 * width * width / (2.0 * curvature)
    return a, (curvature > 0) & tf.math.is_finite(a)


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class StrongWolfe(LineSearch):
    """Line search for a step satisfying the strong Wolfe conditions.

    An accepted step a satisfies, with phi(a) = E(w + a*d):

        phi(a) <= phi(0) + c1 * a * phi'(0)      (sufficient decrease)
        |phi'(a)| <= c2 * |phi'(0)|              (strong curvature)

    The search first brackets (Nocedal & Wright, Algorithm 3.5): trial steps
    grow from `initial_step` until one is acceptable or an interval is known
    to contain acceptable steps; it then zooms (Algorithm 3.6) on that
    interval, each trial the minimizer of the cubic interpolating phi and
    phi' at both ends (eq. 3.59), else of a parabola, else the midpoint, kept
    at least a tenth of the interval away from either end.

    Args:
        c1: sufficient-decrease constant, 0 < c1 < 1.
        c2: curvature constant, c1 < c2 < 1. 0.9 suits (quasi-)Newton
            directions; conjugate gradients use 0.1.
        max_evaluations: the most `value_and_gradient` calls one search
            makes; the search fails when they run out.

    References:
        Wolfe, P. (1969). Convergence conditions for ascent methods. SIAM
        Review 11(2).
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        Algorithms 3.5 (p. 60) and 3.6 (p. 61).
        Moré, J. J. & Thuente, D. J. (1994). Line search algorithms with
        guaranteed sufficient decrease. ACM TOMS 20(3) (extrapolation bounds).

    Note: while bracketing, the next trial is the minimizer of the cubic
    through the last two trials kept in [a + 0.1*(a - a_prev),
    a + 4*(a - a_prev)], where Nocedal & Wright leave the choice open (the
    upper bound is Moré & Thuente's; their lower bound, 1.1, would overshoot
    minimizers the cubic locates). A trial whose loss or gradient is not
    finite is treated as too long a step: it becomes the far end of the
    interval and the search bisects towards the last good point.

    Example:

    >>> search = StrongWolfe(c1=1e-4, c2=0.9)
    >>> result = search.search(objective, w, -g, value, g, initial_step=1.0)
    """

    def __init__(self, c1=1e-4, c2=0.9, max_evaluations=25):
        super().__init__(max_evaluations)
        self.c1 = _check_open_interval("c1", c1, 0.0, 1.0)
        self.c2 = _check_open_interval(
            "c2", c2, self.c1, 1.0, low_name=f"c1={self.c1:g}"
        )

    def get_config(self):
        return {"c1": self.c1, "c2": self.c2, "max_evaluations": self.max_evaluations}

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        dtype = w.dtype
        c1 = tf.constant(self.c1, dtype)
        c2 = tf.constant(self.c2, dtype)
        zero = tf.zeros([], dtype)
        inf = tf.constant(np.inf, dtype)
        nan = tf.constant(np.nan, dtype)
        eps = tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype)
        bracketing, zooming, accepted, failed = 0, 1, 2, 3

        def body(n, stage, trial, prev, lo, hi, best):
            a = trial
            f, g = objective.value_and_gradient(w + a * direction)
            df = _dot(g, direction)
            n = n + 1
            finite = _all_finite(f, g) & tf.math.is_finite(df)
            # A non-finite point counts as a value too high: never accepted.
            f = tf.where(finite, f, inf)
            df = tf.where(finite, df, nan)
            decrease = finite & (f <= value + c1 * a * slope)
            curvature = finite & (tf.abs(df) <= -c2 * slope)
            point = (a, f, df)

            # Algorithm 3.5 (bracketing).
            too_far = ~decrease | (f >= prev[1])
            b_accept = ~too_far & curvature
            # Otherwise phi'(a) >= 0 reverses the interval (lo = a, hi = prev)
            # and phi'(a) < 0 extends it.
            b_extend = ~too_far & ~curvature & (df < 0)
            # Algorithm 3.6 (zoom) on [lo, hi].
            z_high = ~decrease | (f >= lo[1])
            z_accept = ~z_high & curvature
            z_flip = ~z_high & ~curvature & (df * (hi[0] - lo[0]) >= 0)

            in_bracketing = tf.equal(stage, bracketing)
            select = lambda cond, x, y: tuple(
                tf.where(cond, u, v) for u, v in zip(x, y)
            )
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
            new_stage = tf.where(
                accept,
                accepted,
                tf.where(extend, bracketing, zooming),
            )
            best = tuple(tf.where(accept, u, v) for u, v in zip((a, f, g), best))

            # Next trial: extrapolation while bracketing, interpolation in zoom.
            a_prev = prev[0]
            low_bound = a + 0.1 * (a - a_prev)
            high_bound = a + 4.0 * (a - a_prev)
            guess, valid = _cubic_minimizer(a_prev, prev[1], prev[2], a, f, df)
            guess = tf.where(valid & (guess > a), guess, high_bound)
            extrapolated = tf.clip_by_value(guess, low_bound, high_bound)
            interpolated = _zoom_trial(new_lo, new_hi)
            next_trial = tf.where(extend, extrapolated, interpolated)
            new_prev = select(extend, point, prev)

            # An interval narrower than the floating-point spacing of its ends
            # cannot yield a better trial.
            width = tf.abs(new_hi[0] - new_lo[0])
            collapsed = width <= eps * tf.maximum(new_hi[0], new_lo[0])
            new_stage = tf.where(
                tf.equal(new_stage, zooming) & collapsed, failed, new_stage
            )
            return n, new_stage, next_trial, new_prev, new_lo, new_hi, best

        def condition(n, stage, *_):
            return (stage < accepted) & (n < self.max_evaluations)

        origin = (zero, value, slope)
        n, stage, _, _, _, _, best = tf.while_loop(
            condition,
            body,
            (
                tf.constant(0, tf.int32),
                tf.constant(bracketing, tf.int32),
                initial_step,
                origin,
                origin,
                origin,
                (zero, value, gradient),
            ),
            maximum_iterations=self.max_evaluations,
        )
        found = tf.equal(stage, accepted)
        return LineSearchResult(
            step=tf.where(found, best[0], zero),
            value=tf.where(found, best[1], value),
            gradient=tf.where(found, best[2], gradient),
            evaluations=n,
            failed=~found,
        )


def _zoom_trial(lo, hi):
    """The next trial in [lo, hi]: cubic, else parabola, else midpoint,
    kept at least a tenth of the interval from either end."""
    a_lo, f_lo, df_lo = lo
    a_hi, f_hi, df_hi = hi
    cubic, cubic_ok = _cubic_minimizer(a_lo, f_lo, df_lo, a_hi, f_hi, df_hi)
    quadratic, quadratic_ok = _quadratic_minimizer(a_lo, f_lo, df_lo, a_hi, f_hi)
    midpoint = 0.5 * (a_lo + a_hi)
    left = tf.minimum(a_lo, a_hi)
    right = tf.maximum(a_lo, a_hi)
    margin = 0.1 * (right - left)
    inside = lambda a: (a >= left) & (a <= right)
    # The far end is non-finite after a NaN/inf trial: only bisect then.
    interpolate = tf.math.is_finite(f_hi) & tf.math.is_finite(df_hi)
    trial = tf.where(
        interpolate & cubic_ok & inside(cubic),
        cubic,
        tf.where(interpolate & quadratic_ok & inside(quadratic), quadratic, midpoint),
    )
    return tf.clip_by_value(trial, left + margin, right - margin)


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Backtracking(LineSearch):
    """Backtracking line search for Armijo's sufficient decrease.

    Trial steps a = initial_step * shrink^k, k = 0, 1, ..., until

        E(w + a*d) <= E(w) + c1 * a * g.d

    with g = dE/dw(w). Trial points cost one `objective.value` each; the
    accepted point one `value_and_gradient`.

    Args:
        c1: sufficient-decrease constant, 0 < c1 < 1.
        shrink: the factor applied to a rejected step, 0 < shrink < 1.
        max_evaluations: the most objective calls one search makes, the
            final `value_and_gradient` included; the search fails when they
            run out.

    References:
        Armijo, L. (1966). Minimization of functions having Lipschitz
        continuous first partial derivatives. Pacific J. Math. 16(1).
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        Algorithm 3.1 (p. 37).

    Note: a trial whose loss is not finite is rejected like any other.
    """

    def __init__(self, c1=1e-4, shrink=0.5, max_evaluations=30):
        super().__init__(max_evaluations)
        if self.max_evaluations < 2:
            raise ValueError(
                "Argument `max_evaluations` must be >= 2 for Backtracking (one "
                "trial and the gradient at the accepted step). "
                f"Received: max_evaluations={max_evaluations!r}"
            )
        self.c1 = _check_open_interval("c1", c1, 0.0, 1.0)
        self.shrink = _check_open_interval("shrink", shrink, 0.0, 1.0)

    def get_config(self):
        return {
            "c1": self.c1,
            "shrink": self.shrink,
            "max_evaluations": self.max_evaluations,
        }

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        dtype = w.dtype
        c1 = tf.constant(self.c1, dtype)
        shrink = tf.constant(self.shrink, dtype)

        def body(n, a, done):
            f = objective.value(w + a * direction)
            ok = tf.math.is_finite(f) & (f <= value + c1 * a * slope)
            return n + 1, tf.where(ok, a, a * shrink), ok

        def condition(n, a, done):
            return ~done & (n < self.max_evaluations - 1)

        n, a, done = tf.while_loop(
            condition,
            body,
            (tf.constant(0, tf.int32), initial_step, tf.constant(False)),
            maximum_iterations=self.max_evaluations - 1,
        )

        def at_accepted():
            f, g = objective.value_and_gradient(w + a * direction)
            good = _all_finite(f, g)
            return LineSearchResult(
                step=tf.where(good, a, tf.zeros([], dtype)),
                value=tf.where(good, f, value),
                gradient=tf.where(good, g, gradient),
                evaluations=n + 1,
                failed=~good,
            )

        return tf.cond(done, at_accepted, lambda: _no_move(value, gradient, n))


_GOLDEN = 0.3819660112501051  # (3 - sqrt(5)) / 2
_GROWTH = 1.618033988749895  # (1 + sqrt(5)) / 2


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Exact(LineSearch):
    """The lecture's exact line search: a = argmin_{a > 0} E(w + a*d).

    First a minimum of phi(a) = E(w + a*d) is bracketed, lo < x < hi with
    phi(x) below phi(lo) and phi(hi), starting from a = 0 and
    a = initial_step: while phi keeps falling, trial steps grow (strides
    growing by the golden ratio at least, further when the parabola through
    phi(0), phi'(0) and the lowest point puts its vertex further out);
    while the first trial is above phi(0), they shrink (to that parabola's
    vertex, kept in [0.1, 0.5] times the last trial). Brent's method
    (parabolic interpolation safeguarded by golden-section steps) then
    shrinks the bracket until the minimizer is known to within
    `tolerance * a` (relative). Bracketing and Brent use `objective.value`
    only; the accepted point costs one `value_and_gradient`.

    Args:
        tolerance: relative accuracy of the minimizing step, > 0.
        max_evaluations: the most objective calls one search makes, the
            final `value_and_gradient` included.

    References:
        Cauchy, A. (1847), for steepest descent with this step.
        Brent, R. P. (1973). Algorithms for Minimization without
        Derivatives, ch. 5.
        Press, W. H. et al. (2007). Numerical Recipes, 3rd ed., sec. 10.3.

    Note: the tolerance actually used is max(tolerance, sqrt(machine
    epsilon)) (1.5e-8 in float64, 3.5e-4 in float32): near a minimum phi is
    flat to second order, so steps closer than that cannot be told apart.
    Two changes to Brent's algorithm for the same reason: a trial whose
    value is within 4 machine epsilons (relative) of phi(x) counts as no
    better than x, and once one end of the bracket is within 2 tol of x,
    the other side is probed once at x -+ tol instead of approached by
    golden sections. The search fails when no point below E(w) is found or
    no minimum is bracketed within the budget (E may fall without bound
    along d). If the budget runs out while Brent is refining, the lowest
    point found is accepted: it lies in a bracket of the minimum, only not
    to `tolerance`. A trial whose loss is not finite counts as +inf. A
    first trial too short to resolve, one whose expected decrease
    -a*phi'(0) and whose actual change are both within 16 machine epsilons
    of phi(0), is followed by a trial at least 100 times longer rather than
    counted as a point above phi(0).
    """

    def __init__(self, tolerance=1e-8, max_evaluations=40):
        super().__init__(max_evaluations)
        if self.max_evaluations < 3:
            raise ValueError(
                "Argument `max_evaluations` must be >= 3 for Exact (two trials "
                "and the gradient at the accepted step). "
                f"Received: max_evaluations={max_evaluations!r}"
            )
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, (int, float, np.floating, np.integer))
            or not tolerance > 0
        ):
            raise ValueError(
                f"Argument `tolerance` must be > 0. Received: tolerance={tolerance!r}"
            )
        self.tolerance = float(tolerance)

    def get_config(self):
        return {"tolerance": self.tolerance, "max_evaluations": self.max_evaluations}

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        dtype = w.dtype
        zero = tf.zeros([], dtype)
        inf = tf.constant(np.inf, dtype)
        eps = np.finfo(dtype.as_numpy_dtype).eps
        tolerance = tf.constant(max(self.tolerance, float(np.sqrt(eps))), dtype)
        budget = self.max_evaluations - 1  # one left for the gradient

        def phi(a):
            f = objective.value(w + a * direction)
            return tf.where(tf.math.is_finite(f), f, inf)

        # A first trial so short that the decrease it should bring,
        # -a*phi'(0), is within rounding of phi(0) says nothing: phi(a) then
        # equals phi(0) to rounding, and taking it for a point above phi(0)
        # would shrink the trials towards 0 until the budget ran out.
        noise = 16.0 * eps * tf.abs(value)

        # Bracketing: mid is the lowest point so far, lo the one before it,
        # hi the lowest point beyond mid that is above it; points are
        # (a, phi(a)). Until some point is above phi(mid) trials grow; after
        # that, while mid is still a = 0, they shrink.
        def bracket_body(n, lo, mid, hi, has_hi, trial):
            f = phi(trial)
            lower = f < mid[1]
            unresolved = (
                ~lower
                & ~has_hi
                & tf.equal(mid[0], 0)
                & (f <= value + noise)
                & (-trial * slope <= noise)
            )
            keep_hi = lower | unresolved
            new_lo = tuple(tf.where(lower, u, v) for u, v in zip(mid, lo))
            new_mid = tuple(tf.where(lower, u, v) for u, v in zip((trial, f), mid))
            new_hi = tuple(tf.where(keep_hi, u, v) for u, v in zip(hi, (trial, f)))
            has_hi = has_hi | ~keep_hi
            # After an unresolved trial: at least 100 times further, and far
            # enough for the linear decrease to be 100 times the rounding.
            longer = tf.maximum(100.0 * trial, 100.0 * noise / -slope)
            # Growing: strides grow at least by the golden ratio, more (up to
            # 100 times) when the parabola through phi(0), phi'(0) and the
            # lowest point has its vertex further out.
            stride = new_mid[0] - new_lo[0]
            vertex, convex = _quadratic_minimizer(
                zero, value, slope, new_mid[0], new_mid[1]
            )
            golden = new_mid[0] + _GROWTH * stride
            grown = tf.where(
                convex,
                tf.clip_by_value(vertex, golden, new_mid[0] + 100.0 * stride),
                golden,
            )
            # Shrinking: the vertex of the parabola through phi(0), phi'(0) and
            # phi(hi), kept in [0.1, 0.5] hi (0.5 hi if phi(hi) is not finite).
            vertex, convex = _quadratic_minimizer(
                zero, value, slope, new_hi[0], new_hi[1]
            )
            shrunk = tf.where(
                convex & tf.math.is_finite(new_hi[1]),
                tf.clip_by_value(vertex, 0.1 * new_hi[0], 0.5 * new_hi[0]),
                0.5 * new_hi[0],
            )
            return (
                n + 1,
                new_lo,
                new_mid,
                new_hi,
                has_hi,
                tf.where(unresolved, longer, tf.where(has_hi, shrunk, grown)),
            )

        origin = (zero, value)
        n, lo, mid, hi, _, _ = tf.while_loop(
            lambda n, lo, mid, hi, has_hi, trial: (
                ~(has_hi & (mid[0] > 0)) & (n < budget)
            ),
            bracket_body,
            (
                tf.constant(0, tf.int32),
                origin,
                origin,
                origin,
                tf.constant(False),
                initial_step,
            ),
            maximum_iterations=budget,
        )
        bracketed = (mid[0] > 0) & (hi[0] > mid[0])

        # Brent (1973): x lowest so far, w second lowest, v the previous w.
        # The absolute part of the tolerance takes its scale from the
        # bracketed step, not from initial_step: a first trial far too long
        # would otherwise stop Brent at once, far from the minimizer.
        absolute = tolerance * 1e-3 * mid[0]

        def brent_body(n, a, b, x, fx, w_, fw, v, fv, d, e, probed, done):
            xm = 0.5 * (a + b)
            tol1 = tolerance * tf.abs(x) + absolute
            tol2 = 2.0 * tol1
            converged = tf.abs(x - xm) <= tol2 - 0.5 * (b - a)

            r = (x - w_) * (fx - fv)
            q = (x - v) * (fx - fw)
            p = (x - v) * q - (x - w_) * r
            q = 2.0 * (q - r)
            p = tf.where(q > 0, -p, p)
            q = tf.abs(q)
            # Parabola only when it moves less than half the step before last
            # and lands inside (a, b); NaN from infinite values fails these.
            parabolic = (
                (tf.abs(e) > tol1)
                & (tf.abs(p) < tf.abs(0.5 * q * e))
                & (p > q * (a - x))
                & (p < q * (b - x))
            )
            golden_e = tf.where(x >= xm, a - x, b - x)
            parabola_d = p / q
            u_parabola = x + parabola_d
            near_end = (u_parabola - a < tol2) | (b - u_parabola < tol2)
            toward_middle = tf.where(xm - x >= 0, tol1, -tol1)
            parabola_d = tf.where(near_end, toward_middle, parabola_d)
            # Once one end is within tol2 of x, parabolas through points that
            # close are rounding noise and Brent would creep up on the other
            # end by golden sections: probe x -+ tol1 on that side once
            # instead (if it is no better, the bracket is tight).
            tight_right = b - x <= tol2
            interior = (x > a) & (x < b)
            probe = ~parabolic & ~probed & interior & (tight_right | (x - a <= tol2))
            probe_d = tf.where(tight_right, -tol1, tol1)
            new_e = tf.where(parabolic, d, golden_e)
            new_d = tf.where(
                parabolic, parabola_d, tf.where(probe, probe_d, _GOLDEN * golden_e)
            )
            u = tf.where(
                tf.abs(new_d) >= tol1,
                x + new_d,
                x + tf.where(new_d >= 0, tol1, -tol1),
            )

            fu = tf.cond(converged, lambda: inf, lambda: phi(u))
            n = tf.where(converged, n, n + 1)
            # Values within rounding of phi(x) count as no better: the bracket
            # then shrinks onto x instead of x wandering among ties.
            better = fu < fx - 4.0 * eps * tf.abs(fx)
            a_new = tf.where(better, tf.where(u >= x, x, a), tf.where(u < x, u, a))
            b_new = tf.where(better, tf.where(u >= x, b, x), tf.where(u < x, b, u))
            to_w = ~better & ((fu <= fw) | tf.equal(w_, x))
            to_v = ~better & ~to_w & ((fu <= fv) | tf.equal(v, x) | tf.equal(v, w_))
            v_new = tf.where(better | to_w, w_, tf.where(to_v, u, v))
            fv_new = tf.where(better | to_w, fw, tf.where(to_v, fu, fv))
            w_new = tf.where(better, x, tf.where(to_w, u, w_))
            fw_new = tf.where(better, fx, tf.where(to_w, fu, fw))
            x_new = tf.where(better, u, x)
            fx_new = tf.where(better, fu, fx)

            keep = lambda new, old: tf.where(converged, old, new)
            return (
                n,
                keep(a_new, a),
                keep(b_new, b),
                keep(x_new, x),
                keep(fx_new, fx),
                keep(w_new, w_),
                keep(fw_new, fw),
                keep(v_new, v),
                keep(fv_new, fv),
                keep(new_d, d),
                keep(new_e, e),
                probed | probe,
                converged,
            )

        def refine():
            # The bracket ends are evaluated points: they seed w (the lower
            # end) and v, so the first parabola already uses all three.
            lo_first = lo[1] <= hi[1]
            w0 = tuple(tf.where(lo_first, u, v) for u, v in zip(lo, hi))
            v0 = tuple(tf.where(lo_first, u, v) for u, v in zip(hi, lo))
            loop_vars = (
                n,
                lo[0],
                hi[0],
                mid[0],
                mid[1],
                w0[0],
                w0[1],
                v0[0],
                v0[1],
                zero,
                hi[0] - lo[0],
                tf.constant(False),
                tf.constant(False),
            )
            result = tf.while_loop(
                lambda n, *rest: ~rest[-1] & (n < budget),
                brent_body,
                loop_vars,
                maximum_iterations=budget,
            )
            return result[0], result[3], result[4]

        n, x, fx = tf.cond(bracketed, refine, lambda: (n, zero, value))
        found = bracketed & (x > 0) & (fx < value)

        def at_accepted():
            f, g = objective.value_and_gradient(w + x * direction)
            good = _all_finite(f, g)
            return LineSearchResult(
                step=tf.where(good, x, zero),
                value=tf.where(good, f, value),
                gradient=tf.where(good, g, gradient),
                evaluations=n + 1,
                failed=~good,
            )

        return tf.cond(found, at_accepted, lambda: _no_move(value, gradient, n))


_IDENTIFIERS = {"strong-wolfe": StrongWolfe, "armijo": Backtracking, "exact": Exact}


def get(identifier, **defaults):
    """A line search from a name, a config dict or an instance.

    Args:
        identifier: `"strong-wolfe"`, `"armijo"`, `"exact"`, a `LineSearch`
            instance (returned as is) or the dict
            `keras.saving.serialize_keras_object` made of one.
        **defaults: keyword arguments for the class a string names; those the
            class does not take are ignored (so `ConjugateGradient` asks for
            `c2=0.1`, which only `"strong-wolfe"` uses).

    Example:

    >>> get("strong-wolfe", c2=0.1)
    StrongWolfe(c1=0.0001, c2=0.1, max_evaluations=25)
    """
    if isinstance(identifier, LineSearch):
        return identifier
    if isinstance(identifier, dict):
        search = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(search, LineSearch):
            raise ValueError(
                "Argument `line_search` must describe a keras_gdzoo line search. "
                f"Received: line_search={identifier!r}"
            )
        return search
    if isinstance(identifier, str) and identifier in _IDENTIFIERS:
        cls = _IDENTIFIERS[identifier]
        accepted = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in defaults.items() if k in accepted})
    raise ValueError(
        "Argument `line_search` must be one of "
        f"{sorted(_IDENTIFIERS)} or a `keras_gdzoo.line_search.LineSearch` "
        f"instance. Received: line_search={identifier!r}"
    )
