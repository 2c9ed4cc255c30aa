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

A rule is a small object with no variables of its own: the extra numbers it
carries from one iteration to the next (Nielsen's nu) are declared by
`state_spec` and kept by the solver in optimizer variables, so a `.keras`
file resumes exactly. A new rule is a new subclass.

Scaling (`scaled=True`): D is a diagonal matrix, the running maximum of
diag(J'J) over the iterations (an entry that was never positive counts as
1), as MINPACK's `lmder` with `mode=1` (Moré, 1978): the damping then acts
on every weight relative to its own curvature, so weights of very different
scales (1e-5 next to 1e4) are damped alike, and mu is dimensionless.
"""

import keras
import tensorflow as tf

from keras_gdzoo import validation


class DampingRule:
    """Base class: how mu changes after an accepted or a rejected step.

    Attributes:
        scaled: damping term mu D with D from the running maximum of
            diag(J'J) (True) or mu I (False).
    """

    scaled = False

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


#: Names `LevenbergMarquardt(damping_rule=...)` accepts.
RULES = {
    "lecture": lambda: LectureDamping(scaled=False),
    "marquardt": lambda: LectureDamping(scaled=True),
    "gain-ratio": lambda: GainRatioDamping(scaled=False),
    "scaled-gain-ratio": lambda: GainRatioDamping(scaled=True),
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
    listed = ", ".join(f'"{name}"' for name in RULES)
    raise ValueError(
        f"Argument `damping_rule` must be one of {listed} or a "
        f"keras_gdzoo.solvers.damping.DampingRule. Received: damping_rule={rule!r}"
    )
