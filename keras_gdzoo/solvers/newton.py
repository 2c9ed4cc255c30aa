"""Newton's method with the exact Hessian."""

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo import matrix_free
from keras_gdzoo import validation
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver
from keras_gdzoo.solvers.base import dense_matrix_guard

# Increases of the damping tried before giving up. From 1e-8 * ||H||_F, eight
# factors of 10 exceed ||H||_F, beyond which H + damping I is positive
# definite whatever H's eigenvalues; the further ones shorten the step to
# about ||g|| / (1e12 ||H||_F), short enough to lower any smooth loss whose
# curvature near w is not many orders beyond the one measured at w.
_MAX_INCREASES = 20


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Newton(Solver):
    """Newton's method (Newton-Raphson) with the exact Hessian.

    From the quadratic model E(w + eps) ~ E(w) + g'eps + 1/2 eps'H eps, with
    g = dE/dw and H the Hessian of the batch loss E, one iteration is

        w(tau+1) = w(tau) - (H(w(tau)) + mu I)^-1 g(w(tau)),

    mu = `damping` (0: the lecture's pure Newton step). A step is taken only
    when it lowers E. When H + mu I is not positive definite (its Cholesky
    factorization fails) or the step does not lower E (or gives a
    non-finite E), the damping is raised, as Levenberg-Marquardt raises it:
    mu_1 = max(10 mu, 1e-8 ||H||_F), then x10, until a step lowers E, at
    most 20 times. Positive definiteness makes the step a descent direction;
    a larger damping shortens it towards the gradient step -g / mu, which
    lowers any smooth E once it is short enough. The damping used is reported as
    `damping` in the logs; it does not carry over to the next iteration.

    Args:
        damping: mu >= 0, added to the Hessian's diagonal at every iteration.
        linear_solver: how (H + mu I) delta = g is solved. `"cholesky"`: the
            dense m x m Hessian (m backward passes) and its Cholesky factor.
            `"cg"`: truncated Newton (Newton-CG): conjugate gradients on
            Hessian-vector products (`keras_gdzoo.matrix_free`), never an
            m x m matrix, memory O(m) plus the batch's activations.
            `"auto"` (default): `"cholesky"` when m <= 2000, else `"cg"`. At
            m = 2000 the dense Hessian costs 2000 backward passes, about as
            much as 100 CG iterations of one Hessian-vector product (two to
            three backward passes) each, and 32 MB; beyond, its cost (m
            passes, m^2 memory) grows faster than CG's.
        cg_max_iterations: most Hessian-vector products per CG solve, an
            integer >= 1 (`"cg"` only).
        cg_tolerance: CG stops once ||r|| <= cg_tolerance * ||g||, the
            relative residual, in (0, 1) (`"cg"` only).
        name: optimizer name.
        **kwargs: the `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `use_ema`, ...) are refused by name: a solver cannot honour them.

    Logs: `damping` (the mu of the step taken, or the last one tried),
    `accepted` (1.0 when the step was taken), and with CG `cg_iterations`
    (Hessian-vector products of all CG solves in the iteration).

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.Newton(), loss="mse")
    >>> history = trainer.fit(x, y, batch_size=len(x), epochs=2, verbose=0)

    Note:
        * The dense Hessian costs m backward passes per chunk of examples
          and m^2 numbers; with `"cholesky"`, models whose m x m matrices
          would not fit are refused before anything is allocated.
        * With CG, the role of the failed Cholesky factorization is taken
          by the descent test: CG stops at the first direction of
          non-positive curvature (Nocedal & Wright's Algorithm 7.1) and its
          last iterate delta is used when g'delta > 0; otherwise (negative
          curvature at the first direction) the damping is raised as above.
          The floor 1e-8 ||H||_F uses Hutchinson's estimate ||H v|| of
          ||H||_F (one Hessian-vector product, v a fixed Rademacher
          vector). On a positive definite H + mu I the iterates equal the
          dense path's to the CG tolerance; on an indefinite one the dense
          path raises mu where CG may take a truncated step. Each CG solve
          starts from the previous solution (warm start, Martens 2010),
          kept in the solver's state.
        * When no damping tried gives a step that lowers E (at a minimum,
          where every step rounds to no decrease; or a non-finite loss or
          Hessian), the weights stay where they were and training stops
          (`stop_training`), as a repeated identical iteration could not do
          better. E at w and at the trial point are computed the same way
          (`objective.value`, the compiled loss), so a null step never
          counts as a decrease.

    References:
        Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
        Section 3.4, Algorithm 3.3 (Cholesky with added multiple of the
        identity), p. 51; Algorithm 7.1 (line-search Newton-CG), p. 169.
        Martens, J. (2010). Deep learning via Hessian-free optimization.
        ICML.
    """

    stop_message = (
        "no damped Newton step lowers the loss (a minimum, or a non-finite "
        "loss or Hessian)"
    )

    def __init__(
        self,
        damping=0.0,
        linear_solver="auto",
        cg_max_iterations=100,
        cg_tolerance=1e-4,
        name=None,
        **kwargs,
    ):
        damping = validation.non_negative("damping", damping)
        linear_solver = validation.choice("linear_solver", linear_solver, LINEAR_SOLVERS)
        cg_max_iterations = validation.integer("cg_max_iterations", cg_max_iterations, minimum=1)
        cg_tolerance = validation.open_unit("cg_tolerance", cg_tolerance)
        refuse_unused_cg_arguments(
            type(self).__name__, linear_solver, cg_max_iterations, cg_tolerance, 100, 1e-4
        )
        super().__init__(name=name, **kwargs)
        self.damping = damping
        self.linear_solver = linear_solver
        self.cg_max_iterations = cg_max_iterations
        self.cg_tolerance = cg_tolerance

    def get_config(self):
        config = super().get_config()
        config.update(
            damping=self.damping,
            linear_solver=self.linear_solver,
            cg_max_iterations=self.cg_max_iterations,
            cg_tolerance=self.cg_tolerance,
        )
        return config

    def uses_cg(self, size):
        """Whether the step solves by CG for a model of m = `size` weights."""
        return resolve_linear_solver(self.linear_solver, size) == "cg"

    def state_spec(self, size, dtype):
        if self.uses_cg(size):
            # The last CG solution, CG's starting point at the next iteration.
            return {"cg_solution": ([size], 0.0)}
        return {}

    def check_size(self, size, dtype):
        if self.uses_cg(size):
            return
        # The matrix, and the damped copy and its Cholesky factor, which are
        # float64 (two float32-sized matrices each) for narrower dtypes.
        copies = 1 + 2 * max(1, 8 // tf.as_dtype(dtype).size)
        dense_matrix_guard("Newton", size, dtype, copies=copies)

    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        if self.uses_cg(int(w.shape[0])):
            return self._cg_step(w, state, objective)
        dtype = w.dtype
        value = tf.cast(objective.value(w), dtype)
        _, gradient, hessian = objective.hessian(w)
        hessian = curvature.symmetrize(tf.cast(hessian, dtype))
        gradient = tf.cast(gradient, dtype)
        norm = tf.norm(hessian)
        floor = lambda: 1e-8 * tf.where(norm > 0, norm, tf.ones_like(norm))  # noqa: E731

        def solve(damping, guess):
            delta, solved = curvature.damped_solve(hessian, gradient, damping)
            return delta, solved, tf.constant(0)

        new_w, damping, accepted, _, _ = _damped_newton_step(
            w, value, solve, objective, tf.constant(self.damping, dtype), floor, w
        )
        logs = {
            "damping": damping,
            "accepted": tf.cast(accepted, dtype),
            STOP: tf.cast(~accepted, dtype),
        }
        return new_w, state, logs

    def _cg_step(self, w, state, objective):
        dtype = w.dtype
        value = tf.cast(objective.value(w), dtype)
        system = matrix_free.MatrixFreeSystem(
            objective,
            w,
            curvature="hessian",
            tolerance=self.cg_tolerance,
            max_iterations=self.cg_max_iterations,
        )
        gradient = system.gradient

        def floor():
            # Hutchinson: E ||H v||^2 = ||H||_F^2 for Rademacher v.
            norm = tf.sqrt(tf.maximum(system.frobenius_estimate(), 0.0))
            return 1e-8 * tf.where(norm > 0, norm, tf.ones_like(norm))

        def solve(damping, guess):
            delta, iterations, _ = system.solve_from(damping, guess)
            # The truncated iterate (CG stopped at the tolerance, the cap or
            # a direction of negative curvature) is usable when it is a
            # descent direction for the step -delta.
            solved = tf.reduce_all(tf.math.is_finite(delta)) & (
                tf.tensordot(gradient, delta, 1) > 0
            )
            return delta, solved, iterations

        guess = tf.cast(state["cg_solution"], dtype)
        new_w, damping, accepted, delta, iterations = _damped_newton_step(
            w, value, solve, objective, tf.constant(self.damping, dtype), floor, guess
        )
        finite = tf.reduce_all(tf.math.is_finite(delta))
        logs = {
            "damping": damping,
            "accepted": tf.cast(accepted, dtype),
            "cg_iterations": tf.cast(iterations, dtype),
            STOP: tf.cast(~accepted, dtype),
        }
        solution = tf.where(accepted & finite, delta, guess)
        return new_w, {"cg_solution": tf.cast(solution, state["cg_solution"].dtype)}, logs


#: The values of `linear_solver` (shared with Levenberg-Marquardt).
LINEAR_SOLVERS = ("auto", "cholesky", "cg")

#: With `linear_solver="auto"`, the largest m solved densely.
AUTO_DENSE_LIMIT = 2000


def resolve_linear_solver(linear_solver, size):
    """`"cholesky"` or `"cg"`: what `linear_solver` means for m = `size`."""
    if linear_solver == "auto":
        return "cholesky" if size <= AUTO_DENSE_LIMIT else "cg"
    return linear_solver


def _damped_newton_step(w, value, solve, objective, damping, floor, guess):
    """Raise the damping until a step lowers E.

    `solve(damping, guess)` returns `(delta, solved, iterations)`; the trial
    point is w - delta, and each solve's delta is the next one's guess. The
    first try uses `damping`, each later one max(10 mu, floor()).

    Returns `(w_new, damping, accepted, delta, iterations)`: delta is the
    last solve's, iterations their sum.
    """
    dtype = w.dtype

    def attempt(damping, guess):
        delta, solved, iterations = solve(damping, guess)
        trial = w - delta
        trial_value = tf.cond(
            solved,
            lambda: tf.cast(objective.value(trial), dtype),
            lambda: tf.constant(float("nan"), dtype),
        )
        lowered = solved & tf.math.is_finite(trial_value) & (trial_value < value)
        return lowered, trial, delta, iterations

    def rejected(increases, damping, accepted, trial, delta, iterations):
        return ~accepted

    def raise_damping(increases, damping, accepted, trial, delta, iterations):
        damping = tf.maximum(10.0 * damping, floor())
        guess = tf.where(tf.reduce_all(tf.math.is_finite(delta)), delta, tf.zeros_like(delta))
        accepted, trial, delta, more = attempt(damping, guess)
        return increases + 1, damping, accepted, trial, delta, iterations + more

    accepted, trial, delta, iterations = attempt(damping, guess)
    _, damping, accepted, trial, delta, iterations = tf.while_loop(
        rejected,
        raise_damping,
        (tf.constant(0), damping, accepted, trial, delta, iterations),
        maximum_iterations=_MAX_INCREASES,
    )
    return tf.where(accepted, trial, w), damping, accepted, delta, iterations


def refuse_unused_cg_arguments(solver, linear_solver, max_iterations, tolerance, *defaults):
    """With `linear_solver="cholesky"` no CG runs: refuse CG settings given."""
    if linear_solver == "cholesky" and (max_iterations, tolerance) != tuple(defaults):
        raise ValueError(
            f"Arguments `cg_max_iterations` and `cg_tolerance` are not used by {solver} "
            "with linear_solver='cholesky'. Received: "
            f"cg_max_iterations={max_iterations}, cg_tolerance={tolerance}"
        )
