"""The three line searches a solver's `line_search=` names.

Each is a thin vector layer: it validates its arguments, turns the
objective into phi(a) = E(w + a*d) and runs the scalar search of the same
name (`keras_gdzoo.line_search.scalar`, `keras_gdzoo.line_search.brent`).
"""

import keras

from keras_gdzoo import validation
from keras_gdzoo.line_search import brent
from keras_gdzoo.line_search import more_thuente
from keras_gdzoo.line_search import scalar
from keras_gdzoo.line_search.base import LineSearch
from keras_gdzoo.line_search.base import LineSearchResult
from keras_gdzoo.line_search.base import line_functions
from keras_gdzoo.line_search.base import with_gradient


def _constant(name, value):
    """c1 (or shrink): 0 < value < 1."""
    return validation.open_interval(name, value, 0.0, 1.0, low_name="0", high_name="1")


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

    E(w) = |w|^2 along -g: a = 1 overshoots to E(w) again, and the cubic
    through phi(0), phi'(0), phi(1), phi'(1) is the parabola itself, whose
    minimizer a = 1/2 the zoom tries next and accepts.

    >>> from keras_gdzoo.solvers import FunctionObjective
    >>> objective = FunctionObjective(
    ...     lambda w: tf.reduce_sum(w**2), size=2, dtype="float64")
    >>> w = tf.constant([1.0, -2.0], tf.float64)
    >>> value, g = objective.value_and_gradient(w)
    >>> search = StrongWolfe(c1=1e-4, c2=0.9)
    >>> result = search.search(objective, w, -g, value, g, initial_step=1.0)
    >>> float(result.step), int(result.evaluations), bool(result.failed)
    (0.5, 2, False)
    """

    def __init__(self, c1=1e-4, c2=0.9, max_evaluations=25):
        super().__init__(max_evaluations)
        self.c1 = _constant("c1", c1)
        self.c2 = validation.open_interval(
            "c2", c2, self.c1, 1.0, low_name=f"c1={self.c1:g}", high_name="1"
        )

    config_names = ("c1", "c2", "max_evaluations")

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        _, phi = line_functions(objective, w, direction)
        found = scalar.strong_wolfe(
            phi, value, slope, initial_step, self.c1, self.c2, self.max_evaluations,
            aux=gradient,
        )
        return LineSearchResult(
            found.step, found.value, found.aux, found.evaluations, ~found.found
        )


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class MoreThuente(LineSearch):
    """Moré & Thuente's line search for the strong Wolfe conditions.

    An accepted step a satisfies, with phi(a) = E(w + a*d):

        phi(a) <= phi(0) + c1 * a * phi'(0)      (sufficient decrease)
        |phi'(a)| <= c2 * |phi'(0)|              (strong curvature)

    or the step is the largest allowed (1e10) and phi still falls there
    with sufficient decrease. The search fails when the interval of
    uncertainty shrinks to a relative width `xtol` (or to rounding) first,
    or the evaluations run out. Each trial comes from safeguarded cubic,
    quadratic and secant interpolation of phi and phi' at the ends of an
    interval that contains a step satisfying both conditions (Moré &
    Thuente's algorithm, MINPACK-2's `dcsrch`); while phi has not turned
    up, the search follows the
    auxiliary psi(a) = phi(a) - phi(0) - c1 a phi'(0) instead of phi, and
    while nothing is bracketed the trial is extrapolated to
    [a + 1.1 (a - a_best), a + 4 (a - a_best)]. Steps lie in [0, 1e10].
    This is the search SciPy's `L-BFGS-B` runs (with these defaults and
    `maxls=20`) and `scipy.optimize.line_search_wolfe1` (which SciPy's
    `BFGS` and `CG` use with c1 = 1e-4, xtol = 1e-14); given the same
    phi it takes the same trial steps.

    Args:
        c1: sufficient-decrease constant, 0 < c1 < 1 (MINPACK's `ftol`).
        c2: curvature constant, c1 < c2 < 1 (`gtol`).
        xtol: relative width of the interval of uncertainty at which the
            search stops, >= 0.
        max_evaluations: the most `value_and_gradient` calls one search
            makes; the search fails when they run out.

    References:
        Moré, J. J. & Thuente, D. J. (1994). Line search algorithms with
        guaranteed sufficient decrease. ACM Transactions on Mathematical
        Software 20(3), 286-307.
        Byrd, R. H., Lu, P., Nocedal, J. & Zhu, C. (1995). A limited memory
        algorithm for bound constrained optimization. SIAM J. Scientific
        Computing 16(5) (L-BFGS-B, which calls this search).

    Note: a trial whose loss or gradient is not finite is not part of the
    interpolation: the next trial is halfway between the best step and it,
    and no later trial goes beyond it. A search that stops on the `xtol`
    or rounding test fails, as in SciPy's `line_search_wolfe1` (L-BFGS-B
    accepts that step instead): the solver then retries along -g and stops
    training if that fails too, rather than take a step that may not lower
    E (a float32 model's rounded loss otherwise keeps accepting steps of
    1e-9 that do not move it).

    Example:

    E(w) = |w|^2 along -g: phi(a) = E(w) (1 - 2a)^2. a = 1 gives E(w) again,
    above phi(0) + c1 a phi'(0), so the second trial minimizes the parabola
    psi(a) = phi(a) - c1 a phi'(0): a = (1 - c1) / 2, which is accepted.

    >>> from keras_gdzoo.solvers import FunctionObjective
    >>> objective = FunctionObjective(
    ...     lambda w: tf.reduce_sum(w**2), size=2, dtype="float64")
    >>> w = tf.constant([1.0, -2.0], tf.float64)
    >>> value, g = objective.value_and_gradient(w)
    >>> result = MoreThuente().search(objective, w, -g, value, g, initial_step=1.0)
    >>> round(float(result.step), 12), int(result.evaluations), bool(result.failed)
    (0.4995, 2, False)
    """

    def __init__(self, c1=1e-3, c2=0.9, xtol=0.1, max_evaluations=20):
        super().__init__(max_evaluations)
        self.c1 = _constant("c1", c1)
        self.c2 = validation.open_interval(
            "c2", c2, self.c1, 1.0, low_name=f"c1={self.c1:g}", high_name="1"
        )
        self.xtol = validation.non_negative("xtol", xtol)

    config_names = ("c1", "c2", "xtol", "max_evaluations")

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        _, phi = line_functions(objective, w, direction)
        found = more_thuente.more_thuente(
            phi, value, slope, initial_step, self.c1, self.c2, self.xtol,
            self.max_evaluations, aux=gradient,
        )
        return LineSearchResult(
            found.step, found.value, found.aux, found.evaluations, ~found.found
        )


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

    minimum_evaluations = 2
    minimum_reason = "one trial and the gradient at the accepted step"

    def __init__(self, c1=1e-4, shrink=0.5, max_evaluations=30):
        super().__init__(max_evaluations)
        self.c1 = _constant("c1", c1)
        self.shrink = _constant("shrink", shrink)

    config_names = ("c1", "shrink", "max_evaluations")

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        phi, _ = line_functions(objective, w, direction)
        # One evaluation is left for g at the accepted step.
        budget = self.max_evaluations - 1
        found = scalar.backtracking(
            phi, value, slope, initial_step, self.c1, self.shrink, budget
        )
        return with_gradient(objective, w, direction, value, gradient, found)


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

    minimum_evaluations = 3
    minimum_reason = "two trials and the gradient at the accepted step"

    def __init__(self, tolerance=1e-8, max_evaluations=40):
        super().__init__(max_evaluations)
        self.tolerance = validation.positive("tolerance", tolerance)

    config_names = ("tolerance", "max_evaluations")

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        phi, _ = line_functions(objective, w, direction)
        # One evaluation is left for g at the accepted step.
        budget = self.max_evaluations - 1
        found = brent.exact(phi, value, slope, initial_step, self.tolerance, budget)
        return with_gradient(objective, w, direction, value, gradient, found)
