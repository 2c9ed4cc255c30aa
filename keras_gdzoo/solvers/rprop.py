"""RProp (resilient propagation): per-weight steps driven by gradient signs."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver
from keras_gdzoo.solvers.base import reuses_evaluations

VARIANTS = ("rprop+", "rprop-", "irprop+", "irprop-")


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Rprop(Solver):
    """Resilient propagation in Igel & Huesken's four variants.

    Every weight w_j has its own step size Delta_j, adapted by the sign of
    the product of its last two partial derivatives, never by their size
    (Riedmiller & Braun, 1993; lecture, "RProp"):

        Delta_j(tau) = min(eta_plus  * Delta_j(tau-1), max_step)  if g_j(tau-1) g_j(tau) > 0
                       max(eta_minus * Delta_j(tau-1), min_step)  if g_j(tau-1) g_j(tau) < 0
                       Delta_j(tau-1)                             otherwise
        w_j(tau+1) = w_j(tau) - sgn(g_j(tau)) * Delta_j(tau)

    with g_j(tau) = dE(w(tau))/dw_j, `eta_plus` = eta^+, `eta_minus` =
    eta^-, `min_step` = Delta_min, `max_step` = Delta_max and
    `initial_step` = Delta_0 = Delta_j(0). The variants (`variant`) differ
    only for a weight whose derivative changed sign (g_j(tau-1) g_j(tau) < 0),
    following Igel & Huesken (2000; 2003), where Dw_j(tau-1) is the last
    change of w_j:

    * `"rprop+"`: weight backtracking, w_j(tau+1) = w_j(tau) - Dw_j(tau-1),
      then g_j(tau) := 0 is stored;
    * `"rprop-"`: the plain update above, no backtracking;
    * `"irprop+"`: backtracking only when the error rose,
      E(tau) > E(tau-1); otherwise w_j stays; g_j(tau) := 0 is stored;
    * `"irprop-"`: g_j(tau) := 0, so w_j stays and the next step does not
      adapt Delta_j (the update of `torch.optim.Rprop`).

    Storing g_j(tau) := 0 puts the next iteration in the "otherwise" case.
    Each iteration evaluates E and g once (logged as `evaluations`). Logs:
    `step_size_mean` (mean Delta_j after the update), `sign_changes`
    (how many weights had g_j(tau-1) g_j(tau) < 0), `backtracked` (how
    many weights were moved back), `nonfinite` (1 when the step was
    rejected, see below), `evaluations` and `stop_training`.

    Args:
        variant: `"rprop+"`, `"rprop-"`, `"irprop+"` or `"irprop-"`.
        eta_minus: eta^-, step decrease factor after a sign change,
            0 < eta_minus < 1.
        eta_plus: eta^+, step increase factor while the sign is kept, > 1.
        initial_step: Delta_0, the step size every weight starts with.
        min_step: Delta_min, 0 < min_step <= initial_step.
        max_step: Delta_max, max_step >= initial_step.
        name: name of the solver.
        **kwargs: the `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `use_ema`, ...) are refused by name: a solver cannot honour them.

    Example:

    >>> import keras_gdzoo as gz, tensorflow as tf
    >>> rosen = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
    >>> w, history = gz.Rprop().minimize(rosen, tf.constant([-1.2, 1.0], "float64"), 200)

    or, on a Keras model, in batch mode (one fit batch = one iteration):

    >>> trainer = gz.wrap(model)
    >>> trainer.compile(optimizer=gz.Rprop(variant="irprop+"), loss="mse")
    >>> history = trainer.fit(x, y, batch_size=len(x), epochs=2, verbose=0)

    Note:
        The lecture gives the Riedmiller & Braun step-size rule; the four
        variants are Igel & Huesken's. Signs are compared as
        sgn(g_j(tau-1)) sgn(g_j(tau)), so the product cannot underflow to
        0. Where the papers leave Dw_j(tau) undefined (a backtracked or
        held weight), the change actually applied is stored; the algorithm
        never reads it there. Not in the papers: if E(w) or its gradient
        is not finite, the previous step is undone (w -= Dw(tau-1)); if the
        proposed weights are not finite, w is kept. Either way all
        Delta_j shrink by eta_minus (not below min_step), the stored g and
        Dw are reset to 0 and `nonfinite` is logged; training stops when a
        non-finite loss leaves no step to undo. A step is only seen to
        make E non-finite at the next iteration's evaluation, so the
        weights after the very last step can have a non-finite loss.
        Before the first evaluation the stored previous loss is 0: it is
        only compared for a weight whose stored derivative is non-zero,
        which is set together with it. In mini-batch mode E(tau-1) and
        g(tau-1) come from the previous batch (the lecture: Rprop is meant
        for batch training).

    References:
        Riedmiller, M., Braun, H. (1993). A direct adaptive method for
        faster backpropagation learning: the RPROP algorithm. IEEE ICNN,
        586-591.
        Igel, C., Huesken, M. (2000). Improving the Rprop learning
        algorithm. NC 2000, 115-121 (the four algorithm boxes).
        Igel, C., Huesken, M. (2003). Empirical evaluation of the improved
        Rprop learning algorithms. Neurocomputing 50, 105-123.
    """

    stop_message = (
        "the loss or its gradient is not finite at the current weights and "
        "there is no step left to undo"
    )

    def __init__(
        self,
        variant="irprop+",
        eta_minus=0.5,
        eta_plus=1.2,
        initial_step=0.1,
        min_step=1e-6,
        max_step=50.0,
        name=None,
        **kwargs,
    ):
        normalized = variant.lower() if isinstance(variant, str) else variant
        if normalized not in VARIANTS:
            raise ValueError(
                "Argument `variant` must be one of "
                f"{', '.join(repr(v) for v in VARIANTS)}. "
                f"Received: variant={variant!r}"
            )
        eta_minus = _finite_number("eta_minus", eta_minus)
        eta_plus = _finite_number("eta_plus", eta_plus)
        initial_step = _finite_number("initial_step", initial_step)
        min_step = _finite_number("min_step", min_step)
        max_step = _finite_number("max_step", max_step)
        if not 0 < eta_minus < 1:
            raise ValueError(
                f"Argument `eta_minus` must be in (0, 1). Received: eta_minus={eta_minus}"
            )
        if not eta_plus > 1:
            raise ValueError(f"Argument `eta_plus` must be > 1. Received: eta_plus={eta_plus}")
        if not min_step > 0:
            raise ValueError(f"Argument `min_step` must be > 0. Received: min_step={min_step}")
        if not initial_step >= min_step:
            raise ValueError(
                f"Argument `initial_step` must be >= min_step ({min_step}). "
                f"Received: initial_step={initial_step}"
            )
        if not max_step >= initial_step:
            raise ValueError(
                f"Argument `max_step` must be >= initial_step ({initial_step}). "
                f"Received: max_step={max_step}"
            )
        super().__init__(name=name, **kwargs)
        self.variant = normalized
        self.eta_minus = eta_minus
        self.eta_plus = eta_plus
        self.initial_step = initial_step
        self.min_step = min_step
        self.max_step = max_step

    def state_spec(self, size, dtype):
        # A NumPy float64, so that a float64 state starts at exactly
        # initial_step (tf.cast of a Python float goes through float32).
        return {
            "step_size": ([size], np.float64(self.initial_step)),
            "previous_gradient": ([size], 0.0),
            "previous_update": ([size], 0.0),
            "previous_loss": ([], 0.0),
            # E and g at the weights the last step moved to: the step
            # evaluates there anyway (a step whose loss is not finite is
            # undone), and on a stationary objective the next step starts
            # from them instead of evaluating again.
            "point_value": ([], 0.0),
            "point_gradient": ([size], 0.0),
            "point_known": ([], 0.0),
        }

    def step(self, w, state, objective):
        dtype = w.dtype
        eta_minus = tf.constant(self.eta_minus, dtype)
        eta_plus = tf.constant(self.eta_plus, dtype)
        min_step = tf.constant(self.min_step, dtype)
        max_step = tf.constant(self.max_step, dtype)
        step_size = state["step_size"]
        previous_gradient = state["previous_gradient"]
        previous_update = state["previous_update"]
        previous_loss = state["previous_loss"]

        stationary = reuses_evaluations(objective)

        def evaluate(at):
            value, slope = objective.value_and_gradient(at)
            return tf.cast(value, dtype), tf.reshape(tf.cast(slope, dtype), [-1])

        if stationary:
            known = state["point_known"] > 0
            loss, gradient = tf.cond(
                known,
                lambda: (state["point_value"], state["point_gradient"]),
                lambda: evaluate(w),
            )
        else:
            loss, gradient = evaluate(w)
        finite = tf.math.is_finite(loss) & tf.reduce_all(tf.math.is_finite(gradient))

        agreement = tf.sign(previous_gradient) * tf.sign(gradient)
        same_sign = agreement > 0
        sign_change = agreement < 0
        new_step_size = tf.where(
            same_sign,
            tf.minimum(step_size * eta_plus, max_step),
            tf.where(sign_change, tf.maximum(step_size * eta_minus, min_step), step_size),
        )
        if self.variant == "rprop-":
            stored_gradient = gradient
        else:
            stored_gradient = tf.where(sign_change, tf.zeros_like(gradient), gradient)
        # A zeroed derivative gives sgn = 0: that weight is held in place.
        update = -tf.sign(stored_gradient) * new_step_size
        if self.variant == "rprop+":
            backtrack = sign_change
        elif self.variant == "irprop+":
            backtrack = sign_change & (loss > previous_loss)
        else:
            backtrack = tf.zeros_like(sign_change)
        update = tf.where(backtrack, -previous_update, update)
        proposed = w + update
        # The proposed point is evaluated before it is kept, so fit never
        # ends on weights whose loss is not finite.
        if stationary:
            proposed_loss, proposed_gradient = evaluate(proposed)
        else:
            proposed_loss = tf.cast(objective.value(proposed), dtype)
            proposed_gradient = tf.zeros_like(gradient)
        accepted = (
            finite
            & tf.reduce_all(tf.math.is_finite(proposed))
            & tf.math.is_finite(proposed_loss)
        )

        # Rejected: go back to the last point (whose loss was finite) when
        # this one is not finite, else stay; shrink every step; forget g, Dw.
        retreat = w - previous_update
        retreat = tf.where(tf.reduce_all(tf.math.is_finite(retreat)), retreat, w)
        rejected_w = tf.where(finite, w, retreat)
        zeros = tf.zeros_like(gradient)
        w_new = tf.where(accepted, proposed, rejected_w)
        state_new = {
            "step_size": tf.where(
                accepted, new_step_size, tf.maximum(step_size * eta_minus, min_step)
            ),
            "previous_gradient": tf.where(accepted, stored_gradient, zeros),
            "previous_update": tf.where(accepted, update, zeros),
            "previous_loss": tf.where(finite, loss, previous_loss),
            "point_value": tf.where(accepted, proposed_loss, loss),
            "point_gradient": tf.where(accepted, proposed_gradient, gradient),
            "point_known": tf.cast(
                stationary & (accepted | (finite & tf.reduce_all(tf.equal(w_new, w)))), dtype
            ),
        }
        nothing_to_undo = tf.reduce_all(tf.equal(previous_update, 0))

        def count(mask):
            return tf.reduce_sum(tf.cast(mask & accepted, dtype))

        logs = {
            "step_size_mean": tf.reduce_mean(state_new["step_size"]),
            "sign_changes": count(sign_change),
            "backtracked": count(backtrack),
            "nonfinite": tf.cast(tf.logical_not(accepted), dtype),
            # The start (unless kept from the last step) and the proposal.
            "evaluations": (
                tf.where(known, tf.constant(1.0, dtype), tf.constant(2.0, dtype))
                if stationary
                else tf.constant(2.0, dtype)
            ),
            STOP: tf.cast(tf.logical_not(finite) & nothing_to_undo, dtype),
        }
        return w_new, state_new, logs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "variant": self.variant,
                "eta_minus": self.eta_minus,
                "eta_plus": self.eta_plus,
                "initial_step": self.initial_step,
                "min_step": self.min_step,
                "max_step": self.max_step,
            }
        )
        return config


def _finite_number(name, value):
    """`value` as a float; a ValueError naming `name` unless finite."""
    number = None
    if not isinstance(value, (bool, str)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            pass
    if number is None or not math.isfinite(number):
        raise ValueError(
            f"Argument `{name}` must be a finite number. Received: {name}={value!r}"
        )
    return number
