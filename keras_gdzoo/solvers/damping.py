"""Damping rules of Levenberg-Marquardt: how mu moves after a trial step.

`LevenbergMarquardt` solves (A + mu D) delta = g for a trial step
w - delta (A = J'J/n, g = J'e/n; D = I, or a diagonal scaling, see
`scaled`) and asks its rule what to do with mu once it knows whether the
step lowered the loss:

* `accepted(mu, state, ratio)` after a step that lowered the loss, with
  `ratio` = rho = actual reduction / predicted reduction (the gain ratio);
* `rejected(mu, state)` after one that did not;
* `predicted_reduction(delta, gradient, mu, diagonal)`: the fall of the
  Gauss-Newton model, L(0) - L(-delta) = 1/2 delta'(g + mu D delta).

A trust-region rule (`trust_region = True`, `TrustRegionDamping`) controls
a radius instead and solves mu from it (`solve`, then `update` after the
trial step), as MINPACK.

A rule is a small object with no variables of its own: the extra numbers it
carries from one iteration to the next (Nielsen's nu, the trust radius) are
declared by `state_spec` and kept by the solver in optimizer variables, so a `.keras`
file resumes exactly. A new rule is a new subclass.

Scaling (`scaled=True`): D is a diagonal matrix, the running maximum of
diag(J'J) over the iterations (an entry that was never positive counts as
1), as MINPACK's `lmder` with `mode=1` (Moré, 1978): the damping then acts
on every weight relative to its own curvature, so weights of very different
scales (1e-5 next to 1e4) are damped alike, and mu is dimensionless.
"""

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo import validation


class DampingRule:
    """Base class: how mu changes after an accepted or a rejected step.

    Attributes:
        scaled: damping term mu D with D from the running maximum of
            diag(J'J) (True) or mu I (False).
    """

    scaled = False
    #: True for a rule that controls a trust radius (`TrustRegionDamping`).
    trust_region = False

    def state_spec(self):
        """Dict name -> initial value of the scalars the rule carries."""
        return {}

    def accepted(self, damping, state, ratio):
        """(mu, state) after a step that lowered the loss; `ratio` is rho."""
        raise NotImplementedError

    def rejected(self, damping, state):
        """(mu, state) after a step that did not lower the loss."""
        raise NotImplementedError

    @staticmethod
    def predicted_reduction(delta, gradient, damping, diagonal=None):
        """L(0) - L(-delta) of the Gauss-Newton model for the step -delta.

        With (A + mu D) delta = g, L(0) - L(-delta) = g'delta -
        1/2 delta'A delta = 1/2 delta'(g + mu D delta); `diagonal` is D's
        diagonal (None: D = I).
        """
        damped = delta if diagonal is None else diagonal * delta
        return 0.5 * tf.reduce_sum(delta * (gradient + damping * damped))

    def get_config(self):
        return {"scaled": self.scaled}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class LectureDamping(DampingRule):
    """The lecture's rule: mu *= `decrease` after a step that lowers E,
    mu *= `increase` after one that does not.

    With `scaled=True` this is Marquardt's (1963) own scheme: the same
    factors on a damping term scaled by the curvature's diagonal.

    Args:
        decrease: factor after an accepted step, in (0, 1).
        increase: factor after a rejected step, > 1.
        scaled: mu D (True) or mu I (False, the lecture).
    """

    def __init__(self, decrease=0.1, increase=10.0, scaled=False):
        self.decrease = validation.open_unit("damping_decrease", decrease)
        self.increase = validation.greater_than("damping_increase", increase, 1)
        self.scaled = validation.boolean("scaled", scaled)

    def accepted(self, damping, state, ratio):
        return damping * self.decrease, state

    def rejected(self, damping, state):
        return damping * self.increase, state

    def get_config(self):
        return {"decrease": self.decrease, "increase": self.increase, "scaled": self.scaled}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class GainRatioDamping(DampingRule):
    """Nielsen's (1999) gain-ratio rule.

    With rho = (E(w) - E(w - delta)) / (L(0) - L(-delta)), the actual over
    the predicted reduction:

        accepted:  mu *= max(1/3, 1 - (2 rho - 1)^3),  nu = 2
        rejected:  mu *= nu,  nu *= 2

    A step the model predicted well (rho near 1) cuts mu by three, a poor
    one (rho near 0) leaves it nearly unchanged, and repeated rejections
    raise it ever faster (2, 4, 8...), so mu does not oscillate between two
    values as the x10/÷10 rule does.

    Args:
        scaled: mu D with D the running maximum of diag(J'J) (True,
            Moré's scaling) or mu I (False).

    References:
        Nielsen, H. B. (1999). Damping parameter in Marquardt's method.
        Technical report IMM-REP-1999-05, Technical University of Denmark.
        Madsen, K., Nielsen, H. B. & Tingleff, O. (2004). Methods for
        non-linear least squares problems, 2nd ed., Algorithm 3.16, p. 27.
    """

    def __init__(self, scaled=True):
        self.scaled = validation.boolean("scaled", scaled)

    def state_spec(self):
        return {"damping_factor": 2.0}

    def accepted(self, damping, state, ratio):
        ratio = tf.cast(ratio, damping.dtype)
        factor = tf.maximum(1.0 - (2.0 * ratio - 1.0) ** 3, 1.0 / 3.0)
        return damping * factor, {"damping_factor": tf.constant(2.0, damping.dtype)}

    def rejected(self, damping, state):
        nu = tf.cast(state["damping_factor"], damping.dtype)
        # nu doubles per rejection; capped where it would overflow.
        return damping * nu, {"damping_factor": tf.minimum(2.0 * nu, 2.0**60)}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class TrustRegionDamping(DampingRule):
    """MINPACK's step control (Moré, 1978): mu solved from a trust radius.

    The controlled quantity is the radius Delta, not mu. Each trial step
    solves

        min ||J p + e||  subject to  ||S p|| <= Delta,

    with S = I (`scaled=False`, MINPACK's `mode=2` with unit `diag`) or
    S = diag(d)^(1/2), d the running maximum of diag(A) (`scaled=True`,
    MINPACK's `mode=1`: S holds the running maximum of J's column norms).
    The solution is p = -(A + mu S^2)^-1 g, with mu = 0 when the
    Gauss-Newton step lies within 1.1 Delta, otherwise the mu > 0 of the
    secular equation phi(mu) = ||S p(mu)|| - Delta = 0 to |phi| <= 0.1
    Delta, by Moré's safeguarded Newton iteration on 1/||S p(mu)|| -
    1/Delta (MINPACK's `lmpar`: bounds l, u = ||S^-1 g|| / Delta, at most
    10 iterations, from the previous mu). After the trial, with rho the
    gain ratio and ||S p|| the step's scaled length:

        rho <= 1/4:             Delta = t min(Delta, 10 ||S p||),  mu /= t
        rho >= 3/4 or mu = 0:   Delta = 2 ||S p||,                 mu /= 2

    where t = 1/2 when the loss fell, else the minimizer of the quadratic
    through the loss and its slope along the step, t = (d/2) / (d + a/2)
    with d = -g'p / (2E) (MINPACK's `dirder`) and a the actual relative
    reduction, kept in [0.1, 0.5] (0.1 when E grew more than a hundredfold
    or was not finite). A step is kept when rho >= 1e-4 (MINPACK's test).
    The first radius is `factor` ||S w0|| (`factor` itself when that is 0)
    and, until the first step is kept, at most the scaled length of the
    trial step; mu starts at 0.

    Args:
        factor: the first radius relative to ||S w0||, > 0 (MINPACK's
            `factor`, default 100).
        scaled: S from the running maximum of diag(A) (True) or S = I
            (False, the default: the more robust on the Moré-Garbow-Hillstrom
            problems, as MINPACK's own results there).

    Note:
        Each Newton iteration of the secular equation is one Cholesky solve
        of the scaled system (S^-1 A S^-1 + mu I) q = S^-1 g (or of the
        sample-space Gram matrix), where MINPACK updates a QR factorization
        of J; Cholesky keeps the accuracy of columns of very different
        sizes (an eigendecomposition of S^-1 A S^-1 would not). A singular
        Gauss-Newton matrix (no Gauss-Newton step) is handled as a step
        beyond the radius, and a factorization that fails for a small mu
        raises mu tenfold. Matrix-free (CG) solves cannot solve for mu and
        are refused.

    References:
        Moré, J. J. (1978). The Levenberg-Marquardt algorithm:
        implementation and theory. Lecture Notes in Mathematics 630,
        105-116 (sections 5-7).
        Moré, J. J., Garbow, B. S. & Hillstrom, K. E. (1980). User guide for
        MINPACK-1, ANL-80-74 (`lmder`, `lmpar`).
    """

    trust_region = True
    acceptance = 1e-4
    radius_tolerance = 0.1
    secular_iterations = 10

    def __init__(self, factor=100.0, scaled=False):
        self.factor = validation.positive("factor", factor)
        self.scaled = validation.boolean("scaled", scaled)

    def state_spec(self):
        # radius 0: not set yet (set from ||S w0|| at the first iteration);
        # first 1: no step kept yet (the radius is clipped to the step).
        return {"radius": 0.0, "first": 1.0}

    def initial_radius(self, radius, w_norm):
        """The radius of this iteration: `factor` ||S w0|| the first time."""
        start = tf.where(w_norm > 0, self.factor * w_norm, self.factor * tf.ones_like(w_norm))
        return tf.where(radius > 0, radius, start)

    def solve(self, system, radius, damping):
        """`(S p, mu)`: the scaled step and damping for the trust radius.

        `system.solve(mu)` gives q(mu) = (B + mu I)^-1 b (B = S^-1 A S^-1,
        b = S^-1 g), q'(B + mu I)^-1 q (so that d||q||/dmu = -q'(B + mu
        I)^-1 q / ||q||) and whether the factorization succeeded;
        `system.gradient_norm` is ||b||; `damping` is the previous mu, the
        iteration's start.
        """
        dtype = radius.dtype
        tiny = tf.constant(curvature.smallest_normal(dtype), dtype)
        zero = tf.zeros([], dtype)
        q0, slope0, full_rank = system.solve(zero)
        # A singular B (no Gauss-Newton step) counts as a step beyond any radius.
        gauss_newton = tf.where(full_rank, tf.norm(q0), tf.constant(float("inf"), dtype))
        excess = gauss_newton - radius
        inside = full_rank & (excess <= self.radius_tolerance * radius)
        # Bounds of Moré's iteration: l from the Newton step at 0 (full
        # rank only), u = ||b|| / Delta.
        safe = full_rank & (slope0 > 0) & ~inside
        lower = tf.where(
            safe,
            excess * tf.where(safe, gauss_newton, 1.0) ** 2
            / (radius * tf.where(safe, slope0, 1.0)),
            zero,
        )
        lower = tf.maximum(lower, 0.0)
        b_norm = tf.cast(system.gradient_norm, dtype)
        upper = b_norm / radius
        upper = tf.where(upper > 0, upper, tiny / tf.minimum(radius, 0.1))
        mu = tf.minimum(tf.maximum(tf.cast(damping, dtype), lower), upper)
        mu = tf.where(
            (mu > 0) | ~full_rank,
            mu,
            b_norm / tf.where(gauss_newton > 0, gauss_newton, tf.ones([], dtype)),
        )

        def keep_going(k, mu, q, kept_mu, lower, upper, previous, done):
            return ~done & (k < self.secular_iterations)

        def newton(k, mu, kept, kept_mu, lower, upper, previous, done):
            mu = tf.where(mu > 0, mu, tf.maximum(tiny, 1e-3 * upper))
            q, slope, ok = system.solve(mu)
            # The result is the last solve that succeeded.
            kept = tf.where(ok, q, kept)
            kept_mu = tf.where(ok, mu, kept_mu)
            norm = tf.norm(q)
            # A failed factorization: mu too small for B's round-off.
            gap = tf.where(ok, norm - radius, tf.constant(float("inf"), dtype))
            # Within 10%; or stalled below the radius (rank-deficient B);
            # or the last iteration.
            done = (
                (ok & (tf.abs(gap) <= self.radius_tolerance * radius))
                | (ok & (lower == 0) & (gap <= previous) & (previous < 0))
                | (k + 1 >= self.secular_iterations)
            )
            good = ok & (slope > 0)
            correction = tf.where(
                good, (gap / radius) * norm**2 / tf.where(good, slope, 1.0), 9.0 * mu
            )
            lower = tf.where(gap > 0, tf.maximum(lower, mu), lower)
            upper = tf.where(gap < 0, tf.minimum(upper, mu), upper)
            new_mu = tf.maximum(lower, mu + correction)
            return k + 1, tf.where(done, mu, new_mu), kept, kept_mu, lower, upper, gap, done

        _, _, q, mu, _, _, _, _ = tf.while_loop(
            keep_going,
            newton,
            (tf.constant(0), mu, tf.where(inside, q0, q0 * float("nan")), zero, lower, upper,
             excess, inside),
            maximum_iterations=self.secular_iterations,
        )
        return q, mu

    def update(self, radius, damping, ratio, step_norm, actual, directional, blew_up):
        """(Delta, mu) after a trial step of scaled length `step_norm`.

        `ratio` is rho, `actual` the actual relative reduction of E,
        `directional` d = -g'p / (2E) (MINPACK's `dirder`) and `blew_up`
        whether E grew more than a hundredfold or was not finite.
        """
        interpolated = 0.5 * directional / tf.where(
            directional + 0.5 * actual != 0, directional + 0.5 * actual, -tf.ones_like(actual)
        )
        factor = tf.where(actual >= 0, 0.5 * tf.ones_like(actual), interpolated)
        factor = tf.where(blew_up | ~(factor >= 0.1), 0.1 * tf.ones_like(factor), factor)
        factor = tf.minimum(factor, 0.5)
        shrink = ratio <= 0.25
        grow = ~shrink & ((damping <= 0) | (ratio >= 0.75))
        radius = tf.where(
            shrink,
            factor * tf.minimum(radius, step_norm / 0.1),
            tf.where(grow, 2.0 * step_norm, radius),
        )
        damping = tf.where(shrink, damping / factor, tf.where(grow, 0.5 * damping, damping))
        return radius, damping

    def accepted(self, damping, state, ratio):
        raise NotImplementedError("the trust-region rule updates by `update`")

    def rejected(self, damping, state):
        raise NotImplementedError("the trust-region rule updates by `update`")

    def get_config(self):
        return {"factor": self.factor, "scaled": self.scaled}


#: Names `LevenbergMarquardt(damping_rule=...)` accepts.
RULES = {
    "lecture": lambda: LectureDamping(scaled=False),
    "marquardt": lambda: LectureDamping(scaled=True),
    "gain-ratio": lambda: GainRatioDamping(scaled=False),
    "scaled-gain-ratio": lambda: GainRatioDamping(scaled=True),
    "trust-region": lambda: TrustRegionDamping(scaled=False),
    "scaled-trust-region": lambda: TrustRegionDamping(scaled=True),
}


def get(rule):
    """A `DampingRule` from a name in `RULES` or a rule object."""
    if isinstance(rule, DampingRule):
        return rule
    if isinstance(rule, str) and rule in RULES:
        return RULES[rule]()
    if isinstance(rule, dict):
        restored = keras.saving.deserialize_keras_object(rule)
        if isinstance(restored, DampingRule):
            return restored
    listed = ", ".join(f'"{name}"' for name in ("auto",) + tuple(RULES))
    raise ValueError(
        f"Argument `damping_rule` must be one of {listed} or a "
        f"keras_gdzoo.solvers.damping.DampingRule. Received: damping_rule={rule!r}"
    )
